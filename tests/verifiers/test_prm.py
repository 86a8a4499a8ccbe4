"""Reward-model scorers: `load_scorer` on tiny PRM folders of each format, checked against the
formats' own reference recipes (TRL's tokenize_row, the Math-Shepherd and Qwen2.5-Math-PRM
model cards) computed by hand with plain transformers, and `OutcomeScorer`."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from tts.errors import TTSError
from tts.verifiers import OutcomeScorer, Scorer, load_scorer
from tts.verifiers.prm.qwen import Qwen2ForProcessRewardModel
from tts.verifiers.prm.shepherd import MathShepherdPRM

PROBLEM = "What is $7 * 8 - 14$?"
STEPS = ["First, 7 * 8 = 56.", "Then 56 - 14 = 42.", "The answer is \\boxed{42}."]
FORMATS = [
    "tiny_prm_token",
    "tiny_prm_policy",
    "tiny_prm_implicit",
    "tiny_prm_shepherd",
    "tiny_prm_qwen",
]


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture(scope="module", params=FORMATS)
def folder(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def scorer(folder):
    return load_scorer(folder, device="cpu", dtype="float32")


def token_by_hand(folder, problem: str, steps: list[str]) -> list[float]:
    """TRL's PRMTrainer.tokenize_row: BOS + prompt, then each step + separator, each piece
    tokenized alone; the label sits on the last token of each step + separator."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    separator = json.loads((folder / "prm_config.json").read_text())["step_separator"]
    ids = [tokenizer.bos_token_id] + tokenizer(problem, add_special_tokens=False)["input_ids"]
    positions = []
    for step in steps:
        ids += tokenizer(step, add_special_tokens=False)["input_ids"]
        ids += tokenizer(separator, add_special_tokens=False)["input_ids"]
        positions.append(len(ids) - 1)
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return logits[positions].softmax(dim=-1)[:, 1].tolist()


def policy_text(folder, problem: str, steps: list[str]) -> tuple[list[int], list[int], int]:
    """The policy's text, tokenized as one string: the prompt template around the problem, each
    step + separator. Returns the ids, the last token that ends inside each step, and the first
    token past the prompt."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings = json.loads((folder / "prm_config.json").read_text())
    text = settings["prompt_template"].replace("{problem}", problem)
    prompt_end, ends = len(text), []
    for step in steps:
        text += step + settings["step_separator"]
        ends.append(len(text))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert encoding["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = encoding["offset_mapping"]
    positions = [max(i for i, (_, stop) in enumerate(spans) if stop <= end) for end in ends]
    start = min(i for i, (_, stop) in enumerate(spans) if stop > prompt_end)
    return encoding["input_ids"], positions, start


def policy_by_hand(folder, problem: str, steps: list[str]) -> list[float]:
    """A token-classification head read on the policy's text at each step's last token."""
    ids, positions, _ = policy_text(folder, problem, steps)
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return logits[positions].softmax(dim=-1)[:, 1].tolist()


def implicit_ratios(folder, problem: str, steps: list[str]):
    """log pi(token) - log pi_ref(token) at every token of the policy's text, one forward pass of
    each model; the steps' end positions, the solution start and the settings."""
    ids, positions, start = policy_text(folder, problem, steps)
    settings = json.loads((folder / "prm_config.json").read_text())
    inputs = torch.tensor([ids])
    token_log_probs = []
    for path in (folder, folder / settings["reference"]):
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        with torch.no_grad():
            log_probs = model(inputs).logits[0].log_softmax(dim=-1)
        token_log_probs.append([float(log_probs[t - 1, ids[t]]) for t in range(len(ids))])
    ratio = [a - b for a, b in zip(*token_log_probs)]
    return ratio, positions, start, settings


def implicit_by_hand(folder, problem: str, steps: list[str]) -> list[float]:
    """Yuan et al.'s q: sigmoid(beta * sum over the solution's tokens so far of log pi(token) -
    log pi_ref(token))."""
    ratio, positions, start, settings = implicit_ratios(folder, problem, steps)
    values = [sum(ratio[start : end + 1]) for end in positions]
    return torch.sigmoid(settings["beta"] * torch.tensor(values)).tolist()


def implicit_min_by_hand(folder, problem: str, steps: list[str]) -> list[float]:
    """Min form (Cheng et al., 2025): each step's reward is the sum of its own tokens' ratios,
    and the value after a step is the lowest reward so far."""
    ratio, positions, start, settings = implicit_ratios(folder, problem, steps)
    bounds = [start, *(end + 1 for end in positions)]
    rewards = [sum(ratio[a:b]) for a, b in zip(bounds, bounds[1:])]
    values = [min(rewards[: k + 1]) for k in range(len(rewards))]
    return torch.sigmoid(settings["beta"] * torch.tensor(values)).tolist()


