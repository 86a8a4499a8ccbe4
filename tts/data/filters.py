"""What makes a correct completion unfit for an SFT set, and which of the fit ones to keep.

Pure functions over texts and token ids, used by `tts data reject`. DeepSeek-R1 (DeepSeek-AI,
2025, Sec. 2.3.3) filtered its rejection-sampled reasoning data for mixed languages, long
paragraphs and code blocks and kept only correct samples; the long-CoT study of Yeo et al.
(2025) measures degenerate repetition with an n-gram repetition rate. Near duplicates are found
by the Jaccard similarity of word n-gram sets (Broder, 1997, "On the resemblance and containment
of documents"), the measure MinHash deduplication of pretraining corpora estimates; comparing a
handful of completions per problem exactly needs no MinHash.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from tts.verifiers.rewards import format_reward, repetition_penalty

KeepBy = Literal["shortest", "random", "diverse"]
SHINGLE_WORDS = 4  # words per n-gram for near-duplicate detection


def repetition_rate(token_ids: Sequence[int], ngram_size: int = 40) -> float:
    """The share of repeated n-grams, 1 - #unique n-grams / #n-grams (Yeo et al., 2025, App. C.2):
    0.0 for text that never repeats an n-gram, near 1.0 for a text stuck in a loop."""
    return -repetition_penalty(token_ids, ngram_size, max_penalty=-1.0)


def has_think_block(text: str) -> bool:
    """One closed `<think>...</think>` block, then an answer part with a final answer."""
    return format_reward(text) == 1.0


def normalized(text: str) -> str:
    """The text as exact-duplicate detection compares it: whitespace runs collapsed."""
    return " ".join(text.split())


def shingles(text: str, size: int = SHINGLE_WORDS) -> frozenset[tuple[str, ...]]:
    """The set of word n-grams of `text` (lowercased); a shorter text is one n-gram of all its
    words."""
    words = text.lower().split()
    if len(words) <= size:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + size]) for i in range(len(words) - size + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b|, 1.0 for two empty sets."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def choose(
    lengths: Sequence[int],
    shingle_sets: Sequence[frozenset],
    k: int,
    how: KeepBy,
    rng: random.Random,
) -> list[int]:
    """Indices of the (at most) `k` items to keep, in ascending order.

    shortest: the k fewest tokens (ties: earliest). random: k drawn uniformly with `rng`.
    diverse: farthest-point selection, starting from the shortest and then adding the item
    whose highest Jaccard similarity to those already kept is lowest, so the kept set spreads
    over different solutions rather than variants of one.
    """
    items = list(range(len(lengths)))
    if len(items) <= k:
        return items
    if how == "shortest":
        chosen = sorted(items, key=lambda i: (lengths[i], i))[:k]
    elif how == "random":
        chosen = rng.sample(items, k)
    elif how == "diverse":
        chosen = [min(items, key=lambda i: (lengths[i], i))]
        while len(chosen) < k:
            rest = [i for i in items if i not in chosen]
            chosen.append(
                min(
                    rest,
                    key=lambda i: max(jaccard(shingle_sets[i], shingle_sets[j]) for j in chosen),
                )
            )
    else:
        raise ValueError(f"unknown keep rule {how!r}; choose shortest, random or diverse")
    return sorted(chosen)
