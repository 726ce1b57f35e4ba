"""Content fingerprints: short, stable hex digests that say whether two things are the same.

* :func:`fingerprint` — of a JSON-able value (a config, a job's facts, an artifact): sha256 of its
  canonical JSON. Job folders store it to recognise their own unfinished run; artifacts store it as their
  content hash. Changing the recipe changes every stored value, so it is written once, here.
* :func:`file_digest` — of file contents (the event files a preprocessor was fitted on, a model bundle).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

READ_CHUNK = 1 << 22  # 4 MiB: files are hashed in chunks, never read whole into memory


def fingerprint(obj: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj`` as canonical JSON (keys sorted).

    Values JSON cannot hold are hashed as their ``str``; equal values give equal fingerprints on every run
    and machine.
    """
    canonical = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def file_digest(paths: Iterable[str | Path], *, with_names: bool = False, length: int | None = None) -> str:
    """The sha256 hex digest of the files' contents, in the order given (first ``length`` digits if set).

    ``with_names`` hashes each file's name before its bytes, so renaming an input changes the digest too.
    """
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        if with_names:
            digest.update(path.name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:length]


__all__ = ["file_digest", "fingerprint"]
