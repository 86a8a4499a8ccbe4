"""Choosing the final answer among scored candidates: best, weighted, or majority.

Pure functions over `Candidate`s, shared by every strategy, as in the Hugging Face
search-and-learn study (naive, weighted and majority selection from the same candidates).
"""

from __future__ import annotations

from typing import Literal

from tts.search.base import Candidate
from tts.verifiers import math_equal

Selection = Literal["best", "weighted", "majority"]


def vote(answers: list[str | None]) -> list[list[int]]:
    """Clusters of equivalent answers as lists of indices, largest first (ties: earliest first).

    Missing answers (None) vote for nothing. Each answer joins the first cluster whose first
    member it equals, so the result does not depend on how equality chains.
    """
    clusters: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for cluster in clusters:
            head = answers[cluster[0]]
            if same_answer(answer, head):
                cluster.append(i)
                break
        else:
            clusters.append([i])
    return sorted(clusters, key=len, reverse=True)  # stable: ties keep first-seen order


def same_answer(a: str, b: str) -> bool:
    """Whether two extracted answers say the same (exact text first, then math-verify)."""
    return a == b or math_equal(a, b)


def select(candidates: list[Candidate], how: Selection) -> Candidate | None:
    """The chosen candidate, or None when there are none.

    best: the highest score (ties: earliest). weighted: the answer whose candidates' scores sum
    highest (Li et al., 2023, "Making Large Language Models Better Reasoners with Step-Aware
    Verifier"), then its best-scored candidate. majority: the most common answer, then its
    best-scored candidate. Candidates without an answer count only for "best".
    """
    if not candidates:
        return None
    if how == "best":
        return max(candidates, key=lambda c: _score(c))
    clusters = vote([c.answer for c in candidates])
    if not clusters:
        return max(candidates, key=lambda c: _score(c))
    if how == "weighted":
        cluster = max(clusters, key=lambda indices: sum(_score(candidates[i]) for i in indices))
    elif how == "majority":
        cluster = clusters[0]
    else:
        raise ValueError(f"unknown selection {how!r}; choose best, weighted or majority")
    return max((candidates[i] for i in cluster), key=lambda c: _score(c))


def _score(candidate: Candidate) -> float:
    return candidate.score if candidate.score is not None else 0.0
