"""Speculative decoding in the native engine: tokens/s and acceptance, off and on, in one run.

    python benchmarks/speculative.py [--tokens 4] [--problems 8] [--repeats 3] [--threads N]

On the built-in model (a tiny Qwen2 trained on arithmetic, which writes one operation per step
and restates what is left of the expression), with problems of the synth:arith:4 eval set posed
as tts poses them, each run to its end (EOS, or 1,024 tokens):

  greedy_b1     the problems one at a time, greedy
  greedy_b8     the problems 8 at a time, greedy
  greedy_b32    the problems 32 at a time (4 copies of each), greedy: where the batch is large
  best_of_16    the problems one at a time, n=16 samples at temperature 1.0 (seeded); a sample
                drafts from its own text, the prompt and its 15 siblings

Two engines, one with speculation off and one with `speculative_tokens` = --tokens (and
`speculative_max_batch` above every workload's batch, so each is measured with speculation on);
after a warm-up, each workload runs --repeats times on each engine, alternating, and the fastest
run of each counts (other processes on the machine slow both alike). Both engines generate the
same tokens (greedy; seeded samples), which the script checks, so tokens/s compare like for like.

What a verifying step costs against a decode step decides where speculation pays: it pays while
the tokens a sequence gains per verifying step exceed that ratio. The script measures it
directly on the model runner (forward passes of `batch` sequences at context 256: 1 new token
each, or 1 + --tokens), for the built-in model and for a random-weight model of Qwen2.5-0.5B's
width cut to 4 layers (its 151,936-token LM head then dominates), at several batch sizes.

Prints two tables (tokens/s off and on, speedup, acceptance = kept / drafted draft tokens, tokens
per verifying step; the verify/decode cost ratios) and writes benchmarks/results/speculative.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import torch

from tts.data.synthetic import eval_set
from tts.engine import Completion, SamplingParams, load
from tts.engine.native.model_runner import ModelRunner, SeqChunk
from tts.models.builtin import resolve_model
from tts.models.tiny import build_tiny_model
from tts.prompts import build_prompt

SEED = 0
MAX_TOKENS = 1024
COST_CONTEXT = 256  # tokens each sequence holds when the verify/decode cost is measured
# Qwen2.5-0.5B's width: hidden 896, 14 query / 2 key-value heads, MLP 4864, vocab 151,936
WIDE_SHAPE = dict(
    hidden_size=896,
    num_heads=14,
    num_kv_heads=2,
    intermediate_size=4864,
    vocab_size=151936,
    num_layers=4,
)
OUT = Path(__file__).parent / "results" / "speculative.json"

Workload = Callable[..., Awaitable[list[Completion]]]


async def in_waves(backend, prompts: list[str], params: SamplingParams, batch: int):
    """`prompts` `batch` at a time, each wave awaited before the next starts."""
    done: list[Completion] = []
    for start in range(0, len(prompts), batch):
        wave = prompts[start : start + batch]
        results = await asyncio.gather(*(backend.generate(p, params) for p in wave))
        done += [c for completions in results for c in completions]
    return done


async def greedy_b1(backend, prompts: list[str]) -> list[Completion]:
    return await in_waves(backend, prompts, SamplingParams(temperature=0, max_tokens=MAX_TOKENS), 1)


async def greedy_b8(backend, prompts: list[str]) -> list[Completion]:
    return await in_waves(backend, prompts, SamplingParams(temperature=0, max_tokens=MAX_TOKENS), 8)


async def greedy_b32(backend, prompts: list[str]) -> list[Completion]:
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    return await in_waves(backend, prompts * 4, params, 32)


async def best_of_16(backend, prompts: list[str]) -> list[Completion]:
    params = SamplingParams(temperature=1.0, max_tokens=MAX_TOKENS, n=16, seed=SEED)
    return await in_waves(backend, prompts, params, 1)


WORKLOADS: dict[str, Workload] = {
    "greedy_b1": greedy_b1,
    "greedy_b8": greedy_b8,
    "greedy_b32": greedy_b32,
    "best_of_16": best_of_16,
}
SPECULATION_COUNTERS = ("speculative_steps", "drafted_tokens", "accepted_tokens")


def timed(work: Workload, backend, prompts: list[str]) -> tuple[float, list[Completion], dict]:
    """Seconds, completions, and the speculation counters this run added."""
    before = backend.stats()
    start = time.perf_counter()
    completions = asyncio.run(work(backend, prompts))
    seconds = time.perf_counter() - start
    after = backend.stats()
    return seconds, completions, {k: after[k] - before[k] for k in SPECULATION_COUNTERS}


def measure(work: Workload, engines: dict, prompts: list[str], repeats: int) -> dict:
    """Each engine's fastest of `repeats` alternating runs of `work`."""
    best: dict[str, tuple[float, list[Completion], dict]] = {}
    for _ in range(repeats):
        for name, backend in engines.items():
            run = timed(work, backend, prompts)
            if name not in best or run[0] < best[name][0]:
                best[name] = run
    (off_seconds, off, _), (on_seconds, on, counters) = best["off"], best["on"]
    generated = sum(len(c.token_ids) for c in off)
    steps = counters["speculative_steps"]
    return {
        "generated_tokens": generated,
        "same_tokens": [c.token_ids for c in off] == [c.token_ids for c in on],
        "off_seconds": off_seconds,
        "on_seconds": on_seconds,
        "off_tokens_per_second": generated / off_seconds,
        "on_tokens_per_second": generated / on_seconds,
        "speedup": off_seconds / on_seconds,
        **counters,
        "acceptance_rate": counters["accepted_tokens"] / max(counters["drafted_tokens"], 1),
        "tokens_per_step": 1 + counters["accepted_tokens"] / steps if steps else None,
    }


