"""The heap kept for reuse while extracting (probekit/activations/heap.py): which malloc settings it makes and
undoes, that it leaves a user's own settings alone, the bound at a shard's end, and, on glibc, that a batch's
buffers really are reused instead of being faulted in again."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probekit.activations import heap


class FakeLibc:
    def __init__(self, free=0, mallinfo=True):
        self.calls = []
        self.free = free
        if mallinfo:
            self.mallinfo2 = lambda: type("MI", (), {"fordblks": self.free})()

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def fake(monkeypatch):
    lib = FakeLibc()
    monkeypatch.setattr(heap, "_libc_cache", [lib])
    for v in heap._USER_VARS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(v, raising=False)
    return lib


SET = [("mallopt", heap.M_MMAP_THRESHOLD, 32 * 2**20), ("mallopt", heap.M_TRIM_THRESHOLD, 2**30)]
UNDO = [("malloc_trim", 0), ("mallopt", heap.M_TRIM_THRESHOLD, 64 * 2**20)]


def test_outermost_with_sets_and_undoes(fake):
    with heap.kept_heap():
        assert fake.calls == SET
        with heap.kept_heap():  # nested (a shard's batches inside the extraction): nothing more
            pass
        assert fake.calls == SET
    assert fake.calls == SET + UNDO
    with pytest.raises(RuntimeError):  # an error inside still hands the heap back
        with heap.kept_heap():
            raise RuntimeError("boom")
    assert fake.calls == (SET + UNDO) * 2


@pytest.mark.parametrize("var,value", [("MALLOC_TRIM_THRESHOLD_", "0"), ("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")])
def test_user_settings_are_left_alone(fake, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with heap.kept_heap():
        pass
    fake.free = 2**40
    assert not heap.trim_if_over()
    assert fake.calls == []


def test_other_tunables_do_not_count_as_malloc_settings(fake, monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2")
    with heap.kept_heap():
        pass
    assert fake.calls == SET + UNDO


def test_trim_only_over_the_bound(fake):
    fake.free = heap.KEEP_FREE
    assert not heap.trim_if_over() and fake.calls == []
    fake.free = heap.KEEP_FREE + 1
    assert heap.trim_if_over() and fake.calls == [("malloc_trim", 0)]


def test_without_mallinfo2_a_shard_end_trims(monkeypatch):
    lib = FakeLibc(mallinfo=False)
    monkeypatch.setattr(heap, "_libc_cache", [lib])
    assert heap.free_heap_bytes() is None
    assert heap.trim_if_over() and lib.calls == [("malloc_trim", 0)]


def test_without_glibc_nothing_happens(monkeypatch):
    monkeypatch.setattr(heap, "_libc_cache", [None])
    with heap.kept_heap():
        pass
    assert heap.free_heap_bytes() is None and not heap.trim_if_over()


def _thp_always() -> bool:
    p = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return p.is_file() and "[always]" in p.read_text()


#: a forward pass in miniature: per layer a 25 MiB feed-forward temporary is freed while the layer's 6 MiB hidden
#: state stays, on top of it; 20 rounds, then the minor page faults they took and the pages the heap holds (glibc
#: ``mallinfo2``: its arena and its mapped chunks)
LAYERS = """
import resource, sys
import torch
from probekit.activations import heap

def one_round():
    kept = []
    for _ in range(6):
        temporary = torch.empty(25 * 2**18, dtype=torch.float32).fill_(1.0)
        kept.append(torch.empty(6 * 2**18, dtype=torch.float32).fill_(1.0))
        del temporary
    del kept

def run():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        one_round()
    info = heap._libc().mallinfo2()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, (info.arena + info.hblkhd) // 4096

if sys.argv[1] == "kept":
    with heap.kept_heap():
        print(run())
else:
    print(run())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or _thp_always() or heap.free_heap_bytes() is None,
                    reason="glibc >= 2.33 on Linux with 4 KiB pages: page reuse is seen through minor faults")
def test_no_page_is_faulted_in_twice(monkeypatch):
    """In fresh processes: inside `kept_heap` the miniature forward pass above faults in no more pages than the
    heap holds at the end, so no page was handed back and taken again; under glibc's adaptive thresholds it faults
    the temporary's pages in again round after round (the measured counts: docs/design.md 23)."""
    for v in heap._USER_VARS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(v, raising=False)
    root = Path(__file__).resolve().parents[1]

    def faults_and_pages(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", LAYERS, mode], capture_output=True, text=True, check=True,
                             cwd=root, env={**os.environ, "PYTHONPATH": str(root)}).stdout
        return ast.literal_eval(out.strip().splitlines()[-1])

    faults, pages = faults_and_pages("kept")
    assert faults <= pages + 2048, (faults, pages)  # 2,048: the interpreter's own pages outside the heap
    faults, pages = faults_and_pages("default")
    assert faults > 1.25 * pages, (faults, pages)  # the test's own check: without kept_heap pages come back


def test_paused_gc_restores_the_collector_as_it_was():
    import gc

    from probekit.activations.heap import paused_gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled(), "an inner pause must not turn the collector back on"
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled(), "a collector the caller turned off stays off"
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError
    assert gc.isenabled()


def test_paused_gc_across_threads_turns_the_collector_on_only_when_the_last_leaves():
    import gc
    import threading

    from probekit.activations.heap import paused_gc

    inside, leave = threading.Event(), threading.Event()

    def other():
        with paused_gc():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=other)
    with paused_gc():
        t.start()
        inside.wait(10)
    assert not gc.isenabled(), "the other thread is still inside"
    leave.set()
    t.join(10)
    assert gc.isenabled()
