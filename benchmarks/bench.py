"""`make bench`: probekit's speed and memory, measured side by side with the references in one run.

Prints ratios (ours / reference) for:
  1. extraction throughput in real (non-padding) subword tokens per second, side by side: a per-sentence fp32 loop
     (one sentence per forward pass with output_hidden_states, as NeuroX does), a plain batched HF forward in fp32
     and under bf16 autocast, probekit extract with padded rows and with packed rows (the default), each in fp32
     and in bf16; against the FLOP bound of each precision (measured matmul peak of the
     dtype / (2 x non-embedding parameters), the peak measured again in every round beside that round's runs, each
     share of a bound the median of per-round shares; the paths run in a new order each round); padding as a share of computed tokens; the CPU and what
     torch reports about it;
  2. probe training for all layers of `upos` vs scikit-learn LogisticRegression (lbfgs, default tol),
     fitted layer by layer on identical features, with the test accuracy gap per layer. Both solve the same
     objective: probekit standardises each layer's features (mean 0, variance 1 on train) and penalises the
     weights in that space, so scikit-learn gets the same standardised features (StandardScaler, its time
     counted). On raw features scikit-learn's L2 penalty acts on other coordinates, a different model at the
     same C (its test accuracy differed by up to 0.5 points on layer 6 here), which says nothing about solvers;
     2b. the same for `aux_verb` (2 classes; no target): a guard for the few-class code paths, where BLAS picks
     other kernels;
  3. peak resident memory of extracting all of EWT train vs one eighth of it (separate processes);
  4. a warm rerun of the quickstart vs its cold run (cold time read from results/quickstart/run_log.json);
  5. per-layer relative error of bf16 autocast against fp32 word vectors (with --device: on that device, and the
     device's fp32 vectors against the CPU's);
  6. the probe test-accuracy difference bf16 minus fp32 on the quickstart tasks (a slice: --precision-train,
     --precision-limit), which decides what precision `auto` means (docs/design.md);
  7. smollm2-135m with weights loaded in bfloat16 vs float32: fidelity and probe-accuracy difference per layer.
Where the device has no bf16 matrix units (as torch reports them; there bf16 matmuls are emulated, docs/design.md
23), the bf16 work is left out: section 1's bf16 paths, and sections 5, 6 and 7, which would take hours
there and measure a precision nobody should choose on that CPU; the run says so and `--bf16-anyway` runs them.
Machines are noisy: timings are medians of repeats where affordable. Run: `make bench` (< 10 min on 2 cores).
On a lent GPU, sections 1 and 5 run there through `benchmarks/device_check.sh` (--device, --model, --conllu,
--peak-tflops).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sync(device: str = "cpu") -> None:
    """Wait for the device's queued work (a GPU runs asynchronously; a host clock read before this lies)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def median_time(fn, repeats=3, device: str = "cpu"):
    ts = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


#: matmul shapes the peak is taken over: square, and MiniLM's feed-forward shapes at a 2,048-token batch; on a GPU
#: also a large square one, since the small shapes leave most of its units idle
MATMUL_SHAPES = ((1024, 1024, 1024), (2048, 384, 1536), (2048, 1536, 384))
GPU_MATMUL_SHAPES = MATMUL_SHAPES + ((16384, 384, 1536), (8192, 8192, 8192))


