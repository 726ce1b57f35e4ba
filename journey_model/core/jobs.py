"""The on-disk bookkeeping of a resumable job: an output folder filled part by part, safe to kill at any time.

`journey prepare` and `journey score` (local engine) both write many parts into one folder and must survive
an interruption without leaving a folder that looks complete but is not, and without redoing finished
work. :class:`ResumableJob` holds the mechanism they share; what to compute, and when to refuse a folder,
stays with each job. The layout of ``OUT``:

* ``OUT/_work/<state file>`` — the job's state, stamped with the job's fingerprint: a resumed run with the
  same fingerprint continues from it, any other run starts afresh (or is refused, as the job decides);
* ``OUT/_work/done-NNNNN.json`` — one marker per finished part, written after the part is published, with
  whatever the job needs to report that part again without redoing it;
* the parts themselves, each written atomically (:mod:`journey_model.core.files`);
* ``OUT/<manifest>`` — written last, stamped with the fingerprint: a folder with a manifest is whole. The
  work folder is removed after it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from journey_model.core.files import remove_stale_temporaries, write_json_atomic

WORK_DIR = "_work"
PART_PATTERN = "part-*.parquet"
FINGERPRINT = "fingerprint"  # the key that stamps the state file and the manifest


class ResumableJob:
    """The output folder ``out`` of one job, identified by ``fingerprint`` (same inputs -> same value).

    ``part_folders`` (relative to ``out``) are where the job publishes its parts, named like
    ``part_pattern``; a resumed run clears the temporaries an interrupted one left of them (and of the
    manifest), leaving anything else in ``out`` alone.
    """

    def __init__(self, out: str | Path, fingerprint: str, *, state_file: str, manifest_file: str,
                 part_folders: tuple[str, ...] = (".",), part_pattern: str = PART_PATTERN,
                 work_dir: str = WORK_DIR) -> None:
        self.out = Path(out)
        self.fingerprint = fingerprint
        self.work = self.out / work_dir
        self.state_file = self.work / state_file
        self.manifest_file = self.out / manifest_file
        self.part_folders = [self.out / folder for folder in part_folders]
        self.part_pattern = part_pattern

    # ---- the state of an unfinished run
    def saved_state(self) -> dict[str, Any] | None:
        """The state file of whichever job last worked here, if any."""
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else None

    def holds_other_job(self) -> bool:
        """An unfinished run of another job (another fingerprint) is in this folder."""
        saved = self.saved_state()
        return saved is not None and saved.get(FINGERPRINT) != self.fingerprint

    def resume(self) -> dict[str, Any] | None:
        """The saved state of an interrupted run of this same job, or None.

        Its stale temporaries are removed first: a killed process could not, and the resumed one writes
        under its own names.
        """
        saved = self.saved_state()
        if saved is None or saved.get(FINGERPRINT) != self.fingerprint:
            return None
        self._remove_stale_temporaries()
        return saved

    def save_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Write ``state`` (stamped with the fingerprint) atomically; returns what was written."""
        state = {FINGERPRINT: self.fingerprint, **state}
        write_json_atomic(self.state_file, state)
        return state

    def reset(self, *outputs: Path) -> None:
        """Start afresh: remove ``outputs`` (files or folders), the manifest, the work folder and the
        temporaries in the part folders; leave an empty work folder. Nothing else in ``out`` is touched."""
        for path in (*outputs, self.manifest_file):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self._remove_stale_temporaries()
        self.work.mkdir(parents=True)

    def _remove_stale_temporaries(self) -> None:
        remove_stale_temporaries(self.work)  # the work folder is the job's alone
        remove_stale_temporaries(self.out, self.manifest_file.name)
        for folder in self.part_folders:
            remove_stale_temporaries(folder, self.part_pattern)

    # ---- parts
    def done_file(self, part: int) -> Path:
        return self.work / f"done-{part:05d}.json"

    def done(self, part: int) -> dict[str, Any] | None:
        """What :meth:`mark_done` recorded for ``part``, or None when it is not done."""
        path = self.done_file(part)
        return json.loads(path.read_text()) if path.exists() else None

    def mark_done(self, part: int, record: dict[str, Any]) -> None:
        """Record ``part`` as finished — only after its outputs are published, so a marker never lies."""
        write_json_atomic(self.done_file(part), record)

    # ---- the finished folder
    def is_complete(self) -> bool:
        """A manifest is present: some job finished here (see :meth:`complete_manifest` for which)."""
        return self.manifest_file.exists()

    def complete_manifest(self) -> dict[str, Any] | None:
        """The manifest, when this same job already finished here; else None."""
        if not self.manifest_file.exists():
            return None
        manifest = json.loads(self.manifest_file.read_text())
        return manifest if manifest.get(FINGERPRINT) == self.fingerprint else None

    def finish(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (stamped with the fingerprint) last, then drop the work folder."""
        write_json_atomic(self.manifest_file, {**manifest, FINGERPRINT: self.fingerprint})
        shutil.rmtree(self.work, ignore_errors=True)


__all__ = ["PART_PATTERN", "WORK_DIR", "ResumableJob"]
