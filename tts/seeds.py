"""Seeds derived from a run seed, so that a resumed or reordered run samples what an
uninterrupted one does."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int | None, *parts: object) -> int | None:
    """A seed for one part of a run (a problem, a node of a tree), the same whatever order the
    parts run in; None stays None (unseeded)."""
    if seed is None:
        return None
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
