"""`make bench`: probekit's speed and memory, measured side by side with the references in one run.

Prints ratios (ours / reference) for:
  1. extraction throughput in real (non-padding) subword tokens per second vs a per-sentence loop
     (one sentence per forward pass with output_hidden_states, as NeuroX does), and vs the FLOP bound
     (measured fp32 matmul GFLOP/s / (2 x non-embedding parameters));
  2. probe training for all layers of `upos` vs scikit-learn LogisticRegression (lbfgs, default tol),
     fitted layer by layer on identical features, with the test accuracy gap per layer. Both solve the same
     objective: probekit standardises each layer's features (mean 0, variance 1 on train) and penalises the
     weights in that space, so scikit-learn gets the same standardised features (StandardScaler, its time
     counted). On raw features scikit-learn's L2 penalty acts on other coordinates, a different model at the
     same C (its test accuracy differed by up to 0.5 points on layer 6 here), which says nothing about solvers;
     2b. the same for `aux_verb` (2 classes; no target): a guard for the few-class code paths, where BLAS picks
     other kernels;
  3. peak resident memory of extracting all of EWT train vs one eighth of it (separate processes);
  4. a warm rerun of the quickstart vs its cold run (cold time read from results/quickstart/run_log.json).
Machines are noisy: timings are medians of repeats where affordable. Run: `make bench` (< 10 min on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def median_time(fn, repeats=3):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def matmul_gflops(n=1024, repeats=7) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = median_time(lambda: a @ b, repeats)
    return 2 * n ** 3 / t / 1e9


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    return sum(p.numel() for p in model.parameters()) - emb


def per_sentence_loop(lm, sents) -> tuple[float, int]:
    """NeuroX-style reference: tokenizer + one forward per sentence, output_hidden_states."""
    import torch

    tok = lm.tokenizer
    n_tok = 0
    t = time.perf_counter()
    with torch.inference_mode():
        for s in sents:
            enc = tok(s.text, return_tensors="pt", truncation=True, max_length=lm.max_length)
            lm.model(**enc, output_hidden_states=True)
            n_tok += int(enc["input_ids"].shape[1])
    return time.perf_counter() - t, n_tok


def ours_extract(lm, sents) -> tuple[float, int, int]:
    from probekit.activations.extract import extract

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        st = extract(lm, sents, store_root=d, progress=False)
        dt = time.perf_counter() - t
        stats = st.manifest["stats"]
    return dt, stats["tokens"], stats["padded_tokens"]


def bench_extraction(n_sent: int):
    from probekit.data.datasets import load_split
    from probekit.activations.models import load_model

    lm = load_model("minilm", device="cpu")
    sents = load_split("ud_ewt", "train", limit=n_sent)
    # warm-up both paths once on a few sentences
    per_sentence_loop(lm, sents[:20])
    ours_extract(lm, sents[:20])
    ref_t, ref_tok = per_sentence_loop(lm, sents)
    runs = [ours_extract(lm, sents) for _ in range(2)]
    our_t = statistics.median(r[0] for r in runs)
    our_tok, padded = runs[0][1], runs[0][2]
    gf = matmul_gflops()
    bound = gf * 1e9 / (2 * non_embedding_params(lm.model))
    ref_tps, our_tps = ref_tok / ref_t, our_tok / our_t
    print(f"\n[1] Extraction, minilm, {n_sent} EWT train sentences ({our_tok:,} real subword tokens incl. specials)")
    print(f"    per-sentence loop (reference): {ref_tps:8.0f} tok/s")
    print(f"    probekit extract (to store)  : {our_tps:8.0f} tok/s   padding {1 - our_tok / padded:.1%} of computed tokens")
    print(f"    matmul {gf:.0f} GFLOP/s, {non_embedding_params(lm.model) / 1e6:.1f}M non-embedding params "
          f"-> FLOP bound {bound:.0f} tok/s")
    print(f"    RATIO ours/per-sentence = {our_tps / ref_tps:.2f}x (target >= 3x);  "
          f"ours/FLOP bound = {our_tps / bound:.0%} (target >= 50%)")
    return {"ref_tps": ref_tps, "ours_tps": our_tps, "bound_tps": bound, "gflops": gf}


def bench_probes(n_sent: int, max_layers: int | None, task_name: str = "upos", label: str = "2"):
    from sklearn.linear_model import LogisticRegression

    from probekit.data.datasets import load_split
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.probing.linear import fit_layers
    from probekit.tasks import get_task

    lm = load_model("minilm", device="cpu")
    task = get_task(task_name)
    tr = load_split("ud_ewt", "train", limit=n_sent)
    te = load_split("ud_ewt", "test")
    st_tr = extract(lm, tr, dataset="ud_ewt", split=f"train[:{n_sent}]", progress=False)
    st_te = extract(lm, te, dataset="ud_ewt", split="test", progress=False)
    ytr, yte = task.encode(tr), task.encode(te)
    layers = list(range(st_tr.n_layers))[:max_layers]
    X = st_tr.layers(layers)
    Xt = st_te.layers(layers)
    # warm-up (thread pools, allocator) on a slice, then the median of 3 fits (they are identical: seeded)
    fit_layers(X[:, :2000], ytr[:2000], n_classes=len(task.labels), Cs=(1.0,))
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        fits = fit_layers(X, ytr, n_classes=len(task.labels), Cs=(1.0,))
        runs.append(time.perf_counter() - t)
    ours_t = statistics.median(runs)
    ours_acc = [float((f.predict(Xt[i]) == yte).mean()) for i, f in enumerate(fits)]
    sk_acc, sk_t = [], 0.0
    import warnings

    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():  # the same warm-up for scikit-learn (one fit of ~100 s is not repeated)
        warnings.simplefilter("ignore")
        LogisticRegression().fit(StandardScaler().fit_transform(X[0, :2000]), ytr[:2000])

    for i in range(len(layers)):
        t = time.perf_counter()
        scaler = StandardScaler().fit(X[i])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression().fit(scaler.transform(X[i]), ytr)  # lbfgs, default tol and max_iter
        sk_t += time.perf_counter() - t
        sk_acc.append(float(clf.score(scaler.transform(Xt[i]), yte)))
    gaps = [100 * (o - s) for o, s in zip(ours_acc, sk_acc)]
    print(f"\n[{label}] Probes: {task_name} ({len(task.labels)} classes), {len(layers)} layers, {len(ytr):,} training "
          "words, C=1 (both), standardised features (both), test on EWT test")
    print("    layer  sklearn  probekit  gap(points)")
    for layer, s, o, g in zip(layers, sk_acc, ours_acc, gaps):
        print(f"    {layer:5d}  {s:.4f}   {o:.4f}    {g:+.2f}")
    print(f"    probekit runs: {', '.join(f'{r:.1f}s' for r in runs)} (median below)")
    target = (" (target >= 10x)", " (target <= 0.3)") if task_name == "upos" else ("", "")
    print(f"    sklearn {sk_t:.1f}s, probekit {ours_t:.1f}s -> RATIO {sk_t / ours_t:.1f}x faster{target[0]}; "
          f"max |gap| {max(abs(g) for g in gaps):.2f} points{target[1]}")
    return {"sk_s": sk_t, "ours_s": ours_t, "ours_runs": runs, "max_gap": max(abs(g) for g in gaps)}


MEM_CHILD = """
import resource, sys, tempfile
from probekit.data.datasets import load_split
from probekit.activations.extract import extract
from probekit.activations.models import load_model
frac = float(sys.argv[1])
sents = load_split("ud_ewt", "train")
sents = sents[: int(len(sents) * frac)]
lm = load_model("minilm", device="cpu")
with tempfile.TemporaryDirectory() as d:
    extract(lm, sents, store_root=d, progress=False)
