"""Atomic file writes: every file the project publishes appears whole or not at all.

A file is written under a hidden temporary name beside its final path (``.NAME.<pid>.tmp``: same folder,
so the rename is atomic; the pid keeps two processes that write the same file from writing into one
temporary) and renamed onto the final path with ``os.replace`` only once it is complete. A reader — or a
job resuming after a crash — therefore never sees a half-written file under a real name.

* :func:`atomic_path` — a ``with`` block around a write that happens in one place;
* :class:`StagedFile` — the same for a writer that stays open across calls (streamed Parquet parts);
* :func:`write_text_atomic`, :func:`write_bytes_atomic`, :func:`write_json_atomic` — the common cases;
* :func:`remove_stale_temporaries` — clears what a killed process left behind (a killed process cannot
  delete its temporary, and the next one has another pid);
* :func:`reading` — around a read: a corrupt, truncated or unreadable file becomes one
  :class:`FileReadError` that names the file (Arrow's and zlib's own messages do not).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

TEMPORARY_SUFFIX = ".tmp"
TEMPORARY_GLOB = ".*" + TEMPORARY_SUFFIX  # every temporary that temporary_path names


def temporary_path(path: str | Path) -> Path:
    """The hidden temporary sibling a write of ``path`` goes to: ``.NAME.<pid>.tmp`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


class StagedFile:
    """A file being written under :func:`temporary_path` until :meth:`commit` renames it onto ``path``.

    For writers that outlive one function call; :func:`atomic_path` is the ``with``-block form.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.temporary = temporary_path(self.path)

    def commit(self) -> Path:
        """Publish the finished temporary under its final name (replacing any older file there)."""
        os.replace(self.temporary, self.path)
        return self.path

    def discard(self) -> None:
        """Drop the temporary (a failed write); the final path is left as it was."""
        self.temporary.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield the temporary path to write; on success rename it onto ``path``, on error delete it.

    The final path is untouched until the block ends without an error, so an older version of the file (or
    no file) stays in place when the write fails or the process dies.
    """
    staged = StagedFile(path)
    try:
        yield staged.temporary
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; values JSON cannot hold (dates, paths) become strings."""
    return write_text_atomic(path, json.dumps(data, indent=indent, default=str))


def remove_stale_temporaries(folder: str | Path, *names: str) -> int:
    """Delete temporaries directly in ``folder``; returns how many were removed.

    With ``names`` (file names or glob patterns such as ``part-*.parquet``) only the temporaries of those
    files go — for a folder that may hold other people's files; without, every ``.*.tmp``. Either way only
    when the caller owns those files at that moment (a job starting or resuming there): a temporary that a
    live process is still writing would be removed too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    # ".NAME.*tmp" matches temporary_path's ".NAME.<pid>.tmp" and the pid-less ".NAME.tmp" of older versions.
    patterns = [f".{name}.*{TEMPORARY_SUFFIX[1:]}" for name in names] or [TEMPORARY_GLOB]
    removed = 0
    for pattern in patterns:
        for temporary in folder.glob(pattern):
            if temporary.is_file():
                temporary.unlink(missing_ok=True)
                removed += 1
    return removed


class FileReadError(ValueError):
    """A file that cannot be read (corrupt, truncated, unreadable); the message names the file."""


# What reading a damaged file raises: I/O and decompression errors (a truncated .gz: EOFError or zlib.error),
# Arrow's errors (a corrupt Parquet page: ArrowInvalid, OSError) and values a corrupt page decodes to that
# overflow later conversions (OverflowError).
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, OverflowError, UnicodeDecodeError, zlib.error,
                                                pa.ArrowException)


def read_error_message(path: str | Path, error: BaseException, what: str = "read") -> str:
    """``"PATH: cannot read: <what went wrong>"`` on one line."""
    detail = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and not isinstance(error, pa.ArrowException) and error.strerror:
        detail = error.strerror  # the path is named in front already
    return f"{path}: cannot {what} ({type(error).__name__}: {detail}); is the file corrupt or truncated?"


@contextmanager
def reading(path: str | Path, what: str = "read") -> Iterator[None]:
    """Turn an error of reading ``path`` inside the block into a :class:`FileReadError` naming ``path``.

    Errors that already carry a clear message (every other ``ValueError``, ``FileReadError`` itself) pass
    unchanged; ``what`` says what was being done (``"read the Parquet file"``).
    """
    try:
        yield
    except FileReadError:
        raise
    except READ_ERRORS as error:
        if isinstance(error, FileNotFoundError):
            raise FileReadError(f"{path}: no such file") from error
        raise FileReadError(read_error_message(path, error, what)) from error


def unpickling_error_reason(error: BaseException) -> str:
    """The line of a ``torch.load(weights_only=True)`` failure that says what was wrong (the global it refused,
    the damage it found), without torch's advice to retry with ``weights_only=False``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))]
    line = (useful or lines or [""])[0].split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


__all__ = ["READ_ERRORS", "FileReadError", "StagedFile", "atomic_path", "read_error_message", "reading",
           "remove_stale_temporaries", "temporary_path", "unpickling_error_reason", "write_bytes_atomic",
           "write_json_atomic", "write_text_atomic"]
