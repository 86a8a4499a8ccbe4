"""JSON Lines files that long jobs append to and resume from.

Every record is written whole and flushed at once, so a job killed at any moment leaves at most
one torn last line; `read_records` drops it (and `RecordWriter` cuts it off) so the job resumes
from the last complete record without losing or duplicating one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tts.errors import TTSError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line is a one-line error."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise TTSError(f"cannot read {path}: {error.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise TTSError(f"{path}, line {number}: not valid JSON ({error})") from None
            if not isinstance(record, dict):
                raise TTSError(f"{path}, line {number}: expected a JSON object")
            yield number, record


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of a results file this project wrote, ignoring a torn last line."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [orjson.loads(line) for line in complete.splitlines() if line.strip()]


class RecordWriter:
    """Appends records to a JSON Lines file, one flushed line each."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("ab")
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self._handle.truncate(data.rfind(b"\n") + 1)

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
