"""Wall time of the native engine against the `hf` reference on search-shaped work:
16 samples of one shared 512-token prompt, side by side in one run, on a tiny model.

    python benchmarks/native_vs_hf.py [--device cpu] [--hidden-size 64] [--layers 2]

Greedy sampling makes both backends do exactly the same token work (the table checks it); the
native engine computes the shared prompt once and forks the 16 samples from it, `hf` prefills
every row. Prints one table and writes benchmarks/results/native_vs_hf.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tts.engine import SamplingParams, load
from tts.engine.tiny import build_tiny_model

PROMPT_TOKENS = 512  # the shared prompt
SAMPLES = 16  # n
MAX_TOKENS = 64  # generated per sample
REPEATS = 3  # timed runs per backend; the median is reported
SEED = 0
BACKENDS = ("native", "hf")  # measured in this order, in one process
OUT = Path(__file__).parent / "results" / "native_vs_hf.json"


def timed_runs(backend, prompt: list[int], params: SamplingParams) -> tuple[float, int]:
    async def once():
        return await backend.generate(prompt, params)

    asyncio.run(once())  # warm-up
    seconds, generated = [], 0
    for _ in range(REPEATS):
        start = time.perf_counter()
        completions = asyncio.run(once())
        seconds.append(time.perf_counter() - start)
        generated = sum(len(c.token_ids) for c in completions)
    return statistics.median(seconds), generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_model(folder, hidden_size=args.hidden_size, num_layers=args.layers)
        prompt = torch.randint(10, 400, (PROMPT_TOKENS,)).tolist()
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, n=SAMPLES)
        rows = []
        for name in BACKENDS:
            backend = load(model, backend=name, device=args.device, dtype="float32")
            seconds, generated = timed_runs(backend, prompt, params)
            rows.append({"backend": name, "seconds": seconds, "generated_tokens": generated})
    native, hf = sorted(rows, key=lambda row: row["backend"] != "native")
    print(f"{'backend':>8} {'seconds':>9} {'generated':>10} {'tokens/s':>9}")
    for row in rows:
        rate = row["generated_tokens"] / row["seconds"]
        print(
            f"{row['backend']:>8} {row['seconds']:>9.3f} {row['generated_tokens']:>10} {rate:>9.1f}"
        )
    print(f"native is {hf['seconds'] / native['seconds']:.2f}x the speed of hf on the same work")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "work": {"prompt_tokens": PROMPT_TOKENS, "n": SAMPLES, "max_tokens": MAX_TOKENS},
                "model": {"hidden_size": args.hidden_size, "layers": args.layers},
                "device": args.device,
                "machine": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
