"""The checkpoint that makes a backfill resumable: ``OUT.state.json``.

A backfill writes its rows in input order and, every second or so, makes them durable and
records how far it got:

1. the output and the errors file are flushed and fsync-ed (a Parquet output writes its
   buffered rows as one more part file, fsync-ed);
2. the state is written to ``OUT.state.json.tmp``, fsync-ed, and renamed over
   ``OUT.state.json`` (then the folder is fsync-ed): the rename is atomic, so the state on disk
   is always one complete checkpoint, the old one or the new one.

The state holds the job (what was asked: input, model, columns...), what the first run resolved
(a topic range's offsets), the number of input rows done, the byte size (or part count) of the
output and of the errors file at that moment, and the input position just past the last row
done. Whatever was written after the last checkpoint (a kill -9 lands anywhere) is cut off on
resume: the files are truncated to the recorded sizes, surplus parts deleted, and the input read
again from the recorded position. So every row is written exactly once.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from streams.errors import KinferError

#: Bumped when the state's meaning changes; an older state is refused, never misread.
STATE_FORMAT: Final = 1


class StateError(KinferError):
    """A state file that cannot be used to resume (unreadable, another job's)."""


@dataclass
class BackfillState:
    """How far a backfill got; saved at each checkpoint (see the module docstring)."""

    #: what was asked; a resume must ask the same
    job: dict[str, Any]
    #: what the first run resolved and later runs reuse (a topic range's offsets)
    plan: dict[str, Any] = field(default_factory=dict)
    rows_done: int = 0
    outputs: int = 0
    errors: int = 0
    #: the input position just past the last row done (None: the beginning)
    source_position: Any = None
    #: the output's durable size: bytes (JSONL) or part files (Parquet)
    output_position: Any = None
    errors_position: Any = None
    #: progress-bar units done (input bytes, rows or records)
    progress: int = 0
    #: seconds spent by every run so far
    elapsed_s: float = 0.0
    complete: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps({"format": STATE_FORMAT, **asdict(self)}, option=orjson.OPT_INDENT_2)


def beside(output: Path, suffix: str) -> Path:
    """A file next to ``output`` named for it: ``beside(Path("out.jsonl"), ".state.json")`` is
    ``out.state.json``."""
    return output.with_name(output.with_suffix("").name + suffix)


def state_path(output: Path) -> Path:
    """Where the state of the backfill writing ``output`` lives: ``OUT.state.json``."""
    return beside(output, ".state.json")


def load_state(path: Path) -> BackfillState | None:
    """The state saved at ``path``, or None if there is none; StateError if it is unusable."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StateError(f"cannot read the backfill state {path}: {exc}") from None
    if not isinstance(data, dict) or data.pop("format", None) != STATE_FORMAT:
        raise StateError(f"{path} is not a backfill state of this kinfer version")
    try:
        return BackfillState(**data)
    except TypeError as exc:
        raise StateError(f"{path} is not a backfill state of this kinfer version: {exc}") from None


def save_state(path: Path, state: BackfillState) -> None:
    """Write ``state`` to ``path`` atomically and durably (tmp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        file.write(state.to_json())
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so that renames and new files in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse to fsync a folder
            os.fsync(fd)
    finally:
        os.close(fd)
