"""Extraction with the heap kept for reuse (`probekit.activations.heap`) against the heap trimmed after every batch
(what extraction did before) and against glibc's own adaptive thresholds untrimmed, each in fresh processes.

Modes, each a child process that extracts the same sentences into a temporary store (a warm-up, then --repeats
extractions per precision):
  kept     probekit as it is: the thresholds of `kept_heap`, the heap handed back at the end of each extraction;
  trimmed  the previous behaviour: glibc's adaptive thresholds (probekit leaves the heap alone because the child
           sets a malloc tunable, ``glibc.malloc.tcache_count=7``, glibc's default value) and ``malloc_trim(0)``
           after every batch (a forward pre-hook, which trims between shards too);
  adaptive glibc's adaptive thresholds and no trimming at all.
The modes run in turn, --pairs times, in a new order each time (the machine's load drifts). Printed per mode and
precision: medians over the children of each child's median wall seconds, system CPU seconds (page faults are
kernel time), minor page faults per extraction and the free heap at its end (glibc ``mallinfo2``: the most it
held free), and the per-turn wall ratios against the first mode.

    python benchmarks/heap_reuse.py --sentences 1000 --repeats 3 --pairs 3
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench import cpu_line, timed_precisions  # noqa: E402

CHILD = """
import ctypes, json, resource, statistics, sys, tempfile, time
from probekit.activations.extract import extract
from probekit.activations.heap import free_heap_bytes
from probekit.activations.models import load_model
from probekit.data.datasets import load_split

mode, model, n, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
precisions = sys.argv[5].split(",")
lm = load_model(model, device="cpu")
if mode == "trimmed":
    libc = ctypes.CDLL("libc.so.6")

    def trim(*_):  # returns None: a pre-hook's return value would replace the inputs
        libc.malloc_trim(0)

    lm.model.register_forward_pre_hook(trim)
sents = load_split("ud_ewt", "train", limit=n)

def one(precision, ss):
    with tempfile.TemporaryDirectory() as d:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        extract(lm, ss, store_root=d, progress=False, precision=precision)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    # free heap at the end: the largest it grew to (pages handed back stay counted as free chunks)
    return wall, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt, (free_heap_bytes() or 0) / 2**20

for p in precisions:
    one(p, sents[:50])
runs = {p: [] for p in precisions}
for _ in range(repeats):
    for p in precisions:
        runs[p].append(one(p, sents))
print(json.dumps({p: [statistics.median(r[i] for r in v) for i in range(4)] for p, v in runs.items()}))
"""

MODES = ("kept", "trimmed", "adaptive")


def child(mode: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for v in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
              "GLIBC_TUNABLES"):
        env.pop(v, None)
    if mode != "kept":
        env["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=7"
    out = subprocess.run([sys.executable, "-c", CHILD, mode, args.model, str(args.sentences), str(args.repeats),
                          ",".join(args.precisions)], capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=1000, help="EWT train sentences (default 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="extractions per precision in each child")
    ap.add_argument("--pairs", type=int, default=3, help="turns of all modes")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--precisions", nargs="+", default=None,
                    help="default fp32, and bf16 where the CPU has bf16 matrix units")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = ap.parse_args()
    args.precisions = args.precisions or timed_precisions()
    os.environ.setdefault("PROBEKIT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    modes = [m for m in MODES if m in args.modes]
    res: dict[str, list[dict]] = {m: [] for m in modes}
    for t in range(args.pairs):
        for m in random.Random(t).sample(modes, len(modes)):
            res[m].append(child(m, args))
    print(f"heap kept vs trimmed after every batch vs glibc's adaptive thresholds untrimmed: {args.model}, "
          f"the first {args.sentences} EWT train sentences (all if fewer), {args.pairs} turns of one child process per mode, each the median "
          f"of {args.repeats} extractions\n  {cpu_line()}")
    for p in args.precisions:
        for m in modes:
            med = [statistics.median(r[p][i] for r in res[m]) for i in range(4)]
            ratios = [r[p][0] / k[p][0] for r, k in zip(res[m], res[modes[0]])]
            print(f"  {p} {m:9}: wall {med[0]:.2f} s (vs {modes[0]} per turn {', '.join(f'{x:.2f}' for x in ratios)})"
                  f", system CPU {med[1]:.2f} s, minor faults {med[2]:,.0f}, free heap at the end {med[3]:.0f} MiB")


if __name__ == "__main__":
    main()
