"""Hand freed heap memory back to the operating system during training (glibc's ``malloc_trim``).

Why: on CPU, PyTorch allocates tensors with the C library's ``malloc``. glibc serves a large
request from its heap once an mmapped block of that size has been freed (its mmap threshold
rises, up to 32 MB), and a heap region whose free space is split by smaller blocks still alive
is never returned. Batches of varying length ask for slightly different sizes every step, and
evaluation walks the val set from short to long trials, each batch a little larger than the
last: the freed space is rarely reused whole, so the resident set climbs from epoch to epoch
although the tensors alive at any moment do not grow.

:class:`HeapReleaser` trims the heap when the resident set has grown by ``growth_mb`` since the
last trim (one read of ``/proc/self/statm`` per call otherwise). Trimming after every step bounds
memory as well but costs time: the released pages fault in again on the next step.
Measured with ``python benchmarks/training_scale.py --only memory`` (MODE-SSM small, CTC only,
bench, batch 16, peak RSS after epochs 1 / 2 / 3, one thread): no trimming 3740 / 4444 / 5371 MB
at 179 / 171 / 180 s per epoch; a trim after every step and evaluation batch 1758 / 1789 / 1789 MB
at 204 / 203 / 211 s (the default, ``training.release_heap_mb=0``). Re-measured in one session on
2026-12-06 (same command): every step 2128 / 2295 / 2295 MB at 113 / 112 / 121 s; a 512 MB growth
threshold 2732 / 2853 / 3041 MB at 106 / 102 / 107 s, so a threshold buys ~9% of epoch time (more
with two threads) for a higher and still slowly rising peak. A fixed low mmap threshold
(``mallopt(M_MMAP_THRESHOLD)``) bounds memory too but made steps about 2x slower (every large
tensor a fresh mmap).

Where the C library has no ``malloc_trim`` (macOS, musl) nothing is trimmed and
:func:`heap_release_available` says so, for the caller to report.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def heap_release_available() -> bool:
    """Whether this C library can return freed heap memory (glibc's malloc_trim)."""
    return _malloc_trim() is not None


def release_heap() -> bool:
    """Return the heap's free memory to the OS; True if some was released. A no-op where unavailable."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def resident_mb() -> float | None:
    """This process's resident set now (not its peak), in MB; None where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class HeapReleaser:
    """Call after each batch: trims the heap once the resident set has grown ``growth_mb`` above its floor.

    The floor is the lowest resident set seen since the last trim, counted from the first call after
    it (when the next batch has faulted its working set in again), so the threshold measures what
    freed-but-kept memory adds, not the working set of one step.

    ``growth_mb=None`` never trims (``training.release_heap_mb=null``); ``0`` trims at every call.
    """

    def __init__(self, growth_mb: float | None = 0.0):
        if growth_mb is not None and growth_mb < 0:
            raise ValueError(f"growth_mb must be >= 0 or None, got {growth_mb}")
        self.growth_mb = growth_mb if heap_release_available() else None
        self.floor_mb: float | None = resident_mb()
        self.trims = 0

    def __call__(self) -> bool:
        if self.growth_mb is None:
            return False
        now = resident_mb() if self.growth_mb > 0 else None
        if self.growth_mb > 0:
            if now is None:
                return False
            if self.floor_mb is None:  # first call after a trim: the working set has faulted in again
                self.floor_mb = now
                return False
            if now < self.floor_mb + self.growth_mb:
                self.floor_mb = min(self.floor_mb, now)
                return False
        release_heap()
        self.trims += 1
        # the next call sets the floor: measured right after the trim it would sit below the pages the
        # next step faults in again, and a step whose working set exceeds growth_mb would trim every time
        self.floor_mb = None
        return True
