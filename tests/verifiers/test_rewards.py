"""Rewards pinned at points worked out by hand, never by re-running the formula under test."""

import pytest

from tts.verifiers.rewards import (
    accuracy_reward,
    cosine_length_reward,
    dapo_overlong_penalty,
    format_reward,
    kimi_length_penalty,
    repetition_penalty,
)

# cos(pi/4) = sqrt(2)/2 = 0.70710678..., so 1 + cos = 1.70710678 and 1 - cos = 0.29289322.


# accuracy_reward


def test_accuracy_r1_style_output_correct():
    text = (
        "<think>\nHalf plus a quarter: 1/2 = 2/4, so 2/4 + 1/4 = 3/4.\n</think>\n\n"
        "Adding the fractions gives $\\boxed{\\frac{3}{4}}$."
    )
    assert accuracy_reward(text, "\\frac{3}{4}") == 1.0


def test_accuracy_gsm8k_style_output():
    text = "She sells 16 - 3 - 4 = 9 eggs at $2 each, so 9 * 2 = 18.\n#### 18"
    assert accuracy_reward(text, "18") == 1.0
    assert accuracy_reward(text, "20") == 0.0


def test_accuracy_wrong_or_missing_answer():
    assert accuracy_reward("<think>2+2=5</think>\nThe answer is \\boxed{5}.", "4") == 0.0
    assert accuracy_reward("I do not know.", "4") == 0.0


def test_accuracy_grades_the_answer_part_not_the_thinking():
    # The right number tried mid-thought and then dropped earns nothing.
    assert accuracy_reward("<think>Maybe \\boxed{5}? No.</think>\nI give up.", "5") == 0.0
    assert accuracy_reward("<think>It is \\boxed{5}, let me check", "5") == 0.0  # cut off


# format_reward


@pytest.mark.parametrize(
    "text",
    [
        "<think>\nLet me compute 2+2.\n</think>\n\nThe answer is \\boxed{4}.",
        "  \n<think>short</think>\\boxed{4}",
    ],
)
def test_format_accepts_one_think_block_then_an_answer(text):
    assert format_reward(text) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "The answer is \\boxed{4}.",  # no think block
        "<think>a</think><think>b</think>\\boxed{4}",  # two think blocks
        "<think>a</think>\\boxed{4}</think>",  # a stray second closing tag
        "<think>2+2=4</think>   \n",  # empty answer part
        "<think>2+2=4</think>\nI am not sure.",  # answer part with no answer in it
        "<think>so it is \\boxed{4}",  # unclosed think, e.g. cut off by the budget
        "Sure. <think>2+2=4</think>\\boxed{4}",  # think block not at the start
        "",
    ],
)
def test_format_rejects(text):
    assert format_reward(text) == 0.0


# cosine_length_reward (defaults: correct 2 -> 1, wrong -10 -> 0, exceed -10)


@pytest.mark.parametrize(
    ("correct", "length", "expected"),
    [
        (True, 0, 2.0),  # correct, shortest: r_0^c
        (True, 250, 1.8535534),  # 1 + 0.5 * 1 * 1.70710678
        (True, 500, 1.5),  # midpoint: cos(pi/2) = 0, halfway between 2 and 1
        (True, 750, 1.1464466),  # 1 + 0.5 * 1 * 0.29289322
        (False, 0, -10.0),  # wrong, shortest: r_0^w
        (False, 250, -8.5355339),  # 0 + 0.5 * -10 * 1.70710678
        (False, 500, -5.0),  # midpoint
        (False, 750, -1.4644661),  # 0 + 0.5 * -10 * 0.29289322
    ],
)
def test_cosine_known_points(correct, length, expected):
    assert cosine_length_reward(correct, length, 1000) == pytest.approx(expected, abs=1e-6)


def test_cosine_long_ends_near_the_max_length_values():
    assert cosine_length_reward(True, 999, 1000) == pytest.approx(1.0, abs=1e-4)
    assert cosine_length_reward(False, 999, 1000) == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("length", [1000, 1001, 50_000])
@pytest.mark.parametrize("correct", [True, False])
def test_cosine_exceeded(correct, length):
    assert cosine_length_reward(correct, length, 1000) == -10.0
    assert cosine_length_reward(correct, length, 1000, exceed_penalty=-3.0) == -3.0


def test_cosine_custom_endpoints():
    # open-r1's defaults: correct 1.0 -> 0.5, wrong -0.5 -> 0.0 (short wrong is worst).
    kw = dict(correct_at_zero=1.0, correct_at_max=0.5, wrong_at_zero=-0.5, wrong_at_max=0.0)
    assert cosine_length_reward(True, 500, 1000, **kw) == pytest.approx(0.75)
    assert cosine_length_reward(False, 500, 1000, **kw) == pytest.approx(-0.25)


def test_cosine_prefers_short_correct_and_long_wrong():
    correct = [cosine_length_reward(True, n, 100) for n in range(100)]
    wrong = [cosine_length_reward(False, n, 100) for n in range(100)]
    assert correct == sorted(correct, reverse=True)
    assert wrong == sorted(wrong)
    assert min(correct) > max(wrong)


@pytest.mark.parametrize(("length", "max_length"), [(10, 0), (10, -5), (-1, 100)])
def test_cosine_rejects_bad_lengths(length, max_length):
    with pytest.raises(ValueError):
        cosine_length_reward(True, length, max_length)


