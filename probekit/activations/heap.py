"""Memory while extracting: the C heap keeps a batch's freed buffers for the next batch instead of handing them back
to the OS to be faulted in again (glibc; elsewhere nothing changes), and Python's cyclic collector is paused
(:func:`paused_gc`).

Every batch of a forward pass allocates the same buffers again (hidden states, attention and feed-forward
temporaries, up to tens of MB each). Each page glibc hands back to the OS is taken again by the next batch through a
page fault that zeroes it, CPU time taken from the forward pass (docs/design.md 23). So inside :func:`kept_heap`:

* buffers of up to 32 MiB come from the heap (``M_MMAP_THRESHOLD``, glibc's largest allowed value), not from fresh
  mappings, and the heap's free top is handed back only beyond 1 GiB (``M_TRIM_THRESHOLD``);
* :func:`trim_if_over` (called at a shard's end) hands the free heap back once it holds more than :data:`KEEP_FREE`,
  so what is kept stays bounded however long the corpus;
* leaving the outermost ``with`` hands all the free heap back, as extraction always did when it ended, and sets the
  trim threshold to 64 MiB: glibc cannot return to its own adaptive thresholds once they are set, and 64 MiB (twice
  the mmap threshold) is where those would stand after such buffers.

A malloc setting of the user's own (``MALLOC_*_`` variables, ``glibc.malloc`` tunables) is left alone: then this
module changes nothing.
"""
from __future__ import annotations

import ctypes
import gc
import os
import threading
from contextlib import contextmanager
from typing import Iterator

#: mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: buffers up to this size come from the heap while extracting (glibc refuses larger values)
MMAP_THRESHOLD = 32 * 2**20
#: the free top of the heap is handed back beyond this while extracting
TRIM_THRESHOLD = 2**30
#: the trim threshold left behind (glibc's own adaptive one stops at twice the mmap threshold)
TRIM_AFTER = 2 * MMAP_THRESHOLD
#: at most this much freed heap is kept at a shard's end (:func:`trim_if_over`)
KEEP_FREE = 2**30

_USER_VARS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]


_libc_cache: list = []


class _Outermost:
    """A setting held by nested ``with`` blocks, on any threads: ``on()`` runs when the first is entered, and
    ``off(what on returned)`` when the last is left (which may be another block, on another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._before = None

    @contextmanager
    def held(self, on, off) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._before = on()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    off(self._before)


_heap_kept, _gc_paused = _Outermost(), _Outermost()


def _libc():
    """glibc's malloc controls (``mallopt``, ``malloc_trim``; ``mallinfo2`` where glibc >= 2.33), or None."""
    if not _libc_cache:
        lib = None
        try:
            cand = ctypes.CDLL("libc.so.6")
            if hasattr(cand, "mallopt") and hasattr(cand, "malloc_trim"):
                lib = cand
                if hasattr(cand, "mallinfo2"):
                    cand.mallinfo2.restype = _MallInfo2
        except OSError:  # not glibc (macOS, musl, Windows)
            pass
        _libc_cache.append(lib)
    return _libc_cache[0]


def user_tuned() -> bool:
    """Whether the process was started with malloc settings of the user's own."""
    return any(v in os.environ for v in _USER_VARS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def _controls():
    return None if user_tuned() else _libc()


@contextmanager
def kept_heap() -> Iterator[None]:
    """Keep freed buffers in the heap for reuse inside the ``with`` (module docstring); nests and is thread-safe:
    the outermost ``with`` sets the thresholds and, on leaving, hands the free heap back."""
    lib = _controls()
    if lib is None:
        yield
        return

    def on():
        lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)

    def off(_):
        lib.malloc_trim(0)
        lib.mallopt(M_TRIM_THRESHOLD, TRIM_AFTER)

    with _heap_kept.held(on, off):
        yield


def free_heap_bytes() -> int | None:
    """Free bytes held in the heap (``mallinfo2().fordblks``), or None where glibc cannot say."""
    lib = _libc()
    if lib is None or not hasattr(lib, "mallinfo2"):
        return None
    return int(lib.mallinfo2().fordblks)


def trim_if_over(limit: int = KEEP_FREE) -> bool:
    """Hand the free heap back to the OS if it holds more than ``limit`` bytes (or if glibc cannot say how much);
    returns whether it did."""
    lib = _controls()
    if lib is None:
        return False
    free = free_heap_bytes()
    if free is not None and free <= limit:
        return False
    lib.malloc_trim(0)
    return True


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic collector off inside the ``with``; nests and is thread-safe: the outermost ``with`` turns it
    off and, on leaving, back on if it was on.

    Extraction makes few reference cycles but many long-lived objects (aligned sentences, shard arrays), so the
    collector's full passes over every object of the process (a loaded treebank holds hundreds of thousands) cost
    time and find nothing to free (docs/design.md 23). Reference counting still frees everything that is not in a
    cycle."""
    def on() -> bool:
        was_on = gc.isenabled()
        gc.disable()
        return was_on

    def off(was_on: bool) -> None:
        if was_on:
            gc.enable()

    with _gc_paused.held(on, off):
        yield
