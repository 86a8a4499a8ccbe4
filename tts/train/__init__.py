"""Training loops: SFT, PRM and GRPO. Each is one top-to-bottom function over a pydantic
config that holds only what it reads, resumable from its last checkpoint."""
