"""Answer extraction, answer equivalence, rewards and reward-model scorers: pure functions and
small model wrappers that never import search, servers or train."""

from tts.verifiers.equal import math_equal
from tts.verifiers.extract import extract_answer
from tts.verifiers.scorer import Scorer

__all__ = ["Scorer", "extract_answer", "math_equal"]