def matmul_gflops(dtype: str = "fp32", repeats=7, device: str = "cpu") -> float:
    """Measured matmul peak for a dtype on a device: the best over the shapes of each shape's median GFLOP/s. On
    CUDA, fp32 is true fp32 (torch's default, no TF32), as the fp32 forward passes run."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    best = 0.0
    for m, k, n in GPU_MATMUL_SHAPES if device.startswith("cuda") else MATMUL_SHAPES:
        a, b = torch.randn(m, k, device=device).to(dt), torch.randn(k, n, device=device).to(dt)
        a @ b
        best = max(best, 2 * m * k * n / median_time(lambda: a @ b, repeats, device) / 1e9)
    return best


def timed_precisions(device: str = "cpu") -> list[str]:
    """The precisions a benchmark times by default: fp32, and bf16 where ``device`` has bf16 matrix units."""
    from probekit.activations.precision import bf16_matrix_units

    return ["fp32"] + (["bf16"] if bf16_matrix_units(device) else [])


def cpu_line() -> str:
    """The CPU's name and the capabilities torch reports (what decides the bf16 path)."""
    import platform

    import torch

    name = platform.processor() or "?"
    try:
        info = {}
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
            if not line.strip():
                break
        name = info.get("model name", name)
        # A virtual machine may report only "AMD EPYC": family and model tell the generation (23 = Zen 1/2, 25 = Zen 3/4)
        if "cpu family" in info:
            name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
        flags = info.get("flags", "").split()
    except OSError:
        flags = []
    wanted = [f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")]
    caps = {f: bool(getattr(torch.cpu, f"_is_{f}_supported", lambda: False)())
            for f in ("avx512_bf16", "amx_tile", "amx_fp16")}
    return (f"CPU {name}; flags {' '.join(wanted) or '-'}; torch capability {torch.backends.cpu.get_cpu_capability()}, "
            + ", ".join(f"{k}={v}" for k, v in caps.items()))


def device_line(device: str) -> str:
    """:func:`cpu_line`, or on a GPU its name, memory and compute capability (and the CPU beside it)."""
    if not device.startswith("cuda"):
        return cpu_line()
    import torch

    p = torch.cuda.get_device_properties(device)
    return (f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
            f"{p.multi_processor_count} SMs, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}; host {cpu_line()}")


def non_embedding_params(model) -> int:
    """Parameters every token multiplies through: all but the embeddings and BERT's pooler (which runs on one
    token per row, so counting it would lower the bound by 1.4% on minilm)."""
    return sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "pooler" not in n)


def per_sentence_loop(lm, sents, device: str = "cpu") -> tuple[float, int]:
    """NeuroX-style reference: tokenizer + one forward per sentence, output_hidden_states."""
    import torch

    tok = lm.tokenizer
    n_tok = 0
    sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        for s in sents:
            enc = tok(s.text, return_tensors="pt", truncation=True, max_length=lm.max_length).to(device)
            lm.model(**enc, output_hidden_states=True)
            n_tok += int(enc["input_ids"].shape[1])
    sync(device)
    return time.perf_counter() - t, n_tok


def plain_batched(lm, sents, batch_tokens=4096, precision="fp32", device: str = "cpu") -> tuple[float, int]:
    """A plain HF forward: the tokenizer's ids sorted by length, batches grown under the same token budget as ours
    and padded by the tokenizer, output_hidden_states; no alignment, pooling or store. Real tokens counted. bf16 is
    plain ``torch.autocast`` (weights cast at every call, as a user would write it)."""
    import contextlib

    import torch

    tok = lm.tokenizer
    sync(device)
    t = time.perf_counter()
    ids = sorted((tok(s.text, truncation=True, max_length=lm.max_length)["input_ids"] for s in sents), key=len)
    amp = (torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16"
           else contextlib.nullcontext())
    with torch.inference_mode(), amp:
        i = 0
        while i < len(ids):
            j = i + 1
            while j < len(ids) and len(ids[j]) * (j - i + 1) <= batch_tokens:
                j += 1
            enc = tok.pad({"input_ids": ids[i:j]}, return_tensors="pt").to(device)
            lm.model(**enc, output_hidden_states=True)
            i = j
    sync(device)
    return time.perf_counter() - t, sum(len(x) for x in ids)


def bench_sentences(split: str, n: int | None, conllu: str | None = None):
    """The first ``n`` sentences of EWT's ``split``, or of the CoNLL-U file ``conllu`` where given (a machine that
    has no treebank folder: the device check carries a slice of EWT train)."""
    from probekit.data.conllu_io import read_conllu
    from probekit.data.datasets import load_split

    if conllu:
        return read_conllu(Path(conllu), limit=n)
    return load_split("ud_ewt", split, limit=n)


def ours_extract(lm, sents, precision="fp32", packing=True) -> tuple[float, int, int]:
    from probekit.activations.extract import extract

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        st = extract(lm, sents, store_root=d, progress=False, precision=precision, packing=packing)
        dt = time.perf_counter() - t
        stats = st.manifest["stats"]
    return dt, stats["tokens"], stats["padded_tokens"]


