"""Freed heap memory goes back to the OS (runtime/memory.py): what keeps training's RSS flat."""

from __future__ import annotations

import ctypes

import pytest

from mode_ssm.runtime.memory import HeapReleaser, heap_release_available, release_heap, resident_mb


@pytest.mark.skipif(not heap_release_available(), reason="malloc_trim is glibc's")
@pytest.mark.parametrize("how", ["release_heap", "releaser"])
def test_freed_memory_that_live_blocks_pin_in_the_heap_goes_back_to_the_os(how):
    # 3000 blocks of 64 KB (below glibc's mmap threshold: served from the heap), each followed by a
    # small block that stays alive, so free() alone cannot shrink the heap: the pattern of tensors
    # of varying size freed between batches while small objects live on
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD fixed at 1 MB: the 64 KB blocks below come from the heap
    releaser = HeapReleaser(100.0)  # its floor: the resident set now
    big, keep = [], []
    for _ in range(3000):
        block = libc.malloc(64 * 1024)
        ctypes.memset(block, 1, 64 * 1024)  # touched: resident
        big.append(block)
        keep.append(libc.malloc(64))
    allocated = resident_mb()
    for block in big:
        libc.free(block)
    freed = resident_mb()
    if allocated - freed > 60:  # seen when other tests ran first in the process (allocator state): nothing to test
        pytest.skip(f"free() returned {allocated - freed:.0f} MB by itself in this process")
    if how == "release_heap":
        assert release_heap() is True
    else:  # the resident set grew by ~190 MB since the releaser was made: above its 100 MB
        assert releaser() is True and releaser.trims == 1
        assert releaser() is False  # nothing has grown since: no second trim
    trimmed = resident_mb()
    assert freed - trimmed > 150  # of the 187.5 MB freed
    for block in keep:
        libc.free(block)
    assert release_heap() in (True, False)  # nothing left to release is not an error


def test_heap_releaser_thresholds():
    assert HeapReleaser(None)() is False  # never trims
    every = HeapReleaser(0.0)
    assert [every() for _ in range(3)] == [heap_release_available()] * 3 and every.trims == 3 * heap_release_available()
    with pytest.raises(ValueError, match="growth_mb"):
        HeapReleaser(-1.0)


def test_the_threshold_counts_growth_above_the_working_set_not_above_the_trimmed_heap(monkeypatch):
    # after a trim the next step faults its working set in again: that is the new floor, so a step
    # larger than the threshold does not trim at every call (it did when the floor was taken right
    # after the trim), while growth on top of it still trims
    from mode_ssm.runtime import memory

    rss = iter([1000, 1400, 1600, 1550, 1900, 2100, 1560, 1500, 2050])
    monkeypatch.setattr(memory, "resident_mb", lambda: float(next(rss)))
    monkeypatch.setattr(memory, "heap_release_available", lambda: True)
    trimmed = []
    monkeypatch.setattr(memory, "release_heap", lambda: trimmed.append(1) or True)
    releaser = memory.HeapReleaser(500.0)  # floor 1000
    calls = [releaser() for _ in range(8)]
    # 1400 < 1500; 1600 trims; 1550 is the new floor; 1900 < 2050; 2100 trims; 1560 floor; 1500 lowers
    # it; 2050 >= 1500 + 500 trims
    assert calls == [False, True, False, False, True, False, False, True]
    assert releaser.trims == len(trimmed) == 3
