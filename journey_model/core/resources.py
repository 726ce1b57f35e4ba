"""What a process has used so far (peak memory), reported by the jobs that stream data; the allocator's tuning."""

from __future__ import annotations

import os
import resource
from collections.abc import MutableMapping


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# glibc's malloc, told to keep large freed buffers instead of returning them to the OS on every free (each new
# tensor buffer then costs page faults): ../shared/STACK_NOTES.md measured a matrix product at 14 ms without and
# 2 ms with these; benchmarks/bench_malloc.py a 3-epoch ATRank training process at 15.0 s and 13.6 s. glibc reads
# them once, at process start-up, so they help the processes started after they are set: `journey` puts them in
# the environment its own child processes inherit (DDP workers, batch-scoring workers, the API server).
MALLOC_TUNING = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
NO_MALLOC_TUNING_ENV = "JOURNEY_NO_MALLOC_TUNING"  # "1": leave the allocator's environment alone


def tune_malloc_for_children(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`MALLOC_TUNING` in ``environ`` (``os.environ``) where unset; return what was set.

    A value the user chose is kept, and ``JOURNEY_NO_MALLOC_TUNING=1`` turns this off.
    """
    environ = os.environ if environ is None else environ
    if environ.get(NO_MALLOC_TUNING_ENV, "").lower() in ("1", "true", "yes"):
        return {}
    added = {name: value for name, value in MALLOC_TUNING.items() if name not in environ}
    environ.update(added)
    return added