def shepherd_by_hand(folder, problem: str, steps: list[str]) -> list[float]:
    """The Math-Shepherd model card's recipe, line for line."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    candidate_tokens = tokenizer.encode("+ -")[1:]  # drop BOS
    step_tag_id = tokenizer.encode("ки")[-1]
    output = "\n".join(f"{step} ки" for step in steps)
    input_id = torch.tensor([tokenizer.encode(f"{problem} {output}")])
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(input_id).logits[:, :, candidate_tokens]
    scores = logits.softmax(dim=-1)[:, :, 0]
    return scores[input_id == step_tag_id].tolist()


def qwen_by_hand(folder, problem: str, steps: list[str]) -> list[float]:
    """The Qwen2.5-Math-PRM model card's recipe, with the full model's logits at every token."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [
        {
            "role": "system",
            "content": "Please reason step by step, and put your final answer within \\boxed{}.",
        },
        {"role": "user", "content": problem},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = torch.tensor([tokenizer.encode(text)])
    model = Qwen2ForProcessRewardModel.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(input_ids)
    mask = input_ids == tokenizer.encode("<extra_0>")[0]
    return logits.softmax(dim=-1)[mask][:, 1].tolist()


BY_HAND = {
    "tiny_prm_token": token_by_hand,
    "tiny_prm_policy": policy_by_hand,
    "tiny_prm_implicit": implicit_by_hand,
    "tiny_prm_shepherd": shepherd_by_hand,
    "tiny_prm_qwen": qwen_by_hand,
}


def test_scores_are_probabilities_one_per_step_and_deterministic(scorer):
    assert isinstance(scorer, Scorer)
    first = run(scorer.score(PROBLEM, STEPS))
    assert len(first) == len(STEPS)
    assert all(0.0 <= s <= 1.0 for s in first)
    assert run(scorer.score(PROBLEM, STEPS)) == first
    assert run(scorer.score(PROBLEM, [])) == []


@pytest.mark.parametrize("name", FORMATS)
def test_scores_match_the_reference_recipe(name, request):
    folder = request.getfixturevalue(name)
    scorer = load_scorer(folder, device="cpu", dtype="float32")
    expected = BY_HAND[name](folder, PROBLEM, STEPS)
    assert len(expected) == len(STEPS)
    assert run(scorer.score(PROBLEM, STEPS)) == pytest.approx(expected, abs=1e-5)
    # The heads are wide enough that the scores differ: a wrong position would show.
    assert max(expected) - min(expected) > 1e-3


def test_score_of_a_step_does_not_depend_on_later_steps(scorer):
    full = run(scorer.score(PROBLEM, STEPS))
    for k in range(1, len(STEPS)):
        prefix = run(scorer.score(PROBLEM, STEPS[:k]))
        assert prefix == pytest.approx(full[:k], abs=1e-5)


def test_concurrent_calls_are_batched_and_match_one_at_a_time(scorer):
    requests = [(f"What is {i} + {i}?", STEPS[: 1 + i % 3] + ["x" * i]) for i in range(20)]
    alone = [run(scorer.score(p, s)) for p, s in requests]
    forwards = []
    hook = scorer.model.base_model.register_forward_hook(lambda *_: forwards.append(1))
    calls, tokens = scorer.calls, scorer.tokens

    async def together():
        return await asyncio.gather(*(scorer.score(p, s) for p, s in requests))

    try:
        batched = run(together())
    finally:
        hook.remove()
    for got, want in zip(batched, alone):
        assert got == pytest.approx(want, abs=1e-5)
    assert 1 <= len(forwards) < len(requests)
    assert scorer.calls == calls + len(requests)
    assert scorer.tokens - tokens == sum(len(scorer.encode(p, s)[0]) for p, s in requests)


def test_cancelled_callers_are_dropped(scorer):
    rows = []

    def record(module, args, output):
        rows.append(len(output.last_hidden_state))

    async def main():
        tasks = [asyncio.create_task(scorer.score(PROBLEM, STEPS[: i + 1])) for i in range(3)]
        await asyncio.sleep(0)  # all three queued, the worker not yet started
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    hook = scorer.model.base_model.register_forward_hook(record)
    try:
        first, cancelled, third = run(main())
    finally:
        hook.remove()
    assert rows == [2]
    assert isinstance(cancelled, asyncio.CancelledError)
    assert len(first) == 1 and len(third) == 3


def test_a_separator_inside_a_step_keeps_one_score_per_step(scorer):
    separator = {
        "TokenClassificationPRM": "\n\n",
        "ImplicitPRM": "\n\n",
        "MathShepherdPRM": "ки",
        "QwenPRM": "<extra_0>",
    }
    inside = separator[type(scorer).__name__]
    steps = [STEPS[0] + inside + "so", STEPS[1]]
    assert len(run(scorer.score(PROBLEM, steps))) == 2


def test_an_input_longer_than_the_model_is_refused(scorer):
    with pytest.raises(TTSError, match="longer than the model's 512 positions"):
        run(scorer.score("1 + 1 " * 400, STEPS))