def ratio_line(tps: dict[str, float], fp32_share: float) -> str:
    """Section 1's summary: ours against the loop, the bound, a plain HF forward and padded rows, per precision
    measured (bf16 only where its paths ran)."""
    ref = tps["per-sentence loop fp32"]
    parts = [f"ours fp32/per-sentence = {tps['probekit extract fp32'] / ref:.2f}x"]
    bf16 = "probekit extract bf16" in tps
    if bf16:
        parts += [f"ours bf16/per-sentence = {tps['probekit extract bf16'] / ref:.2f}x (target >= 4x with bf16 units)",
                  f"bf16/fp32 = {tps['probekit extract bf16'] / tps['probekit extract fp32']:.2f}x"]
    parts.append(f"ours fp32/fp32 bound = {fp32_share:.0%} (target >= 60%)")
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    parts.append("ours/plain HF: " + ", ".join(
        f"{p} {tps[f'probekit extract {p}'] / tps[f'plain batched HF {p}']:.2f}" for p in precisions))
    parts.append("packed/padded rows: " + ", ".join(
        f"{p} {tps[f'probekit extract {p}'] / tps[f'probekit padded rows {p}']:.2f}x" for p in precisions))
    return ";  ".join(parts)


def bench_extraction(n_sent: int, repeats: int = 3, *, device: str = "cpu", model: str = "minilm",
                     conllu: str | None = None, peak_tflops: float | None = None, bf16: bool = True):
    from probekit.activations.models import load_model
    from probekit.activations.precision import resolve_precision

    lm = load_model(model, device=device)
    sents = bench_sentences("train", n_sent, conllu)
    auto = resolve_precision(device, "auto")
    paths = {"per-sentence loop fp32": lambda ss: per_sentence_loop(lm, ss, device),
             "plain batched HF fp32": lambda ss: plain_batched(lm, ss, device=device),
             "plain batched HF bf16": lambda ss: plain_batched(lm, ss, precision="bf16", device=device),
             "probekit padded rows fp32": lambda ss: ours_extract(lm, ss, "fp32", packing=False),
             "probekit padded rows bf16": lambda ss: ours_extract(lm, ss, "bf16", packing=False),
             "probekit extract fp32": lambda ss: ours_extract(lm, ss, "fp32"),
             "probekit extract bf16": lambda ss: ours_extract(lm, ss, "bf16")}
    if not bf16:  # no bf16 matrix units: the bf16 paths would run for hours (see the module docstring)
        paths = {k: v for k, v in paths.items() if not k.endswith("bf16")}
    for fn in paths.values():  # warm-up every path on a few sentences
        fn(sents[:20])
    flops_per_tok = 2 * non_embedding_params(lm.model)
    runs = {k: [] for k in paths}
    peaks = {"fp32": [], "bf16": []}  # matmul peak measured in each round, beside that round's runs
    if not bf16:  # once, to show what bf16 would cost here
        peaks["bf16"].append(matmul_gflops("bf16", repeats=1, device=device))
    for r in range(repeats):  # interleaved, so that load drifts hit every path alike
        for p in peaks if bf16 else ["fp32"]:
            peaks[p].append(matmul_gflops(p, repeats=5, device=device))
        # in a new order every round: a path runs slower after some others (probekit fp32 after a plain HF bf16
        # forward: 4.22 vs 3.66 s alone, medians of 4), so no path may always follow the same one
        for name in random.Random(r).sample(list(paths), len(paths)):
            runs[name].append(paths[name](sents))
    tps = {k: statistics.median(r[1] / r[0] for r in v) for k, v in runs.items()}

    def of_bound(name: str, p: str) -> float:
        """Median over rounds of (this round's tok/s) / (this round's bound): the other tenants' load moves the
        peak and the runs alike, so the share is steadier than a ratio of medians."""
        return statistics.median(r[1] / r[0] / (g * 1e9 / flops_per_tok) for r, g in zip(runs[name], peaks[p]))

    real, computed = runs["probekit extract fp32"][0][1], runs["probekit extract fp32"][0][2]
    padded_rows = 1 - runs["probekit padded rows fp32"][0][1] / runs["probekit padded rows fp32"][0][2]
    gf = {p: statistics.median(v) for p, v in peaks.items()}
    bound = {p: g * 1e9 / flops_per_tok for p, g in gf.items()}
    ref = tps["per-sentence loop fp32"]
    print(f"\n[1] Extraction, {model} on {device}, {len(sents)} {conllu or 'EWT train'} sentences ({real:,} real "
          f"subword tokens incl. specials), medians of {repeats} interleaved rounds, paths in a new order each round; "
          f"auto = {auto} here")
    print(f"    {device_line(device)}")
    print(f"    matmul peak (median of the rounds; each round measures it beside its runs) fp32 {gf['fp32']:.0f} "
          f"GFLOP/s ({min(peaks['fp32']):.0f}-{max(peaks['fp32']):.0f}), bf16 {gf['bf16']:.0f} GFLOP/s "
          f"({min(peaks['bf16']):.0f}-{max(peaks['bf16']):.0f}; {gf['bf16'] / gf['fp32']:.2f}x); "
          f"{flops_per_tok / 2e6:.1f}M non-embedding params -> bound fp32 {bound['fp32']:.0f} tok/s, "
          f"bf16 {bound['bf16']:.0f} tok/s; shares of a bound below are medians of per-round shares")
    for name, v in tps.items():
        p = "bf16" if name.endswith("bf16") else "fp32"
        print(f"    {name:26}: {v:8.0f} tok/s  {v / ref:5.2f}x per-sentence  {of_bound(name, 'fp32'):4.0%} of fp32 "
              "bound" + (f"  {of_bound(name, 'bf16'):4.0%} of bf16 bound" if p == "bf16" else ""))
    print(f"    padding {1 - real / computed:.1%} of computed tokens (target < 3%; padded rows: {padded_rows:.1%})")
    if not bf16:
        print(f"    bf16 paths left out: no bf16 matrix units here (bf16 matmul {gf['bf16']:.1f} GFLOP/s, "
              f"{gf['bf16'] / gf['fp32']:.3f}x fp32); --bf16-anyway runs them")
    mfu = {}
    if peak_tflops:  # model FLOP utilisation against the device's nominal (data-sheet) bf16 peak, as papers give it
        mfu = {k: v * flops_per_tok / (peak_tflops * 1e12) for k, v in tps.items()}
        print(f"    MFU against the nominal bf16 peak {peak_tflops:g} TFLOP/s (--peak-tflops; the measured one is "
              f"{gf['bf16'] / 1e3:.3g} TFLOP/s): " + ", ".join(f"{k} {v:.2%}" for k, v in mfu.items()))
    print(f"    RATIO {ratio_line(tps, of_bound('probekit extract fp32', 'fp32'))}")
    return {"device": device_line(device), "model": model, "tok_s": tps, "bound_tok_s": bound, "gflops": gf,
            "gflops_rounds": peaks, "mfu_nominal": mfu,
            "of_fp32_bound": {k: of_bound(k, "fp32") for k in tps}, "padding": 1 - real / computed, "auto": auto,
            "runs_s": {k: [r[0] for r in v] for k, v in runs.items()}}


