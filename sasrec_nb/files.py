"""Writing files so that an interruption never leaves a half-written one behind.

Every file the package writes (checkpoints, histories, results JSON, extracted data) is written to a
temporary name in the same folder and renamed into place (``os.replace`` is atomic on POSIX and on
Windows): a reader sees the old file or the new one, never a truncated mix.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed to ``path`` when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: dict) -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path, what: str = "results file") -> dict:
    """A JSON object from ``path``; a corrupt or truncated file raises an error that names it."""
    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable {what} ({e}): it is corrupt or was cut short; "
                         "delete it and redo the run that writes it") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a JSON {type(obj).__name__}, not the object a {what} holds; "
                         "delete it and redo the run that writes it")
    return obj