def verify_cost(folder: Path, args, batches: list[int]) -> dict[int, dict[str, float]]:
    """Per batch size: the fastest of 5 forward passes with 1 new token per sequence (decode)
    and with 1 + args.tokens (verification, logits at every position), in seconds, and their
    ratio."""
    block = 16
    per_seq = -(-(COST_CONTEXT + 1 + args.tokens) // block)
    runner = ModelRunner(
        folder, torch.device(args.device), getattr(torch, args.dtype), per_seq * max(batches), block
    )

    def fastest(new_tokens: int, batch: int) -> float:
        chunks = [
            SeqChunk(
                token_ids=[17] * new_tokens,
                start_pos=COST_CONTEXT,
                block_table=list(range(b * per_seq, (b + 1) * per_seq)),
                needs_logits=True,
                all_logits=new_tokens > 1,
            )
            for b in range(batch)
        ]
        runner.run(chunks)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            runner.run(chunks)
            best = min(best, time.perf_counter() - start)
        return best

    costs = {}
    for batch in batches:
        decode, verify = fastest(1, batch), fastest(1 + args.tokens, batch)
        costs[batch] = {"decode_seconds": decode, "verify_seconds": verify}
        costs[batch]["ratio"] = verify / decode
    return costs


def print_table(results: dict) -> None:
    print(
        f"{'workload':>11} {'tokens':>7} {'off tok/s':>10} {'on tok/s':>9} {'speedup':>8} "
        f"{'accept':>7} {'tok/step':>8} {'same':>5}"
    )
    for name, row in results.items():
        per_step = "-" if row["tokens_per_step"] is None else f"{row['tokens_per_step']:.2f}"
        print(
            f"{name:>11} {row['generated_tokens']:>7} {row['off_tokens_per_second']:>10.1f} "
            f"{row['on_tokens_per_second']:>9.1f} {row['speedup']:>8.2f} "
            f"{row['acceptance_rate']:>7.2f} {per_step:>8} {str(row['same_tokens']):>5}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4, help="speculative_tokens when on")
    parser.add_argument("--problems", type=int, default=8, help="synth:arith:4 eval problems")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, help="torch threads; default: torch's own")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--cost-batches", default="1,8,16,32,64")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    options = dict(device=args.device, dtype=args.dtype, speculative_max_batch=64)
    engines = {
        "off": load("builtin", backend="native", speculative_tokens=0, **options),
        "on": load("builtin", backend="native", speculative_tokens=args.tokens, **options),
    }
    tokenizer = engines["off"].tokenizer
    prompts = [build_prompt(tokenizer, p.problem) for p in eval_set("arith", 4, args.problems)]
    for backend in engines.values():  # warm-up
        asyncio.run(greedy_b1(backend, prompts[:1]))
    results = {}
    for name in args.workloads.split(","):
        results[name] = measure(WORKLOADS[name], engines, prompts, args.repeats)
        row = results[name]
        print(
            f"  {name}: {row['off_tokens_per_second']:.1f} -> {row['on_tokens_per_second']:.1f}"
            f" tok/s, acceptance {row['acceptance_rate']:.2f}",
            flush=True,
        )
    print_table(results)
    batches = [int(b) for b in args.cost_batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        wide = build_tiny_model(Path(tmp) / "wide", family="qwen2", seed=SEED, **WIDE_SHAPE)
        costs = {
            "builtin": verify_cost(resolve_model("builtin"), args, batches),
            "qwen2.5-0.5b-width-4-layers": verify_cost(wide, args, batches),
        }
    print(f"verify/decode cost ({1 + args.tokens} vs 1 new tokens per sequence, context 256):")
    print(f"{'model':>28}" + "".join(f" {'b' + str(b):>6}" for b in batches))
    for model, by_batch in costs.items():
        print(f"{model:>28}" + "".join(f" {by_batch[b]['ratio']:>6.2f}" for b in batches))
    summary = {
        f"speculative_speedup_{key}": results[name]["speedup"]
        for key, name in [
            ("greedy_b1", "greedy_b1"),
            ("greedy_b8", "greedy_b8"),
            ("best_of_16", "best_of_16"),
        ]
        if name in results
    } | {f"acceptance_rate_{name}": row["acceptance_rate"] for name, row in results.items()}
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                **summary,
                "model": "builtin",
                "dataset": f"synth:arith:4, {args.problems} eval problems",
                "speculative_tokens": args.tokens,
                "device": args.device,
                "dtype": args.dtype,
                "machine": platform.machine(),
                "threads": torch.get_num_threads(),
                "repeats": args.repeats,
                "results": results,
                "verify_cost": costs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
