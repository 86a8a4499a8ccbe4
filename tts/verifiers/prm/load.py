"""Load a process reward model from a Hugging Face folder, whichever of four formats it has.

- token classification, as TRL's `PRMTrainer` saves it (`tts.verifiers.prm.token`);
- an implicit PRM, a causal LM read against a reference LM (`tts.verifiers.prm.implicit`);
- a Math-Shepherd causal LM, scored by "+" / "-" at a step tag (`tts.verifiers.prm.shepherd`);
- Qwen2.5-Math-PRM, `Qwen2ForProcessRewardModel` (`tts.verifiers.prm.qwen`).

The format comes from `config.json`, or from `prm_config.json` beside it when that names one.
`prm_config.json` (written by `tts train prm`; every key optional):

    {"format": "token_classification" | "implicit_prm" | "math_shepherd" | "qwen_prm",
     "step_separator": "\\n",                               # token_classification, implicit_prm
     "prompt_template": "...{problem}...",                  # token_classification, implicit_prm
     "reference": "builtin" | "folder", "beta": 0.5,       # implicit_prm
     "value": "sum" | "min",                               # implicit_prm (default sum)
     "step_tag": "ки", "good_token": "+", "bad_token": "-"}  # math_shepherd

Weights load from safetensors only: a pickle checkpoint can run arbitrary code when loaded.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from transformers import AutoTokenizer

from tts.devices import DEVICE_THREAD, resolve_device, resolve_dtype
from tts.errors import TTSError, invalid_options
from tts.models.builtin import BUILTIN, BUILTIN_PRM
from tts.verifiers.prm.batching import BatchedScorer
from tts.verifiers.prm.implicit import ImplicitPRM, Value
from tts.verifiers.prm.qwen import QwenPRM
from tts.verifiers.prm.shepherd import BAD_TOKEN, GOOD_TOKEN, STEP_TAG, MathShepherdPRM
from tts.verifiers.prm.token import TRL_STEP_SEPARATOR, TokenClassificationPRM

PRM_CONFIG = "prm_config.json"

Format = Literal["token_classification", "implicit_prm", "math_shepherd", "qwen_prm"]


class PRMFileConfig(BaseModel):
    """The contents of `prm_config.json`: how a PRM folder wants its input built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Format | None = None  # None: detect from config.json and the tokenizer
    step_separator: str = TRL_STEP_SEPARATOR  # text after each step (token classification)
    # Token classification on the policy's own text, the prompt as this template with the
    # problem in it (`prm_token.encode_policy_text`); None: TRL's input.
    prompt_template: str | None = None
    # Implicit PRM: the reference LM ("builtin", or a folder, relative to the PRM's own), beta.
    reference: str | None = None
    beta: float | None = Field(None, gt=0)
    value: Value = "sum"  # implicit PRM: the solution's log-ratio so far, or its worst step's
    step_tag: str = STEP_TAG  # tag after each step (Math-Shepherd)
    good_token: str = GOOD_TOKEN  # Math-Shepherd's "step is right" token
    bad_token: str = BAD_TOKEN  # Math-Shepherd's "step is wrong" token


def load_scorer(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    max_batch_size: int = 32,
) -> BatchedScorer:
    """Load the PRM in the Hugging Face folder `path` ("builtin": the shipped one) as a `Scorer`.

    device: defaults to CUDA when there is one, else CPU.
    dtype: "float32", "bfloat16" or "float16"; defaults to float32 on CPU and bfloat16 elsewhere.
    max_batch_size: the most `score` calls one forward pass takes.
    """
    if str(path) == "builtin":
        if not (BUILTIN_PRM / "config.json").is_file():
            raise TTSError(f"the built-in PRM is missing from this installation ({BUILTIN_PRM})")
        path = BUILTIN_PRM
    path = Path(path).expanduser()
    if not path.is_dir():
        raise TTSError(f"PRM folder not found: {path}")
    if not (path / "config.json").is_file():
        raise TTSError(f"not a Hugging Face model folder (no config.json): {path}")
    if not any(path.glob("*.safetensors")):
        raise TTSError(f"no safetensors weights in {path} (pickle checkpoints are not loaded)")
    config = json.loads((path / "config.json").read_text())
    settings = _read_settings(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    found = settings.format or _detect(path, config, tokenizer, settings)
    if found == "token_classification":
        build = partial(
            TokenClassificationPRM,
            step_separator=settings.step_separator,
            prompt_template=settings.prompt_template,
        )
    elif found == "math_shepherd":
        build = partial(
            MathShepherdPRM,
            step_tag=settings.step_tag,
            good_token=settings.good_token,
            bad_token=settings.bad_token,
        )
    elif found == "implicit_prm":
        if None in (settings.reference, settings.prompt_template, settings.beta):
            raise TTSError(
                f"{path}: an implicit PRM's {PRM_CONFIG} needs reference, prompt_template and beta"
            )
        build = partial(
            ImplicitPRM,
            reference=_reference_folder(path, settings.reference),
            beta=settings.beta,
            value=settings.value,
            step_separator=settings.step_separator,
            prompt_template=settings.prompt_template,
        )
    else:
        build = QwenPRM
    # The weights load on the thread that will run them (see tts.devices).
    return DEVICE_THREAD.submit(build, path, tokenizer, device, dtype, max_batch_size).result()


def _reference_folder(path: Path, reference: str) -> Path:
    folder = BUILTIN if reference == "builtin" else path / Path(reference).expanduser()
    if not (folder / "config.json").is_file():
        raise TTSError(f"{path}: the implicit PRM's reference model is missing ({folder})")
    return folder


def _read_settings(path: Path) -> PRMFileConfig:
    file = path / PRM_CONFIG
    if not file.is_file():
        return PRMFileConfig()
    try:
        return PRMFileConfig.model_validate_json(file.read_text())
    except ValidationError as error:
        raise invalid_options(str(file), error) from None


def _detect(path: Path, config: dict, tokenizer, settings: PRMFileConfig) -> Format:
    architectures = config.get("architectures") or []
    if architectures == ["Qwen2ForProcessRewardModel"]:
        return "qwen_prm"
    if any(a.endswith("ForTokenClassification") for a in architectures):
        # config.json stores the label count as id2label; transformers' default is two.
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
        if labels != 2:
            raise TTSError(f"{path}: a token-classification PRM has 2 labels, this one {labels}")
        return "token_classification"
    if any(a.endswith("ForCausalLM") for a in architectures):
        # Most tokenizers hold "ки", "+" and "-" as ordinary tokens, so their mere presence says
        # nothing. A tag added to the vocabulary on purpose does, and so does the published
        # checkpoint's name (in its folder's path, or the Hugging Face cache's): it kept
        # Mistral's tokenizer unchanged, so only its name tells it apart from a plain Mistral.
        tag_added = settings.step_tag in tokenizer.get_added_vocab()
        names = f"{path.resolve()} {config.get('_name_or_path', '')}".lower()
        if tag_added or "shepherd" in names:
            return "math_shepherd"
        raise TTSError(
            f"{path}: a causal LM ({', '.join(architectures)}) with no Math-Shepherd step tag "
            f"is not a PRM; if it is one, write {PRM_CONFIG} with "
            '{"format": "math_shepherd", "step_tag": ..., "good_token": ..., "bad_token": ...}'
        )
    raise TTSError(
        f"{path}: unknown PRM format (architectures {architectures or 'missing'}); expected "
        "*ForTokenClassification with 2 labels, a Math-Shepherd *ForCausalLM "
        "or Qwen2ForProcessRewardModel"
    )
