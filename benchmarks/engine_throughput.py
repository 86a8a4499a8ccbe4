"""Generation throughput of the native engine, vLLM and transformers, side by side in one run.

    python benchmarks/engine_throughput.py [--device cpu] [--layers 4] [--engines native,vllm,hf]

Four workloads with fixed output lengths (EOS ignored), each timed once per engine after a
warm-up, on two random-weight Qwen2 models: one of the built-in model's shape (its head_dim
raised from 48 to 64, vLLM's CPU minimum) and one of Qwen2.5-0.5B's width, cut to --layers
layers so the run stays near ten minutes on a 2-core CPU; float32 and bfloat16.

  best_of_16      one 1,024-token prompt, n=16 samples of 256 tokens (temperature 1, seeded)
  step_extension  8 branches x 8 steps of 32 tokens, each step a new request whose prompt is
                  the 512-token problem plus the branch so far (beam search's access pattern)
  batch_decode    64 different 128-token prompts, 128 tokens each
  mixed           64 requests, prompt and output lengths drawn uniformly from 64-512

The last two are unseeded: vLLM 0.32 on CPU kills its engine when a seeded request's prompt is
split over steps (chunked prefill; "CPU Generator does not use offset").

Prints one table (generated tokens/s per engine, ratios, prefix-cache hit rate = cached prompt
tokens / prompt tokens) and writes benchmarks/results/engine_<device>.json. The native engine's
decode bandwidth fraction is measured on batch_decode: (bytes of weights + KV read per decode
step) x (decode steps per second) / (copy bandwidth measured here), arithmetic in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import torch

from tts.engine import Completion, SamplingParams, load
from tts.models.tiny import build_tiny_model

SEED = 0
BLOCK_SIZE = 16  # the native engine's KV block (its default); vLLM keeps its own default
MODELS = {
    # the built-in model's shape (tts/builtin/config.json) with head_dim 64 instead of 48
    "builtin-shape": dict(hidden_size=192, num_heads=3, num_kv_heads=1, intermediate_size=512),
    # Qwen2.5-0.5B's width: hidden 896, 14 query / 2 key-value heads, MLP 4864, vocab 151,936
    "qwen2.5-0.5b-width": dict(
        hidden_size=896,
        num_heads=14,
        num_kv_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
    ),
}
# transformers batches only requests that sample alike: the mixed workload's 64 output lengths
# would run one request at a time, minutes per model; it is left out for hf unless asked for.
HF_WORKLOADS = ("best_of_16", "step_extension", "batch_decode")
PROMPT_VOCAB = 300  # prompt ids are drawn from [16, 300): inside every tiny tokenizer's vocabulary
OUT = Path(__file__).parent / "results"

Workload = Callable[..., Awaitable[list[Completion]]]


def ids(rng: random.Random, n: int) -> list[int]:
    # Clear of the special tokens at the bottom of the tiny tokenizers' vocabulary.
    return [rng.randrange(16, PROMPT_VOCAB) for _ in range(n)]


def rng_for(workload: str) -> random.Random:
    # One stream per workload, so that no workload's prompts hit another's cached prefixes.
    return random.Random(f"{SEED}-{workload}")


async def best_of_16(backend) -> list[Completion]:
    prompt = ids(rng_for("best_of_16"), 1024)
    params = SamplingParams(n=16, max_tokens=256, seed=SEED, ignore_eos=True)
    return await backend.generate(prompt, params)


async def step_extension(backend) -> list[Completion]:
    problem = ids(rng_for("step_extension"), 512)
    branches: list[list[int]] = [[] for _ in range(8)]
    done: list[Completion] = []
    for step in range(8):
        steps = await asyncio.gather(
            *(
                backend.generate(
                    problem + branch,
                    SamplingParams(max_tokens=32, seed=SEED + 100 * step + b, ignore_eos=True),
                )
                for b, branch in enumerate(branches)
            )
        )
        for branch, (completion,) in zip(branches, steps):
            branch += completion.token_ids
            done.append(completion)
    return done


async def batch_decode(backend, max_tokens: int = 128) -> list[Completion]:
    rng = rng_for("batch_decode")
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    prompts = [ids(rng, 128) for _ in range(64)]
    results = await asyncio.gather(*(backend.generate(p, params) for p in prompts))
    return [c for completions in results for c in completions]


async def mixed(backend) -> list[Completion]:
    rng = rng_for("mixed")
    shapes = [(rng.randint(64, 512), rng.randint(64, 512)) for _ in range(64)]
    results = await asyncio.gather(
        *(
            backend.generate(
                ids(rng, prompt_len),
                SamplingParams(max_tokens=out_len, ignore_eos=True),
            )
            for prompt_len, out_len in shapes
        )
    )
    return [c for completions in results for c in completions]


WORKLOADS: dict[str, Workload] = {
    "best_of_16": best_of_16,
    "step_extension": step_extension,
    "batch_decode": batch_decode,
    "mixed": mixed,
}


def timed(work: Workload, backend, **kwargs) -> tuple[float, list[Completion]]:
    start = time.perf_counter()
    completions = asyncio.run(work(backend, **kwargs))
    return time.perf_counter() - start, completions


def copy_bandwidth(device: torch.device) -> float:
    """Bytes moved per second (read + write) copying a 1 GiB buffer, best of 5."""
    src = torch.ones(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_bandwidth(backend, bandwidth: float) -> dict:
    """The native engine's decode steps on batch_decode against the machine's copy bandwidth.

    Decode time is the 128-token run less a 1-token run of the same prompts (prefill and the
    first token), over the 127 decode steps that remain; each step reads every weight once (the
    tied embedding as the LM head) and the KV of every context token, 128 + t at step t.
    """
    config, dtype = backend.runner.config, backend.runner.dtype
    prefill_seconds, _ = timed(batch_decode, backend, max_tokens=1)
    total_seconds, _ = timed(batch_decode, backend)
    steps = 127
    steps_per_second = steps / (total_seconds - prefill_seconds)
    weight_bytes = backend.runner.weight_bytes
    kv_per_token = backend.runner.kv_bytes_per_block(config, 1, dtype)
    mean_context = 128 + 1 + steps / 2
    kv_bytes = 64 * mean_context * kv_per_token
    read_per_step = weight_bytes + kv_bytes
    return {
        "weight_bytes": weight_bytes,
        "kv_bytes_per_step": kv_bytes,
        "decode_steps_per_second": steps_per_second,
        "copy_bandwidth_bytes_per_second": bandwidth,
        "fraction": read_per_step * steps_per_second / bandwidth,
        "arithmetic": (
            f"({weight_bytes:.3e} weight B + 64 seqs x {mean_context:.1f} mean context x "
            f"{kv_per_token} KV B/token) x {steps_per_second:.2f} steps/s / "
            f"{bandwidth:.3e} B/s copy bandwidth"
        ),
    }


def measure(engine: str, folder: Path, args, dtype: str, bandwidth: float) -> dict:
    # Speculation off: every engine does the same work per token (vLLM runs without it here).
    native_options = {"block_size": BLOCK_SIZE, "speculative_tokens": 0}
    options = native_options if engine == "native" else {}
    backend = load(folder, backend=engine, device=args.device, dtype=dtype, **options)
    rows = {}
    try:
        asyncio.run(backend.generate([17] * 32, SamplingParams(max_tokens=8, ignore_eos=True)))
        for name in args.workloads:
            if engine == "hf" and name not in args.hf_workloads:
                continue
            seconds, completions = timed(WORKLOADS[name], backend)
            generated = sum(len(c.token_ids) for c in completions)
            prompt = sum(c.prompt_tokens for c in completions)
            cached = sum(c.cached_tokens for c in completions)
            rows[name] = {
                "seconds": seconds,
                "generated_tokens": generated,
                "tokens_per_second": generated / seconds,
                "prefix_hit_rate": cached / prompt,
            }
            print(f"  {engine:>6} {dtype:>8} {name:>14}: {generated / seconds:8.1f} tok/s")
        if engine == "native" and "batch_decode" in args.workloads:
            rows["decode_bandwidth"] = decode_bandwidth(backend, bandwidth)
    finally:
        if hasattr(backend, "close"):
            backend.close()
        del backend
        gc.collect()
    return rows


def ratio(results: dict, workload: str, other: str) -> float | None:
    native, them = results.get("native", {}).get(workload), results.get(other, {}).get(workload)
    if not native or not them:
        return None
    return native["tokens_per_second"] / them["tokens_per_second"]


def print_table(all_results: dict) -> None:
    engines = ("native", "vllm", "hf")
    header = f"{'model':>19} {'dtype':>8} {'workload':>14}"
    header += "".join(f" {e + ' tok/s':>12}" for e in engines)
    header += f" {'/vllm':>6} {'/hf':>6} {'hit n/v':>9}"
    print(header)
    for key, results in all_results.items():
        model, dtype = key.split("/")
        for workload in WORKLOADS:
            cells = []
            for engine in engines:
                row = results.get(engine, {}).get(workload)
                cells.append(f" {row['tokens_per_second']:>12.1f}" if row else f" {'-':>12}")
            ratios = [ratio(results, workload, other) for other in ("vllm", "hf")]
            hits = [results.get(e, {}).get(workload, {}).get("prefix_hit_rate") for e in engines]
            hit = "/".join("-" if h is None else f"{h:.2f}" for h in hits[:2])
            line = f"{model:>19} {dtype:>8} {workload:>14}" + "".join(cells)
            line += "".join(f" {'-':>6}" if r is None else f" {r:>6.2f}" for r in ratios)
            print(line + f" {hit:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=4, help="layers of the 0.5B-width model")
    parser.add_argument("--engines", default="native,vllm,hf")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--hf-workloads", default=",".join(HF_WORKLOADS))
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/engine_DEVICE.json")
    args = parser.parse_args()
    for name in ("engines", "models", "dtypes", "workloads", "hf_workloads"):
        setattr(args, name, getattr(args, name).split(","))
    device = torch.device(args.device)
    bandwidth = copy_bandwidth(device)
    print(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s")
    all_results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            shape = dict(MODELS[model], num_layers=args.layers if "0.5b" in model else 4)
            folder = build_tiny_model(Path(tmp) / model, family="qwen2", seed=SEED, **shape)
            for dtype in args.dtypes:
                key = f"{model}/{dtype}"
                all_results[key] = {
                    engine: measure(engine, folder, args, dtype, bandwidth)
                    for engine in args.engines
                }
    print_table(all_results)
    headline = all_results.get("qwen2.5-0.5b-width/float32", {})
    bf16 = all_results.get("qwen2.5-0.5b-width/bfloat16", {})
    decode = headline.get("native", {}).get("decode_bandwidth", {})
    summary = {
        "best_of_16_vs_vllm": ratio(headline, "best_of_16", "vllm"),
        "step_extension_vs_vllm": ratio(headline, "step_extension", "vllm"),
        "best_of_16_vs_vllm_bf16": ratio(bf16, "best_of_16", "vllm"),
        "step_extension_vs_vllm_bf16": ratio(bf16, "step_extension", "vllm"),
        "best_of_16_vs_hf": ratio(headline, "best_of_16", "hf"),
        "decode_bandwidth_fraction": decode.get("fraction"),
    }
    print(json.dumps(summary, indent=2))
    out = args.out or OUT / f"engine_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                **summary,
                "headline": "qwen2.5-0.5b-width, float32",
                "device": str(device),
                "machine": platform.machine(),
                "threads": torch.get_num_threads(),
                "layers_of_0.5b_width_model": args.layers,
                "models": MODELS,
                "results": all_results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
