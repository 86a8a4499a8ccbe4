"""A strategy's `stop` strings end every candidate solution where they would end one plain sample
of it, for each strategy family: sample-level ones pass them to the backend, step-level ones end a
solution at them, even when one spans the delimiter between two steps."""

from __future__ import annotations

import asyncio

import pytest

from tests.search.toy import DELIMITER, ToyBackend, ToyScorer
from tts.engine import Completion, SamplingParams
from tts.engine.backend import truncate_at_stop
from tts.errors import TTSError
from tts.search import make_strategy


class StoppingToy(ToyBackend):
    """The toy model, cutting each text at the request's stop strings as an engine does: the
    text ends before the earliest match, which becomes the stop_reason."""

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        completions = await super().generate(prompt, params)
        for completion in completions:
            text, matched = truncate_at_stop(completion.text, params.stop)
            if matched is not None and matched != DELIMITER:
                completion.text, completion.stop_reason = text, matched
        return completions


# Whole solutions (sample-level strategies) and the same solutions step by step (tree ones).
WHOLE = {(): ["a\n\nb STOP c \\boxed{1}"]}
STEPS = {(): ["a"], ("a",): ["b STOP c \\boxed{1}"]}
STRATEGIES = {
    "majority": (WHOLE, {"n": 2}),
    "best_of_n": (WHOLE, {"n": 2}),
    "weighted_best_of_n": (WHOLE, {"n": 2}),
    "beam": (STEPS, {"n": 2, "beam_width": 1}),
    "dvts": (STEPS, {"n": 2, "beam_width": 1}),
    "mcts": (STEPS, {"n": 2, "expand_k": 1, "concurrency": 1}),
    "particle_filter": (STEPS, {"n": 2}),
    "particle_gibbs": (STEPS, {"n": 4, "iterations": 2}),
}


def solve(name: str, table, **options):
    strategy = make_strategy(name, **options)
    return asyncio.run(strategy.solve("toy", StoppingToy(table), ToyScorer({})))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_candidate_ends_before_the_first_stop_string(name):
    table, options = STRATEGIES[name]
    free = solve(name, table, **options)
    assert "STOP" in free.text  # without stop strings the solution runs past it
    result = solve(name, table, stop=["never", "STOP"], **options)
    assert result.text == "a\n\nb "
    assert result.answer is None
    assert result.candidates
    for candidate in result.candidates:
        assert candidate.text == "a\n\nb "
        assert candidate.finish_reason == "stop"


@pytest.mark.parametrize("name", ["beam", "dvts", "mcts"])
def test_a_stop_string_across_the_step_delimiter_ends_the_solution_before_it(name):
    # A plain sample "a\n\nQuestion: b\n\n..." with stop "\n\nQuestion:" is "a"; a step-level
    # search generates "a" and "Question: b" apart, so no one step holds the whole match. The
    # solution ends there: the table has no next step, so asking for one fails the test.
    table = {(): ["a"], ("a",): ["Question: b"]}
    _, options = STRATEGIES[name]
    result = solve(name, table, stop="\n\nQuestion:", **options)
    assert [c.text for c in result.candidates] == ["a"] * len(result.candidates)
    assert {c.finish_reason for c in result.candidates} == {"stop"}


@pytest.mark.parametrize("name", ["beam", "dvts", "mcts"])
def test_a_stop_string_equal_to_the_delimiter_ends_the_solution_at_its_first_step(name):
    table = {(): ["a"], ("a",): ["b \\boxed{2}"]}
    _, options = STRATEGIES[name]
    assert solve(name, table, **options).text == "a\n\nb \\boxed{2}"
    result = solve(name, table, stop=[DELIMITER], **options)
    assert [c.text for c in result.candidates] == ["a"] * len(result.candidates)
    assert {c.finish_reason for c in result.candidates} == {"stop"}


def test_a_stop_in_the_next_step_keeps_the_text_a_plain_sample_would_have():
    # "a\n\nQuestion: ..." cut at "Question:" is "a\n\n": the delimiter stays, as in the sample.
    table = {(): ["a"], ("a",): ["Question: b \\boxed{2}"]}
    result = solve("beam", table, stop=["Question:"], n=1, beam_width=1)
    assert result.text == "a\n\n"
    assert result.candidates[0].finish_reason == "stop"


def test_the_backend_gets_the_stops_with_the_step_delimiter():
    backend = StoppingToy(STEPS)
    strategy = make_strategy("beam", n=1, beam_width=1, stop=["STOP"], top_k=5, min_p=0.1)
    asyncio.run(strategy.solve("toy", backend, ToyScorer({})))
    params = backend.calls[0][1]
    assert params.stop == (DELIMITER, "STOP")
    assert (params.top_k, params.min_p) == (5, 0.1)


@pytest.mark.parametrize(
    "options, name", [({"stop": [""]}, "stop"), ({"top_k": 0}, "top_k"), ({"stop": 3}, "stop")]
)
def test_a_bad_stop_or_top_k_is_refused_by_name(options, name):
    with pytest.raises(TTSError, match=name):
        make_strategy("majority", **options)
