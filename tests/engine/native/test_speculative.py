"""Speculative decoding: the same output as plain decoding, greedy and sampled, with drafts
actually kept and rejected, blocks freed and the prefix cache sound."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM

from tts.engine import SamplingParams, load
from tts.engine.native.config import EngineConfig
from tts.engine.native.device_step import Sampled
from tts.engine.native.engine_core import EngineCore
from tts.engine.native.sampler import sample
from tts.engine.native.scheduler import Scheduler
from tts.engine.native.sequence import Sequence
from tts.engine.native.speculative import kept_tokens

OPTIONS = dict(block_size=4, num_blocks=512, check_integrity=True)
# Text that repeats itself, as reasoning traces do, so that drafts get kept.
TEXTS = [
    "First, 7 * 8 = 56.\n\nThen 56 - 14 = 42.\n\n" * 3,
    "The answer is \\boxed{42}. " * 4,
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.",
]


def native(model, **options):
    return load(model, backend="native", device="cpu", dtype="float32", **(OPTIONS | options))


def generate_all(backend, prompts, params):
    async def main():
        return await asyncio.gather(*(backend.generate(p, params) for p in prompts))

    return asyncio.run(main())


def core_of(model, **options) -> EngineCore:
    config = EngineConfig(**(OPTIONS | options))
    return EngineCore(model, torch.device("cpu"), torch.float32, config)


def run(core: EngineCore, requests: list[tuple[list[int], SamplingParams]]):
    """Each request's completions, all of them added before the first step."""
    ids = [core.add(prompt_ids, params) for prompt_ids, params in requests]
    finished = {}
    while core.has_work:
        finished |= core.step().finished
    return [finished[request_id] for request_id in ids]


def chi_square_p(observed: Counter, probs: dict) -> float:
    """Pearson's goodness-of-fit p-value of `observed` counts against `probs`, categories
    expected fewer than 5 times pooled into one (so the chi-square approximation holds). The
    chi-square survival function is the regularised upper incomplete gamma Q(df/2, stat/2)."""
    total = sum(observed.values())
    if set(observed) - set(probs):
        return 0.0  # a category that cannot occur did
    pooled_observed = pooled_expected = 0.0
    stat, bins = 0.0, 0
    for category, p in probs.items():
        expected = total * p
        if expected < 5:
            pooled_observed += observed[category]
            pooled_expected += expected
            continue
        stat += (observed[category] - expected) ** 2 / expected
        bins += 1
    if pooled_expected > 0:
        stat += (pooled_observed - pooled_expected) ** 2 / pooled_expected
        bins += 1
    df = torch.tensor((bins - 1) / 2, dtype=torch.float64)
    return torch.special.gammaincc(df, torch.tensor(stat / 2, dtype=torch.float64)).item()


def test_kept_tokens_are_the_matching_draft_then_one_more():
    assert kept_tokens([5, 6, 7], [5, 6, 9, 1]) == [5, 6, 9]
    assert kept_tokens([5, 6, 7], [4, 6, 7, 1]) == [4]
    assert kept_tokens([5, 6, 7], [5, 6, 7, 1]) == [5, 6, 7, 1]  # all kept, and a bonus token
    assert kept_tokens([], [3]) == [3]


