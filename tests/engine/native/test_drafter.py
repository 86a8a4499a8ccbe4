"""The n-gram drafter on hand-made sequences: what it proposes, from where, and how much."""

from __future__ import annotations

import itertools

from tts.engine import SamplingParams
from tts.engine.native.drafter import PEER_PREFIX_TOKENS, NgramDrafter
from tts.engine.native.sequence import Sequence

ids = itertools.count()


def seq(prompt: list[int], output: list[int] = (), max_tokens: int = 100) -> Sequence:
    return Sequence(
        next(ids), [*prompt, *output], len(prompt), SamplingParams(max_tokens=max_tokens)
    )


def test_the_longest_match_wins_and_its_latest_occurrence():
    drafter = NgramDrafter(num_tokens=3, max_model_len=1000)
    # "7 8" occurs twice, followed by 1 then by 2; "6 7 8" once, followed by 3.
    s = seq([6, 7, 8, 3, 4, 5, 7, 8, 1, 7, 8, 2, 0, 0], [6, 7, 8])
    assert drafter.propose([s], [s]) == {s: [3, 4, 5]}
    t = seq([7, 8, 1, 9, 7, 8, 2, 9], [5, 7, 8])
    assert drafter.propose([t], [t]) == {t: [2, 9, 5]}


def test_a_loop_drafts_its_period_again_and_a_miss_drafts_nothing():
    drafter = NgramDrafter(num_tokens=5, max_model_len=1000)
    looping = seq([1, 2, 3], [4, 5, 4, 5])
    assert drafter.propose([looping], [looping]) == {looping: [4, 5, 4, 5, 4]}
    fresh = seq([1, 2, 3], [9])
    assert drafter.propose([fresh], [fresh]) == {}


def test_a_sequence_drafts_from_peers_with_the_same_prompt_only():
    drafter = NgramDrafter(num_tokens=3, max_model_len=1000)
    prompt = list(range(100, 100 + PEER_PREFIX_TOKENS))
    behind = seq(prompt, [1, 2])
    ahead = seq(prompt, [1, 2, 3, 4, 5])
    stranger = seq([0, *prompt], [1, 2, 6, 6, 6])  # another prompt: not a source
    drafts = drafter.propose([behind], [stranger, behind, ahead])
    assert drafts == {behind: [3, 4, 5]}
    # Of equally long matches, its own text comes first.
    own = seq(prompt, [1, 2, 9, 7, 1, 2])
    assert drafter.propose([own], [ahead, own]) == {own: [9, 7, 1]}


def test_drafts_leave_room_for_the_steps_own_token_within_max_tokens_and_the_model():
    drafter = NgramDrafter(num_tokens=8, max_model_len=1000)
    looping = [4, 5] * 3
    near_max_tokens = seq([1, 2, 3], looping, max_tokens=9)  # 3 tokens left: draft 2
    assert drafter.propose([near_max_tokens], [near_max_tokens]) == {near_max_tokens: [4, 5]}
    last = seq([1, 2, 3], looping, max_tokens=7)  # one token left: the step's own
    assert drafter.propose([last], [last]) == {}
    short_model = NgramDrafter(num_tokens=8, max_model_len=12)
    s = seq([1, 2, 3], looping)  # 9 of 12 positions used
    assert short_model.propose([s], [s]) == {s: [4, 5]}