def bench_fidelity(n_sent: int, model: str = "minilm", *, device: str = "cpu", conllu: str | None = None, **b_kw):
    """Per-layer error of bf16 autocast (or of ``b_kw``'s other setting) against fp32: median over words of the
    relative L2 error and of the cosine, on float32 word vectors of the same sentences (EWT dev, or the last
    ``n_sent`` sentences of ``conllu``)."""
    import numpy as np

    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model

    sents = bench_sentences("dev", n_sent, None) if not conllu else bench_sentences("train", None, conllu)[-n_sent:]
    lm = load_model(model, device=device)
    a, _ = Extractor(lm, precision="fp32").encode_shard(sents)
    if "weights_dtype" in b_kw:
        lm = load_model(model, device=device, dtype=b_kw["weights_dtype"])
        b, _ = Extractor(lm, precision="fp32").encode_shard(sents)
    elif "other_device" in b_kw:  # the same fp32 extraction on another device
        b, _ = Extractor(load_model(model, device=b_kw["other_device"]), precision="fp32").encode_shard(sents)
    else:
        b, _ = Extractor(lm, precision=b_kw.get("precision", "bf16")).encode_shard(sents)
    rel = np.linalg.norm(a - b, axis=2) / np.maximum(np.linalg.norm(a, axis=2), 1e-12)
    cos = (a * b).sum(2) / np.maximum(np.linalg.norm(a, axis=2) * np.linalg.norm(b, axis=2), 1e-12)
    out = [(float(np.median(r)), float(np.max(r)), float(np.median(c))) for r, c in zip(rel, cos)]
    what = ", ".join(f"{k}={v}" for k, v in b_kw.items()) or "precision=bf16"
    print(f"\n[5] Fidelity of {what} vs fp32, {model} on {device}, {len(sents)} {conllu or 'EWT dev'} sentences: per "
          "layer median (max) relative L2 error of word vectors, median cosine")
    for layer, (med, mx, c) in enumerate(out):
        small = mx < 1e-4  # fp32 against fp32 (another device): rounding-level, shown in full
        print(f"    layer {layer:2d}: " + (f"{med:.1e} ({mx:.1e})" if small else f"{med:.3%} ({mx:.2%})")
              + f"  cos {c:.6f}")
    return out


