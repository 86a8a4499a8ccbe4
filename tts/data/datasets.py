"""Problem sets: the evaluation sets that ship with tts, JSON Lines files, Hugging Face ids.

`load_dataset` takes
- a known name: `math500`, `aime24`, `aime25`, `amc23`, `gsm8k` (GSM8K test), shipped inside the
  package so a fresh install benchmarks offline, or any `NAME.jsonl` in `$TTS_DATA_DIR`
  (default: `../shared/data` beside the project checkout);
- a path to a JSON Lines file with a `problem` (or `question`) and an `answer` per line;
- `hf:OWNER/NAME[:SPLIT]`, a Hugging Face dataset (needs network and `pip install tts[hub]`);
- `synth:TASK:DIFFICULTY[:SIZE]`, a fixed eval set of a synthetic task (`tts.data.synthetic`);
  `synth:TASK:DIFFICULTY:SIZE:train`, the first SIZE training problems (those `tts data synth`
  writes with seed 0), for making training data from a model's own samples;
  `synth:TASK:DIFFICULTY:SIZE:eval:SEED` or `...:train:SEED`, the same drawn with another seed:
  fresh held-out problems (eval) that no result or training run has seen, or more training
  problems. Eval problems never coincide with training problems, whatever the seeds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tts.data.jsonl import iter_jsonl
from tts.data.problem import Problem
from tts.data.synthetic import eval_set, train_problems
from tts.errors import TTSError

SHIPPED = {
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.jsonl",
    "gsm8k": "gsm8k_test.jsonl",
}
SETS_DIR = Path(__file__).parent / "sets"
PROBLEM_FIELDS = ("problem", "question", "prompt")
ANSWER_FIELDS = ("answer", "final_answer", "gold")


def data_dir() -> Path:
    """Where extra named datasets live: `$TTS_DATA_DIR`, else `../shared/data` by the checkout."""
    if "TTS_DATA_DIR" in os.environ:
        return Path(os.environ["TTS_DATA_DIR"])
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def known_datasets() -> list[str]:
    extra = sorted(p.stem for p in data_dir().glob("*.jsonl")) if data_dir().is_dir() else []
    return list(SHIPPED) + [name for name in extra if name not in SHIPPED]


def load_dataset(spec: str, limit: int | None = None) -> list[Problem]:
    """Load the problems `spec` names (see the module docstring), the first `limit` of them."""
    if limit is not None and limit < 1:
        raise TTSError(f"limit must be >= 1, got {limit}")
    if spec.startswith("hf:"):
        problems = _load_hub(spec[3:])
    elif spec.startswith("synth:"):
        problems = _load_synthetic(spec)
    else:
        problems = [
            problem_from_row(row, f"{name}-{number}", f"{path}, line {number}")
            for name, path in [_resolve(spec)]
            for number, row in iter_jsonl(path)
        ]
    if not problems:
        raise TTSError(f"dataset {spec!r} has no problems")
    return problems[:limit]


def _resolve(spec: str) -> tuple[str, Path]:
    if spec in SHIPPED:
        return spec, SETS_DIR / SHIPPED[spec]
    named = data_dir() / f"{spec}.jsonl"
    if named.is_file():
        return spec, named
    path = Path(spec).expanduser()
    if path.is_file():
        return path.stem, path
    if spec.endswith(".jsonl") or os.sep in spec:
        raise TTSError(f"dataset file not found: {spec}")
    raise TTSError(
        f"unknown dataset {spec!r}; known: {', '.join(known_datasets())}, "
        "a .jsonl path, synth:TASK:DIFFICULTY[:SIZE] or hf:OWNER/NAME[:SPLIT]"
    )


def problem_from_row(row: dict[str, Any], default_id: str, where: str) -> Problem:
    """A `Problem` from one source row, accepting the field names common datasets use."""
    text = next((row[k] for k in PROBLEM_FIELDS if row.get(k) is not None), None)
    answer = next((row[k] for k in ANSWER_FIELDS if row.get(k) is not None), None)
    if not isinstance(text, str) or not text.strip():
        raise TTSError(f"{where}: no problem text (expected one of {', '.join(PROBLEM_FIELDS)})")
    if answer is None or isinstance(answer, (dict, list)):
        raise TTSError(f"{where}: no answer (expected one of {', '.join(ANSWER_FIELDS)})")
    answer = str(answer)
    # GSM8K's own answer field is the worked solution ending in "#### 72".
    if match := re.search(r"####\s*(.+?)\s*$", answer):
        answer = match.group(1).replace(",", "")
    used = {*PROBLEM_FIELDS, *ANSWER_FIELDS, "id"}
    metadata = {k: v for k, v in row.items() if k not in used}
    return Problem(str(row.get("id", default_id)), text, answer, metadata)


def _load_synthetic(spec: str) -> list[Problem]:
    parts = spec.split(":")[1:]
    try:
        task, level, *rest = parts
        difficulty = int(level)
        size, split = (int(rest[0]) if rest else None), (rest[1] if len(rest) > 1 else "eval")
        seed = int(rest[2]) if len(rest) > 2 else None
        if split not in ("eval", "train") or len(rest) > 3 or (split == "train" and size is None):
            raise ValueError
    except ValueError:
        raise TTSError(
            "expected synth:TASK:DIFFICULTY[:SIZE], synth:TASK:DIFFICULTY:SIZE:train or "
            f"synth:TASK:DIFFICULTY:SIZE:eval|train:SEED, got {spec!r}"
        ) from None
    if split == "train":
        return train_problems(task, difficulty, size, seed or 0)
    return eval_set(task, difficulty, *([] if size is None else [size]), seed=seed)


def _load_hub(spec: str) -> list[Problem]:
    name, _, split = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise TTSError("loading Hugging Face datasets needs: pip install 'tts[hub]'") from None
    try:
        rows = datasets.load_dataset(name, split=split or "test")
    except Exception as error:  # the hub client raises many types; all mean "cannot load this"
        raise TTSError(f"cannot load Hugging Face dataset {name!r}: {error}") from None
    slug = name.replace("/", "-")
    return [problem_from_row(row, f"{slug}-{i}", f"{name} row {i}") for i, row in enumerate(rows)]