# repetition_penalty


def test_repetition_no_repeats_is_zero():
    assert repetition_penalty([1, 2, 3, 4, 5, 6], ngram_size=2) == 0.0


def test_repetition_fully_repeated_approaches_max_penalty():
    # 1000 bigrams, all (7, 7): one unique, so 1 - 1/1000 of the max penalty.
    assert repetition_penalty([7] * 1001, ngram_size=2) == pytest.approx(-0.999)
    assert repetition_penalty([7] * 1001, ngram_size=2, max_penalty=-0.5) == pytest.approx(-0.4995)
    # The smallest case, as in TRL's docstring: 4 bigrams, 1 unique.
    assert repetition_penalty([5, 5, 5, 5, 5], ngram_size=2) == pytest.approx(-0.75)


def test_repetition_known_fraction():
    # Trigrams 123, 231, 312, 123: 4 in all, 3 unique, so 1/4 repeated.
    assert repetition_penalty([1, 2, 3, 1, 2, 3], ngram_size=3) == pytest.approx(-0.25)
    assert repetition_penalty((1, 2, 3, 1, 2, 3), ngram_size=3, max_penalty=-0.5) == pytest.approx(
        -0.125
    )


def test_repetition_default_ngram_is_40_tokens():
    assert repetition_penalty(list(range(10)) * 3) == 0.0  # 30 tokens: shorter than n
    # 40 distinct tokens twice: 41 windows, the first and the last are equal.
    assert repetition_penalty(list(range(40)) * 2) == pytest.approx(-1 / 41)


@pytest.mark.parametrize("ids", [[], [1], [1, 2]])
def test_repetition_shorter_than_n_is_zero(ids):
    assert repetition_penalty(ids, ngram_size=3) == 0.0


def test_repetition_exactly_n_is_zero():
    assert repetition_penalty([4, 4, 4], ngram_size=3) == 0.0


@pytest.mark.parametrize(("ngram_size", "max_penalty"), [(0, -1.0), (-2, -1.0), (3, 0.5)])
def test_repetition_rejects_bad_arguments(ngram_size, max_penalty):
    with pytest.raises(ValueError):
        repetition_penalty([1, 2, 3, 4], ngram_size=ngram_size, max_penalty=max_penalty)


# kimi_length_penalty


def test_kimi_small_group():
    # min 100, max 500, span 400: lambda = 0.5, 0.375, 0.25, 0.0, -0.5.
    lengths = [100, 150, 200, 300, 500]
    correct = [True, False, True, False, False]
    expected = [0.5, 0.0, 0.25, 0.0, -0.5]
    assert kimi_length_penalty(lengths, correct) == pytest.approx(expected)


def test_kimi_correct_long_is_penalised_and_wrong_short_is_not_rewarded():
    assert kimi_length_penalty([10, 30, 20], [True, True, True]) == pytest.approx([0.5, -0.5, 0.0])
    assert kimi_length_penalty([10, 30, 20], [False, False, False]) == pytest.approx(
        [0.0, -0.5, 0.0]
    )


def test_kimi_equal_lengths_and_empty_group():
    assert kimi_length_penalty([7, 7, 7], [True, False, True]) == [0.0, 0.0, 0.0]
    assert kimi_length_penalty([42], [True]) == [0.0]
    assert kimi_length_penalty([], []) == []


def test_kimi_rejects_bad_arguments():
    with pytest.raises(ValueError):
        kimi_length_penalty([1, 2, 3], [True, False])
    with pytest.raises(ValueError):
        kimi_length_penalty([1, -2], [True, False])


# dapo_overlong_penalty (max_length 100, cache 20: soft region is (80, 100])


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0.0),
        (50, 0.0),  # well inside the budget
        (80, 0.0),  # boundary: max_length - cache_length is still free
        (81, -0.05),  # (80 - 81) / 20
        (90, -0.5),  # halfway into the cache
        (100, -1.0),  # boundary: max_length itself
        (101, -1.0),  # beyond
        (10_000, -1.0),
    ],
)
def test_dapo_regions_and_boundaries(length, expected):
    assert dapo_overlong_penalty(length, 100, 20) == pytest.approx(expected)


def test_dapo_paper_setting():
    # 16384 expected tokens plus a 4096-token punish cache.
    assert dapo_overlong_penalty(16_384, 20_480, 4_096) == 0.0
    assert dapo_overlong_penalty(18_432, 20_480, 4_096) == pytest.approx(-0.5)
    assert dapo_overlong_penalty(20_481, 20_480, 4_096) == -1.0


def test_dapo_edge_caches():
    assert dapo_overlong_penalty(100, 100, 0) == 0.0  # no soft region: a hard cliff
    assert dapo_overlong_penalty(101, 100, 0) == -1.0
    assert dapo_overlong_penalty(0, 100, 100) == 0.0  # the whole budget is soft
    assert dapo_overlong_penalty(50, 100, 100) == pytest.approx(-0.5)


@pytest.mark.parametrize(
    ("length", "max_length", "cache_length"),
    [(10, 0, 0), (10, -100, 10), (10, 100, -1), (10, 100, 101), (-1, 100, 20)],
)
def test_dapo_rejects_bad_arguments(length, max_length, cache_length):
    with pytest.raises(ValueError):
        dapo_overlong_penalty(length, max_length, cache_length)