def probe_accuracy(model: str, folder: str, train: int, limit: int, **changes) -> dict:
    """Test accuracy per (task, layer) of the quickstart's tasks on a slice: linear probes, seed 0, no controls,
    MDL or random-weights model. Returns {(task, layer): accuracy}."""
    from probekit.config import resolve_config
    from probekit.runner.experiment import run_experiment

    name = "-".join(f"{v}" for v in changes.values()) or "default"
    cfg = resolve_config(ROOT / "configs" / "quickstart.yaml",
                         {"name": name, "models": [model], "results_dir": folder, "train_sentences": train,
                          "limit": {"dev": limit, "test": limit}, "seeds": [0], "control_tasks": False, "mdl": False,
                          "random_baseline": False, **changes})
    df = run_experiment(cfg, progress=False).table
    df = df[(df["split"] == "test") & (df["metric"] == "accuracy") & (df["probe"] == "linear")
            & df["layer"].notna() & ~df["control"].fillna(False).astype(bool)]
    return {(r.task, int(r.layer)): float(r.value) for r in df.itertuples()}


def bench_accuracy(model: str, train: int, limit: int, a: dict, b: dict, label: str):
    """Probe test accuracy with setting ``b`` minus setting ``a``, per task and layer (points)."""
    with tempfile.TemporaryDirectory() as d:
        acc_a = probe_accuracy(model, d, train, limit, **a)
        acc_b = probe_accuracy(model, d, train, limit, **b)
    diffs = {k: 100 * (acc_b[k] - acc_a[k]) for k in acc_a}
    tasks = sorted({t for t, _ in diffs})
    layers = sorted({lay for _, lay in diffs})
    print(f"\n[{label}] Probe test accuracy, {model}, {b} minus {a} (points), quickstart tasks on a slice: "
          f"train_sentences {train}, dev/test limit {limit}, seed 0, linear probes")
    print("    layer " + " ".join(f"{t:>15}" for t in tasks))
    for lay in layers:
        print(f"    {lay:5d} " + " ".join(f"{diffs[(t, lay)]:+15.2f}" for t in tasks))
    worst = max(abs(v) for v in diffs.values())
    print(f"    max |difference| {worst:.2f} points (auto takes bf16 only if <= 0.1)")
    return {"diff_points": {f"{t}:{lay}": v for (t, lay), v in diffs.items()}, "max_abs": worst}


