"""A problem with a verifiable final answer: what every dataset loader and synthetic task yields,
and what every bench row and data job solves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One problem with a verifiable final answer; metadata keeps the source's other fields."""

    id: str
    problem: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)
