"""Training loops: SFT now; PRM and GRPO follow. Each is one top-to-bottom function over a
pydantic config, resumable from its last checkpoint."""
