"""Where a job's records go, and how the next run knows which units are done and with what
settings.

A ledger pins the settings its records are valid for with the first unit it commits, refuses a
later run with other settings (one line naming what changed), and on resume returns the units
already done, so that a job stopped at any moment and run again with the same command ends with
the same records as an uninterrupted run, none lost, none twice. Records are appended whole and
flushed one by one (`tts.data.jsonl`: a torn last line is dropped). Two layouts:

- `ProgressLedger` (the `tts data` commands, whose units write any number of records): the
  records in `OUT`, and `OUT.progress.jsonl` beside it, which starts with the job and its
  settings and then gets one line per finished unit, written after its records, with its
  statistics. A unit is done once its progress line is written; resuming drops from `OUT` the
  records of units that never got one (a kill between the two writes).
- `RowLedger` (`tts bench`, whose units write exactly one row each): the rows in
  `OUT/results.jsonl`, each row its own mark of a finished unit, and the settings in
  `OUT/run.json`. One folder holds the rows of several runs (strategies) with the same settings;
  `unit_of` says which rows are this run's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Protocol

import orjson

from tts.data.jsonl import RecordWriter, read_records
from tts.data.units import UnitOutput
from tts.errors import TTSError


class Ledger(Protocol):
    """`resume` before anything runs; then, within `with ledger:`, `commit` per finished unit."""

    def resume(self) -> dict[Hashable, Any]:
        """The statistics of every unit already done, by key."""
        ...

    def commit(self, key: Hashable, output: UnitOutput) -> None: ...
    def __enter__(self) -> Ledger: ...
    def __exit__(self, *exc: object) -> None: ...


def check_settings(
    where: Path, wanted: dict[str, Any], pinned: dict[str, Any] | None, pin_file: Path
) -> None:
    """Refuse to add to `where`, which holds records, unless they were written with the
    settings `wanted` (`pinned`, read from `pin_file`; None when it holds none). A changed `job`
    is named alone: another command's settings are not comparable."""
    if pinned is None:
        raise TTSError(
            f"{where} holds records but no {pin_file.name} beside it, so they were not written "
            "by this command; use another --out or remove it"
        )
    if wanted.get("job") != pinned.get("job"):
        changed = [f"job {pinned.get('job')!r}"]
    else:
        changed = sorted(k for k in wanted.keys() | pinned.keys() if wanted.get(k) != pinned.get(k))
    if changed:
        raise TTSError(
            f"{where} was written with other settings ({', '.join(changed)}); "
            "use another --out or the same settings"
        )


class ProgressLedger:
    """Records in `records`, a progress line per finished unit in `progress` (see the module
    docstring); `unit_of` names the unit a record came from."""

    def __init__(
        self,
        records: Path,
        progress: Path,
        job: str,
        settings: dict[str, Any],
        unit_of: Callable[[dict[str, Any]], Hashable],
    ) -> None:
        self.records, self.progress, self.unit_of = records, progress, unit_of
        self.header = {"job": job, "settings": settings}
        self.pinned = False

    def resume(self) -> dict[Hashable, Any]:
        entries = read_records(self.progress)
        records = read_records(self.records)
        if not entries and not records:
            return {}
        header, *finished = entries or [None]
        pinned = (
            None if header is None else {"job": header.get("job"), **header.get("settings", {})}
        )
        wanted = {"job": self.header["job"], **self.header["settings"]}
        check_settings(self.records, wanted, pinned, self.progress)
        self.pinned = True
        done = {entry["problem_id"]: entry["stats"] for entry in finished}
        kept = [record for record in records if self.unit_of(record) in done]
        if len(kept) != len(records):
            temporary = self.records.with_name(self.records.name + ".tmp")
            temporary.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in kept))
            os.replace(temporary, self.records)
        return done

    def __enter__(self) -> ProgressLedger:
        if not self.pinned:
            self.records.unlink(missing_ok=True)  # at most a torn line of a run that wrote none
        self._records = RecordWriter(self.records)
        self._progress = RecordWriter(self.progress)
        return self

    def commit(self, key: Hashable, output: UnitOutput) -> None:
        # Pinned with the first finished unit, so a run that fails to start (a mistyped model
        # folder) leaves nothing that would refuse the corrected command.
        if not self.pinned:
            self._progress.write(self.header)
            self.pinned = True
        for record in output.records:
            self._records.write(record)
        self._progress.write({"problem_id": key, "stats": output.stats})

    def __exit__(self, *exc: object) -> None:
        self._records.close()
        self._progress.close()


class RowLedger:
    """One row per unit in `records`, the settings in `settings_file` (see the module
    docstring); `unit_of` names the unit a row came from, None for another run's rows. A unit's
    statistics are its row."""

    def __init__(
        self,
        records: Path,
        settings_file: Path,
        settings: dict[str, Any],
        unit_of: Callable[[dict[str, Any]], Hashable | None],
    ) -> None:
        self.records, self.settings_file, self.unit_of = records, settings_file, unit_of
        self.settings = settings
        self.pinned = False

    def resume(self) -> dict[Hashable, Any]:
        rows = read_records(self.records)
        if not rows:
            return {}
        exists = self.settings_file.exists()
        pinned = orjson.loads(self.settings_file.read_bytes()) if exists else None
        check_settings(self.records, self.settings, pinned, self.settings_file)
        self.pinned = True
        return {key: row for row in rows if (key := self.unit_of(row)) is not None}

    def __enter__(self) -> RowLedger:
        self._rows = RecordWriter(self.records)
        return self

    def commit(self, key: Hashable, output: UnitOutput) -> None:
        if not self.pinned:  # with the first row, as `ProgressLedger` pins its settings
            temporary = self.settings_file.with_name(self.settings_file.name + ".tmp")
            temporary.write_bytes(orjson.dumps(self.settings, option=orjson.OPT_INDENT_2))
            os.replace(temporary, self.settings_file)
            self.pinned = True
        (row,) = output.records
        self._rows.write(row)

    def __exit__(self, *exc: object) -> None:
        self._rows.close()