def test_a_draft_token_is_kept_with_probability_p_and_replaced_from_the_residual():
    """Leviathan et al.'s rule for a point-mass draft, on fixed distributions: the first token
    is distributed as p0 (after top-p), the draft d is kept p0(d) of the time, a replacement is
    distributed as p0 without d, and the token after a kept draft as p1."""
    p0, p1 = [0.4, 0.3, 0.15, 0.1, 0.05], [0.05, 0.1, 0.2, 0.25, 0.4]
    count, draft = 20000, [1]
    params = SamplingParams(top_p=0.9)  # cuts p0's last token: 0.95 of the mass is needed
    logits = torch.log(torch.tensor([p0, p1])).repeat(count, 1)
    torch.manual_seed(0)
    rows = sample(logits, [params] * 2 * count, [None] * 2 * count).view(count, 2).tolist()
    emitted = [kept_tokens(draft, row) for row in rows]
    nucleus = {t: p / 0.95 for t, p in enumerate(p0[:4])}
    first = Counter(tokens[0] for tokens in emitted)
    assert chi_square_p(first, nucleus) > 1e-3
    kept = sum(len(tokens) == 2 for tokens in emitted) / count
    assert abs(kept - nucleus[1]) < 0.01
    residual = {t: p / (1 - nucleus[1]) for t, p in nucleus.items() if t != 1}
    assert chi_square_p(Counter(t[0] for t in emitted if len(t) == 1), residual) > 1e-3
    top_p1 = {t: p / 0.95 for t, p in enumerate(p1) if t != 0}  # top-p 0.9 cuts 0.05
    assert chi_square_p(Counter(t[1] for t in emitted if len(t) == 2), top_p1) > 1e-3


def beside_sampled(backend, prompts, params):
    """Completions of `prompts` under `params`, generated beside sampled requests (whose drafts
    are rejected more often) so that steps mix both."""

    async def main():
        sampled = SamplingParams(temperature=0.8, max_tokens=30, n=2)
        calls = [backend.generate(p, params) for p in prompts]
        calls += [backend.generate(p, sampled) for p in prompts]
        return (await asyncio.gather(*calls))[: len(prompts)]

    return asyncio.run(main())


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen", "tiny_qwen3"])
def test_greedy_output_is_the_same_with_speculation(request, family):
    model = request.getfixturevalue(family)
    plain, fast = native(model), native(model, speculative_tokens=4)
    prompts = [plain.tokenizer(text).input_ids for text in TEXTS]
    (reference,) = generate_all(plain, prompts[:1], SamplingParams(temperature=0, max_tokens=20))
    stop = reference[0].text[6:9]
    for params in (
        SamplingParams(temperature=0, max_tokens=48, logprobs=2),
        SamplingParams(temperature=0, max_tokens=13, n=3),
        SamplingParams(temperature=0, max_tokens=40, stop=[stop], stop_token_ids=[17]),
    ):
        expected, got = generate_all(plain, prompts, params), beside_sampled(fast, prompts, params)
        for want, have in zip(itertools.chain(*expected), itertools.chain(*got)):
            assert (have.token_ids, have.text, have.finish_reason, have.stop_reason) == (
                want.token_ids,
                want.text,
                want.finish_reason,
                want.stop_reason,
            )
            for want_entry, have_entry in zip(want.logprobs or [], have.logprobs or []):
                assert want_entry.keys() == have_entry.keys()
                assert all(abs(want_entry[t] - have_entry[t]) < 1e-4 for t in want_entry)
    stats = fast.stats()
    assert stats["drafted_tokens"] > stats["accepted_tokens"] > 0  # some kept, some rejected
    assert stats["blocks_in_use"] == 0


def test_rejected_drafts_free_their_blocks_and_never_reach_the_prefix_cache(tiny_llama):
    fast = native(tiny_llama, speculative_tokens=4)  # blocks checked after every step
    greedy = SamplingParams(temperature=0, max_tokens=40)
    prompts = [fast.tokenizer(text).input_ids for text in TEXTS]
    first = generate_all(fast, prompts, greedy)
    stats = fast.stats()
    assert stats["drafted_tokens"] > stats["accepted_tokens"] > 0  # some kept, some rejected
    assert stats["blocks_in_use"] == 0
    assert stats["blocks_free"] + stats["blocks_cached"] == stats["blocks_total"]
    # Prompts that extend the first answers are served from the blocks those answers filled:
    # had a block kept the KV of a rejected draft token, the continuations would differ.
    extended = [p + c[0].token_ids for p, c in zip(prompts, first)]
    again = generate_all(fast, extended, greedy)
    assert all(c[0].cached_tokens >= len(p) - 4 for p, c in zip(extended, again))
    fresh = generate_all(native(tiny_llama), extended, greedy)
    assert [c[0].token_ids for c in again] == [c[0].token_ids for c in fresh]


