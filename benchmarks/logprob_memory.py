"""Peak memory of the training step's log-probabilities, full logits vs chunked, on this CPU.

    python benchmarks/logprob_memory.py [--lengths 512,1024,2048] [--batch 1]

A random-weight Qwen2 body with Qwen's real vocabulary (151,936 ids, tied embeddings) and a
small hidden size, so the LM head's logits dominate as they do in long reasoning batches. Each
case (computation x sequence length) runs forward + backward of the summed completion
log-probabilities in a fresh process; its cost is the resident-set high-water mark during that
step above the resident set just before it (Linux VmHWM, reset through /proc/self/clear_refs:
torch's CPU allocations are invisible to tracemalloc). "full" is the computation before
`tts.train.logprobs` (one log-softmax over the [B, T, V] logits); "chunked" is
`token_logprobs` with its default chunks. Prints a table and writes
benchmarks/results/logprob_memory.json.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config

from tts.train.logprobs import CHUNK_ELEMENTS, token_logprobs

OUT = Path(__file__).resolve().parent / "results/logprob_memory.json"
VOCAB = 151936  # Qwen2/Qwen2.5/Qwen3's vocabulary
HIDDEN = 128
LAYERS = 2
LENGTHS = "512,1024,2048"  # tokens per sequence
CHUNKED_LENGTHS = "4096"  # chunked only: the full logits would take about 7 GB
BATCH = 1  # sequences
PROMPT_SHARE = 0.25  # of each sequence; the rest is the completion
TEMPERATURE = 1.0
SEED = 0
VOCAB_CHUNK = inspect.signature(token_logprobs).parameters["vocab_chunk"].default


def full_logits_logprobs(model: PreTrainedModel, batch: list[list[int]], starts: list[int]):
    """The computation before chunking: the whole batch's logits and their log-softmax."""
    ids = torch.tensor(batch)
    mask = torch.zeros((len(batch), ids.shape[1] - 1))
    for row, start in enumerate(starts):
        mask[row, start - 1 :] = 1
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits / TEMPERATURE, dim=-1)
    return logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1), mask


def chunked_logprobs(model: PreTrainedModel, batch: list[list[int]], starts: list[int]):
    chosen, mask, _ = token_logprobs(model, batch, starts, 0, TEMPERATURE)
    return chosen, mask


COMPUTATIONS = {"full": full_logits_logprobs, "chunked": chunked_logprobs}


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(computation: str, length: int, batch_size: int) -> dict:
    """One case, in this process: forward + backward, with the memory it took above setup."""
    torch.manual_seed(SEED)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=length,
        tie_word_embeddings=True,
    )
    model = AutoModelForCausalLM.from_config(config)
    batch = torch.randint(1, VOCAB, (batch_size, length)).tolist()
    starts = [int(length * PROMPT_SHARE)] * batch_size
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
    started = time.perf_counter()
    chosen, mask = COMPUTATIONS[computation](model, batch, starts)
    (chosen * mask).sum().backward()
    seconds = time.perf_counter() - started
    return {
        "computation": computation,
        "length": length,
        "batch": batch_size,
        "peak_mib": round((status_kib("VmHWM") - before) / 1024, 1),
        "seconds": round(seconds, 2),
        "logprob_sum": float((chosen * mask).sum().detach()),
        "grad_norm": float(model.model.embed_tokens.weight.grad.norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default=LENGTHS)
    parser.add_argument("--chunked-lengths", default=CHUNKED_LENGTHS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--case", nargs=2, metavar=("COMPUTATION", "LENGTH"), help="internal")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case[0], int(args.case[1]), args.batch)))
        return
    cases = [(c, int(n)) for n in args.lengths.split(",") for c in COMPUTATIONS]
    cases += [("chunked", int(n)) for n in args.chunked_lengths.split(",") if n]
    rows = []
    for computation, length in cases:
        command = [sys.executable, __file__, "--case", computation, str(length)]
        command += ["--batch", str(args.batch)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.splitlines()[-1]))
    print(f"{'tokens':>7} {'full MiB':>9} {'chunked MiB':>12} {'full s':>7} {'chunked s':>10}")
    for tokens in sorted({row["length"] * row["batch"] for row in rows}):
        by = {r["computation"]: r for r in rows if r["length"] * r["batch"] == tokens}
        full, chunked = by.get("full", {}), by["chunked"]
        print(
            f"{tokens:>7} {full.get('peak_mib', '-'):>9} {chunked['peak_mib']:>12} "
            f"{full.get('seconds', '-'):>7} {chunked['seconds']:>10}"
        )
    record = {
        "model": {"family": "qwen2", "vocab": VOCAB, "hidden": HIDDEN, "layers": LAYERS},
        "chunks": {"vocab_chunk": VOCAB_CHUNK, "chunk_elements": CHUNK_ELEMENTS},
        "temperature": TEMPERATURE,
        "cases": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    full = max((r for r in rows if r["computation"] == "full"), key=lambda r: r["length"])
    chunked = next(
        r for r in rows if r["computation"] == "chunked" and r["length"] == full["length"]
    )
    print(
        f"{full['length'] * full['batch']} tokens: "
        f"{full['peak_mib']:.0f} MiB full vs {chunked['peak_mib']:.0f} MiB chunked"
    )


if __name__ == "__main__":
    main()
