"""Answer extraction, answer equivalence, rewards and reward-model scorers: pure functions and
small model wrappers that never import search, servers or train."""

from tts.verifiers.equal import is_correct, math_equal
from tts.verifiers.extract import extract_answer
from tts.verifiers.outcome import OutcomeScorer
from tts.verifiers.prm import load_scorer
from tts.verifiers.scorer import Aggregation, Scorer, aggregate, scorer_tokens

__all__ = [
    "Aggregation",
    "OutcomeScorer",
    "Scorer",
    "aggregate",
    "scorer_tokens",
    "extract_answer",
    "is_correct",
    "load_scorer",
    "math_equal",
]