# VmHWM (peak RSS of this process image), not ru_maxrss: Linux keeps ru_maxrss across fork + exec, so it would
# report the benchmark parent's size at the fork instead of this child's peak
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_memory():
    out = {}
    for frac in (0.125, 1.0):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", MEM_CHILD, str(frac)], capture_output=True, text=True, check=True)
        out[frac] = (int(r.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - t)
    ratio = out[1.0][0] / out[0.125][0]
    print("\n[3] Peak RSS of extracting EWT train (separate processes, store on disk)")
    print(f"    1/8 of train: {out[0.125][0]:.0f} MiB ({out[0.125][1]:.0f}s);  all of train: {out[1.0][0]:.0f} MiB "
          f"({out[1.0][1]:.0f}s) -> RATIO {ratio:.2f} (target <= 1.2)")
    return {"rss_eighth": out[0.125][0], "rss_full": out[1.0][0], "ratio": ratio}


def bench_cache():
    log = ROOT / "results" / "quickstart" / "run_log.json"
    if not log.is_file():
        print("\n[4] Cache: no cold quickstart recorded yet (run `make quickstart` once); skipped.")
        return {}
    runs = json.loads(log.read_text())
    cold = [r for r in runs if r.get("forward_passes", 0) > 0]
    if not cold:
        print("\n[4] Cache: no cold run in run_log.json (delete the store and results to record one); skipped.")
        return {}
    t = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "probekit"), "-q", "run", "configs/quickstart.yaml"], cwd=ROOT,
                   check=True, capture_output=True)
    warm = time.perf_counter() - t
    cold_s = cold[-1]["seconds"]
    print(f"\n[4] Quickstart: cold {cold_s:.0f}s (recorded), warm rerun {warm:.1f}s (now, whole CLI process) -> "
          f"RATIO {cold_s / warm:.0f}x (target >= 20x)")
    return {"cold_s": cold_s, "warm_s": warm}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--extract-sentences", type=int, default=1000)
    ap.add_argument("--probe-sentences", type=int, default=4000, help="~65k words of EWT train")
    ap.add_argument("--probe-layers", type=int, default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["extract", "probes", "memory", "cache"])
    args = ap.parse_args()
    os.environ.setdefault("PROBEKIT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    t0 = time.perf_counter()
    import torch

    print(f"probekit benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device cpu, {time.strftime('%Y-%m-%d %H:%M')}")
    res = {}
    if "extract" not in args.skip:
        res["extract"] = bench_extraction(args.extract_sentences)
    if "probes" not in args.skip:
        res["probes"] = bench_probes(args.probe_sentences, args.probe_layers)
        # the target is on upos; a 2-class task guards the few-class code paths (BLAS picks other kernels there)
        res["probes_aux_verb"] = bench_probes(args.probe_sentences, args.probe_layers, "aux_verb", "2b")
    if "memory" not in args.skip:
        res["memory"] = bench_memory()
    if "cache" not in args.skip:
        res["cache"] = bench_cache()
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f}s")
    out = ROOT / "results" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