class ScriptedDrafter:
    """Drafts the same tokens for every sequence."""

    def __init__(self, draft: list[int]) -> None:
        self.draft = draft

    def propose(self, seqs: list[Sequence], running: list[Sequence]) -> dict:
        return {seq: list(self.draft) for seq in seqs}


def test_the_scheduler_cuts_a_rejected_draft_and_frees_its_blocks():
    scheduler = Scheduler(
        num_blocks=8,
        block_size=4,
        max_num_seqs=4,
        max_num_batched_tokens=64,
        drafter=ScriptedDrafter([9] * 6),
        speculative_max_batch=4,
    )
    free = scheduler.cache.pool.free
    seq = Sequence(0, list(range(6)), 6, SamplingParams())
    scheduler.add([seq])
    scheduler.postprocess(scheduler.schedule(), [[[5]]])  # prefill, then its first token
    assert (seq.num_tokens, seq.num_computed_tokens, len(seq.block_table)) == (7, 6, 2)
    batch = scheduler.schedule()
    assert batch.chunks[0].draft == [9] * 6 and len(seq.block_table) == 4  # positions 6-12
    assert len(free) == 4
    scheduler.postprocess(batch, [[[9, 3]]])  # one draft token kept, then the model's 3
    assert seq.token_ids[6:] == [5, 9, 3] and seq.num_computed_tokens == 8
    assert len(seq.block_table) == 2 and len(free) == 6  # positions 8-12 held nothing kept
    assert len(seq.block_hashes) == 2  # both blocks full of kept, computed tokens
    scheduler.cache.check_integrity([seq.block_table])
    batch = scheduler.schedule()
    assert len(seq.block_table) == 4
    scheduler.postprocess(batch, [[[4]]])  # nothing kept
    assert seq.token_ids[8:] == [3, 4] and seq.num_computed_tokens == 9
    assert len(seq.block_table) == 3 and len(seq.block_hashes) == 2
    # The cache knows the kept tokens' blocks only: [0 1 2 3], [4 5 5 9].
    assert sorted(key[1] for key in scheduler.cache.index) == [(0, 1, 2, 3), (4, 5, 5, 9)]
    scheduler.cache.check_integrity([seq.block_table])
    assert scheduler.stats.drafted_tokens == 12 and scheduler.stats.accepted_tokens == 1


def test_a_draft_takes_only_free_blocks():
    scheduler = Scheduler(8, 4, 4, 64, drafter=ScriptedDrafter([9] * 8), speculative_max_batch=4)
    cached = Sequence(0, list(range(100, 124)), 24, SamplingParams())  # fills 6 blocks
    scheduler.add([cached])
    scheduler.postprocess(scheduler.schedule(), [[[1]]])
    scheduler.finish(cached)  # its 6 blocks stay cached, 2 are free
    seq = Sequence(1, list(range(3)), 3, SamplingParams())
    scheduler.add([seq])
    scheduler.postprocess(scheduler.schedule(), [[[1]]])
    batch = scheduler.schedule()
    assert batch.chunks[0].draft == [9] * 4  # positions 3-7: the 2 free blocks, no eviction
    assert scheduler.cache.stats()["blocks_cached"] == 6


def test_no_drafts_while_more_sequences_run_than_speculative_max_batch():
    scheduler = Scheduler(64, 4, 8, 64, drafter=ScriptedDrafter([9]), speculative_max_batch=2)
    for index in range(3):
        scheduler.add([Sequence(index, [1, 2, 3], 3, SamplingParams())])
    scheduler.postprocess(scheduler.schedule(), [[[4]]] * 3)  # three prefills
    batch = scheduler.schedule()
    assert [chunk.draft for chunk in batch.chunks] == [[], [], []]
    scheduler.postprocess(batch, [[[5]]] * 3)
    scheduler.finish(scheduler.running[0])
    assert [chunk.draft for chunk in scheduler.schedule().chunks] == [[9], [9]]


