"""The SFT filters and the choice of what to keep, and the pairing rule of `tts data pairs`."""

from __future__ import annotations

import random

import pytest

from tts.data.filters import choose, has_think_block, jaccard, repetition_rate, shingles
from tts.data.pairs import PairsConfig, pick_pairs


def test_repetition_rate_is_zero_for_fresh_text_and_high_for_a_loop():
    assert repetition_rate(list(range(100)), ngram_size=4) == 0.0
    loop = [1, 2, 3, 4, 5] * 20
    assert repetition_rate(loop, ngram_size=4) > 0.9
    assert repetition_rate([1, 2, 3], ngram_size=4) == 0.0  # shorter than one n-gram


def test_think_block_needs_one_closed_block_then_an_answer():
    assert has_think_block("<think>\n2 + 2 = 4\n</think>\n\nThe answer is \\boxed{4}.")
    assert not has_think_block("2 + 2 = 4. The answer is \\boxed{4}.")
    assert not has_think_block("<think>\n2 + 2 = 4\n</think>\n\nSo four.")
    assert not has_think_block("<think>\n2 + 2 = 4, \\boxed{4}")


def test_near_duplicates_share_most_word_ngrams():
    steps = "6 * 8 = 48, leaving 4 + 4 - 6 + 48. 4 + 4 = 8, leaving 8 - 6 + 48. 8 - 6 = 2, "
    a = steps + "leaving 2 + 48. 2 + 48 = 50, leaving 50. The answer is \\boxed{50}."
    b = steps + "leaving 2 + 48. 2 + 48 = 50, leaving 50. So the answer is \\boxed{50}."
    c = "Multiply first: six eights are 48; then 4 + 4 - 6 = 2, and 2 + 48 is \\boxed{50}."
    assert jaccard(shingles(a), shingles(b)) > 0.8
    assert jaccard(shingles(a), shingles(c)) < 0.2
    assert jaccard(shingles("two words"), shingles("two words")) == 1.0


def test_choose_shortest_random_and_diverse():
    lengths = [30, 10, 20, 10]
    texts = ["alpha beta gamma delta eps", "alpha beta gamma delta", "x y z w v", "alpha beta g d"]
    sets = [shingles(t, size=2) for t in texts]
    rng = random.Random(0)
    assert choose(lengths, sets, 2, "shortest", rng) == [1, 3]
    assert choose(lengths, sets, 9, "shortest", rng) == [0, 1, 2, 3]
    drawn = choose(lengths, sets, 2, "random", random.Random(1))
    assert drawn == choose(lengths, sets, 2, "random", random.Random(1)) and len(set(drawn)) == 2
    # Diverse starts from the shortest (1) and then takes the text least like it (2), not its
    # near copy (0) or the other short one (3).
    assert choose(lengths, sets, 2, "diverse", rng) == [1, 2]
    with pytest.raises(ValueError, match="unknown keep rule"):
        choose(lengths, sets, 1, "longest", rng)


def config(**options) -> PairsConfig:
    return PairsConfig(out="unused.jsonl", **options)


def test_pairs_take_the_shortest_correct_against_longer_or_incorrect():
    lengths = [50, 20, 35, 90, 40, 20]
    correct = [True, True, True, False, False, True]
    finished = [True, True, True, True, True, False]  # the last one was cut off: never chosen
    texts = ["a", "b", "c", "d", "e", "f"]
    # 0 is correct and 2.5x longer; 2 (1.75x) is too; 3 and 4 are incorrect.
    assert pick_pairs(lengths, correct, finished, texts, config(pairs_per_problem=9)) == (
        1,
        [3, 0, 4, 2],
    )
    assert pick_pairs(lengths, correct, finished, texts, config()) == (1, [3])
    only_longer = config(rejected="longer", pairs_per_problem=9, min_ratio=2.0)
    assert pick_pairs(lengths, correct, finished, texts, only_longer) == (1, [0])
    only_wrong = config(rejected="incorrect", pairs_per_problem=9)
    assert pick_pairs(lengths, correct, finished, texts, only_wrong) == (1, [3, 4])
    assert pick_pairs(lengths, [False] * 6, finished, texts, config()) == (None, [])


def test_pairs_never_reject_the_chosen_text():
    chosen, rejected = pick_pairs([10, 30], [True, False], [True, True], ["same", "same"], config())
    assert (chosen, rejected) == (0, [])