def bench_probes(n_sent: int, max_layers: int | None, task_name: str = "upos", label: str = "2"):
    from sklearn.linear_model import LogisticRegression

    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.data.datasets import load_split
    from probekit.probing.linear import fit_layers
    from probekit.tasks import get_task

    lm = load_model("minilm", device="cpu")
    task = get_task(task_name)
    tr = load_split("ud_ewt", "train", limit=n_sent)
    te = load_split("ud_ewt", "test")
    st_tr = extract(lm, tr, dataset="ud_ewt", split=f"train-first{n_sent}", progress=False)
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
    ap.add_argument("--extract-repeats", type=int, default=3, help="interleaved runs per extraction path (median)")
    ap.add_argument("--probe-sentences", type=int, default=4000, help="~65k words of EWT train")
    ap.add_argument("--probe-layers", type=int, default=None)
    ap.add_argument("--precision-train", type=int, default=1000, help="train sentences of the accuracy slices")
    ap.add_argument("--precision-limit", type=int, default=500, help="dev/test sentences of the accuracy slices")
    ap.add_argument("--device", default="cpu", help="device of sections 1 and 5 (e.g. cuda); the others run on cpu")
    ap.add_argument("--model", default="minilm", help="model of sections 1 and 5 (alias or HF folder)")
    ap.add_argument("--conllu", default=None, help="sections 1 and 5 read their sentences from this CoNLL-U file "
                    "instead of EWT train/dev (section 5: its last sentences)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's nominal bf16 peak (data sheet, dense): section 1 adds MFU against it")
    ap.add_argument("--bf16-anyway", action="store_true",
                    help="run the bf16 work (section 1's bf16 paths, sections 5-7) on a device without bf16 matrix "
                    "units too (hours on such a CPU)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["extract", "probes", "memory", "cache", "fidelity", "accuracy", "weights"])
    args = ap.parse_args()
    os.environ.setdefault("PROBEKIT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    t0 = time.perf_counter()
    import torch

    print(f"probekit benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}, {time.strftime('%Y-%m-%d %H:%M')}\n{device_line(args.device)}")
    res = {}
    bf16 = {d: args.bf16_anyway or "bf16" in timed_precisions(d) for d in {args.device, "cpu"}}
    left_out = [s for s, d in (("fidelity", args.device), ("accuracy", "cpu"), ("weights", "cpu"))
                if not bf16[d] and s not in args.skip]
    if left_out:
        print(f"no bf16 matrix units on {', '.join(d for d in bf16 if not bf16[d])}: leaving out section 1's bf16 "
              f"paths and {' '.join(left_out)} (--bf16-anyway runs them)")
        args.skip += left_out
    if "extract" not in args.skip:
        res["extract"] = bench_extraction(args.extract_sentences, args.extract_repeats, device=args.device,
                                          model=args.model, conllu=args.conllu, peak_tflops=args.peak_tflops,
                                          bf16=bf16[args.device])
    if "probes" not in args.skip:
        res["probes"] = bench_probes(args.probe_sentences, args.probe_layers)
        # the target is on upos; a 2-class task guards the few-class code paths (BLAS picks other kernels there)
        res["probes_aux_verb"] = bench_probes(args.probe_sentences, args.probe_layers, "aux_verb", "2b")
    if "memory" not in args.skip:
        res["memory"] = bench_memory()
    if "cache" not in args.skip:
        res["cache"] = bench_cache()
    if "fidelity" not in args.skip:
        res["fidelity_bf16"] = bench_fidelity(500, args.model, device=args.device, conllu=args.conllu)
        if args.device != "cpu":  # the device's fp32 vectors against the CPU's: is the device path right at all?
            res["fidelity_device"] = bench_fidelity(200, args.model, conllu=args.conllu, other_device=args.device)
    if "accuracy" not in args.skip:
        res["accuracy_bf16"] = bench_accuracy("minilm", args.precision_train, args.precision_limit,
                                              {"precision": "fp32"}, {"precision": "bf16"}, "6")
    if "weights" not in args.skip:  # weights loaded in bfloat16 (the GGUF de-quantised to it) vs float32
        res["fidelity_weights_bf16"] = bench_fidelity(200, "smollm2-135m", weights_dtype="bfloat16")
        res["accuracy_weights_bf16"] = bench_accuracy("smollm2-135m", args.precision_train, args.precision_limit,
                                                      {"weights_dtype": "float32"}, {"weights_dtype": "bfloat16"},
                                                      "7")
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f}s")
    out = ROOT / "results" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