def test_a_stop_inside_a_kept_draft_drops_the_tokens_after_it(tiny_llama):
    core = core_of(tiny_llama, speculative_tokens=4)
    stop_token = 7
    params = SamplingParams(temperature=0, max_tokens=40, stop_token_ids=[stop_token], logprobs=0)
    core.add(core.tokenizer(TEXTS[2]).input_ids, params)
    while True:
        batch = core.schedule()
        if len(batch.chunks[0].draft) >= 3:
            break
        core.postprocess(batch, core.execute(batch))
    (chunk,) = batch.chunks
    seq, draft, before = chunk.seq, chunk.draft, chunk.seq.num_tokens
    sampled = core.execute(batch)
    # As if the model had kept the whole draft, its second token being the stop token.
    tokens = [draft[0], stop_token, *draft[2:], 1]
    entries = sampled.logprobs[0][0][:1] * len(tokens)
    output = core.postprocess(batch, Sampled([[tokens]], [[entries]], sampled.prompt_logprobs))
    (completion,) = next(iter(output.finished.values()))
    assert seq.token_ids[before:] == [draft[0], stop_token]
    assert completion.finish_reason == "stop" and completion.stop_reason == stop_token
    assert len(completion.logprobs) == len(completion.token_ids)
    assert core.stats()["blocks_in_use"] == 0


def test_seeded_samples_are_the_same_with_speculation_on_or_off(tiny_qwen):
    plain, fast = core_of(tiny_qwen), core_of(tiny_qwen, speculative_tokens=4)
    prompt = plain.tokenizer(TEXTS[1]).input_ids
    seeded = SamplingParams(temperature=1.0, top_k=3, max_tokens=24, n=4, seed=11, logprobs=1)
    (expected,) = run(plain, [(prompt, seeded)])
    # With another request beside it, whose text it may draft from: still the same samples.
    other = SamplingParams(temperature=0.5, max_tokens=30)
    got, _ = run(fast, [(prompt, seeded), (prompt, other)])
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    assert len({tuple(c.token_ids) for c in got}) > 1
    assert fast.stats()["accepted_tokens"] > 0


def exact_distribution(model_dir, prompt: list[int], top_k: int, length: int) -> dict:
    """P(first `length` tokens) under temperature 1 and top-k, from transformers' logits."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    probs = {(): 1.0}
    for _ in range(length):
        grown = {}
        for tokens, p in probs.items():
            with torch.no_grad():
                logits = model(torch.tensor([prompt + list(tokens)])).logits[0, -1]
            top = logits.topk(top_k)
            for q, token in zip(torch.softmax(top.values, -1).tolist(), top.indices.tolist()):
                grown[(*tokens, token)] = p * q
        probs = grown
    return probs


def test_sampled_outputs_keep_their_distribution(tiny_qwen):
    """Thousands of unseeded 4-token samples, with speculation off and on, against the exact
    distribution (its 16 sequences under top-k 2): a chi-square goodness-of-fit test."""
    prompt = core_of(tiny_qwen).tokenizer(TEXTS[1]).input_ids
    params = SamplingParams(temperature=1.0, top_k=2, max_tokens=4, n=256, ignore_eos=True)
    exact = exact_distribution(tiny_qwen, prompt, top_k=2, length=4)
    torch.manual_seed(0)  # unseeded draws come from torch's default stream
    for tokens in (0, 3):
        core = core_of(
            tiny_qwen,
            num_blocks=4096,
            check_integrity=False,
            speculative_tokens=tokens,
            speculative_max_batch=256,
        )
        results = run(core, [(prompt, params)] * 16)
        counts = Counter(tuple(c.token_ids) for completions in results for c in completions)
        assert chi_square_p(counts, exact) > 1e-3
    stats = core.stats()
    assert stats["accepted_tokens"] > 1000 and stats["drafted_tokens"] > stats["accepted_tokens"]


def test_speculation_options_are_checked():
    with pytest.raises(ValueError, match="speculative_tokens"):
        EngineConfig(speculative_tokens=-1)
    with pytest.raises(ValueError, match="speculative_max_batch"):
        EngineConfig(speculative_tokens=4, speculative_max_batch=0)