def test_token_prm_reads_its_separator_and_defaults_to_trls(tiny_prm_token, tmp_path):
    assert load_scorer(tiny_prm_token, device="cpu").step_separator == "\n\n"
    plain = shutil.copytree(tiny_prm_token, tmp_path / "plain")
    (plain / "prm_config.json").unlink()
    assert load_scorer(plain, device="cpu").step_separator == "\n"


def test_the_published_shepherd_checkpoint_is_known_by_its_name(tiny_llama, tmp_path):
    folder = shutil.copytree(tiny_llama, tmp_path / "math-shepherd-mistral-7b-prm")
    assert isinstance(load_scorer(folder, device="cpu"), MathShepherdPRM)


def test_a_plain_causal_lm_is_not_a_prm(tiny_llama):
    with pytest.raises(TTSError, match="no Math-Shepherd step tag is not a PRM"):
        load_scorer(tiny_llama, device="cpu")


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(TTSError, match="PRM folder not found"):
        load_scorer(tmp_path / "nope")


def edited_copy(source, target, **changes):
    folder = shutil.copytree(source, target)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_unknown_architecture_is_refused(tiny_llama, tmp_path):
    folder = edited_copy(tiny_llama, tmp_path / "m", architectures=["LlamaForQuestionAnswering"])
    with pytest.raises(TTSError, match=r"unknown PRM format .*LlamaForQuestionAnswering"):
        load_scorer(folder, device="cpu")


def test_a_token_classifier_with_three_labels_is_refused(tiny_prm_token, tmp_path):
    labels = {"0": "a", "1": "b", "2": "c"}
    folder = edited_copy(tiny_prm_token, tmp_path / "m", id2label=labels)
    with pytest.raises(TTSError, match="has 2 labels, this one 3"):
        load_scorer(folder, device="cpu")


def test_pickle_weights_and_bad_prm_config_are_refused(tiny_prm_token, tmp_path):
    folder = shutil.copytree(tiny_prm_token, tmp_path / "m")
    (folder / "prm_config.json").write_text(json.dumps({"format": "orm"}))
    with pytest.raises(TTSError, match="prm_config.json: format"):
        load_scorer(folder, device="cpu")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(TTSError, match="no safetensors weights"):
        load_scorer(folder, device="cpu")


def test_a_min_form_implicit_prm_scores_the_worst_step_so_far(tiny_prm_implicit, tmp_path):
    folder = shutil.copytree(tiny_prm_implicit, tmp_path / "m")
    settings = json.loads((folder / "prm_config.json").read_text())
    (folder / "prm_config.json").write_text(json.dumps({**settings, "value": "min"}))
    scorer = load_scorer(folder, device="cpu", dtype="float32")
    expected = implicit_min_by_hand(folder, PROBLEM, STEPS)
    assert run(scorer.score(PROBLEM, STEPS)) == pytest.approx(expected, abs=1e-5)
    assert expected != pytest.approx(implicit_by_hand(folder, PROBLEM, STEPS), abs=1e-3)
    assert all(later <= earlier for earlier, later in zip(expected, expected[1:]))
    # Batched with other lengths, each input's steps still take the minimum over their own.
    requests = [(f"What is {i} + {i}?", STEPS[: 1 + i % 3] + ["x" * i]) for i in range(8)]
    alone = [run(scorer.score(p, s)) for p, s in requests]

    async def together():
        return await asyncio.gather(*(scorer.score(p, s) for p, s in requests))

    for batched, single in zip(run(together()), alone):
        assert batched == pytest.approx(single, abs=1e-5)


def test_an_implicit_prm_needs_its_settings_and_its_reference(tiny_prm_implicit, tmp_path):
    folder = shutil.copytree(tiny_prm_implicit, tmp_path / "m")
    settings = json.loads((folder / "prm_config.json").read_text())
    (folder / "prm_config.json").write_text(json.dumps({**settings, "beta": None}))
    with pytest.raises(TTSError, match="needs reference, prompt_template and beta"):
        load_scorer(folder, device="cpu")
    shutil.rmtree(folder / "reference")
    (folder / "prm_config.json").write_text(json.dumps(settings))
    with pytest.raises(TTSError, match="reference model is missing"):
        load_scorer(folder, device="cpu")


def test_qwen_prm_checkpoint_names_load_without_gaps(tiny_prm_qwen):
    model, info = Qwen2ForProcessRewardModel.from_pretrained(
        tiny_prm_qwen, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    names = {name for name, _ in model.named_parameters()}
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= names
    assert all(n.startswith(("model.", "score.")) for n in names)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (["2 + 3 = 5.", "The answer is \\boxed{5}."], [0.0, 1.0]),
        (["2 + 3 = 6.", "The answer is \\boxed{6}."], [0.0, 0.0]),
        (["2 + 3 is a sum.", "I am not sure."], [0.0, 0.0]),
        ([], []),
    ],
)
def test_outcome_scorer(steps, expected):
    scorer = OutcomeScorer("5")
    assert isinstance(scorer, Scorer)
    assert run(scorer.score("What is 2 + 3?", steps)) == expected
    assert (scorer.calls, scorer.tokens) == (1, 0)
