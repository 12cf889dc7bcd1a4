"""Structural-probe training: all layers as one batched problem vs a per-layer PyTorch loop (reference style).

Both train the distance probe of Hewitt & Manning (full rank) on MiniLM's layers (all 7, or --layers), the same EWT
sentences in the same order, from the same initial ``B``, with the same settings (Adam lr 0.001, batches of 20,
ReduceLROnPlateau(patience 0), the reference code's early stop, at most --epochs epochs), and are scored by the same UUAS code on EWT test sentences:

* ours: :func:`probekit.probing.structural.fit_structural`, one ``[layer, d, k]`` parameter for all layers;
* reference style: for each layer, the loop of john-hewitt/structural-probes (``TwoWordPSDProbe``: the
  ``[batch, n, n, k]`` difference tensor; ``L1DistanceLoss``; ``torch.optim.Adam`` + ``ReduceLROnPlateau``; padded
  ``[batch, n, d]`` inputs), re-implemented here from the paper's description and the reference code's settings.

Prints the wall-time ratio (reference / ours) and the UUAS gap per layer. Both run with the same torch thread count
(1 by default: on a shared 2-core machine one thread was the faster setting for both). Run:
``python benchmarks/structural_bench.py [--train 600 --dev 200 --test 300 --epochs 10]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reference_loop(X_train, train, X_dev, dev, *, epochs: int, B0, batch_size: int = 20, seed: int = 0):
    """One probe per layer, trained in turn as the reference code does, from the initial ``B0`` ``[L, d, d]`` that
    the batched fit starts from (so that the two differ only in how they compute); returns B ``[L, d, d]``."""
    import numpy as np
    import torch

    L, _, d = X_train.shape

    def padded(X, data, sents, layer):
        lens = data.lengths[sents]
        m = int(lens.max())
        xb = torch.zeros(len(sents), m, d)
        gold = torch.full((len(sents), m, m), -1.0)
        for b, s in enumerate(sents):
            a, e = data.offsets[s], data.offsets[s + 1]
            xb[b, :e - a] = torch.as_tensor(np.asarray(X[layer, a:e], dtype=np.float32))
            gold[b, :e - a, :e - a] = torch.as_tensor(data.targets[s])
        return xb, gold, torch.as_tensor(lens, dtype=torch.float32)

    def probe_forward(proj, batch):  # TwoWordPSDProbe.forward
        transformed = torch.matmul(batch, proj)
        _, seqlen, _ = transformed.size()
        transformed = transformed.unsqueeze(2).expand(-1, -1, seqlen, -1)
        diffs = transformed - transformed.transpose(1, 2)
        return diffs.pow(2).sum(-1)

    def l1_distance_loss(pred, gold, lens):  # L1DistanceLoss.forward
        mask = (gold != -1).float()
        per_sent = torch.sum(torch.abs(pred * mask - gold * mask), dim=(1, 2)) / lens.pow(2)
        return per_sent.sum() / len(lens)

    out = []
    for layer in range(L):
        proj = torch.nn.Parameter(B0[layer].clone())
        opt = torch.optim.Adam([proj], lr=0.001)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=0)
        rng = np.random.default_rng(seed)
        dev_batches = [padded(X_dev, dev, np.arange(i, min(i + batch_size, len(dev.lengths))), layer)
                       for i in range(0, len(dev.lengths), batch_size)]
        best, best_epoch, best_state = float("inf"), -1, proj.detach().clone()
        for epoch in range(epochs):
            order = rng.permutation(len(train.lengths))
            for i in range(0, len(order), batch_size):
                xb, gold, lens = padded(X_train, train, order[i:i + batch_size], layer)
                opt.zero_grad()
                loss = l1_distance_loss(probe_forward(proj, xb), gold, lens)
                loss.backward()
                opt.step()
            with torch.no_grad():
                dev_loss = sum(l1_distance_loss(probe_forward(proj, xb), g, n).item() * len(n)
                               for xb, g, n in dev_batches) / len(dev.lengths)
            sched.step(dev_loss)
            if dev_loss < best - 0.0001:
                best, best_epoch, best_state = dev_loss, epoch, proj.detach().clone()
            elif best_epoch < epoch - 4:
                break
        out.append(best_state.numpy())
    return np.stack(out)


def initial_B(L: int, d: int, seed: int):
    """The full-rank ``B`` that :func:`probekit.probing.structural.fit_structural` starts from: uniform in
    [-0.05, 0.05) from a torch generator seeded with ``seed`` (the reference code's init range)."""
    import torch

    return torch.rand(L, d, d, generator=torch.Generator().manual_seed(seed)) * 0.1 - 0.05


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=600, help="EWT train sentences (the first ones)")
    ap.add_argument("--dev", type=int, default=200)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, nargs="*", default=None, help="minilm layers (default: all 7)")
    args = ap.parse_args()
    os.environ.setdefault("PROBEKIT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.data.datasets import load_split
    from probekit.probing.structural import (
        StructuralSettings,
        distance_metrics,
        distance_records,
        fit_structural,
        layer_records,
        predict_structural,
        split_targets,
    )

    torch.set_num_threads(args.threads)
    lm = load_model("minilm", device="cpu")
    X, data = {}, {}
    for role, split, n in (("train", "train", args.train), ("dev", "dev", args.dev), ("test", "test", args.test)):
        sents = load_split("ud_ewt", split, limit=n)
        store = extract(lm, sents, dataset="ud_ewt", split=f"{split}-first{n}", progress=False)
        X[role] = store.layers(args.layers if args.layers else list(range(store.n_layers)))
        data[role] = split_targets(sents, "distance")
    st = StructuralSettings(epochs=args.epochs, device="cpu")
    t = time.perf_counter()
    B_ours, epochs_ours, _ = fit_structural(X["train"], data["train"], X["dev"], data["dev"], kind="distance",
                                            settings=st)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    B_ref = reference_loop(X["train"], data["train"], X["dev"], data["dev"], epochs=args.epochs,
                           B0=initial_B(X["train"].shape[0], X["train"].shape[2], st.seed))
    ref = time.perf_counter() - t

    def uuas(B):
        rec = distance_records(predict_structural(X["test"], data["test"], B, kind="distance", device="cpu"),
                               data["test"])
        return np.array([distance_metrics(layer_records(rec, i))["uuas"] for i in range(B.shape[0])])

    u_ours, u_ref = uuas(B_ours), uuas(B_ref)
    gap = 100 * np.abs(u_ours - u_ref)
    print(f"structural probe (distance, full rank, minilm layers {args.layers or 'all'}, {args.train} train "
          f"sentences, <= {args.epochs} epochs, {args.threads} thread(s)): all layers batched {ours:.1f}s, "
          f"per-layer reference loop {ref:.1f}s, ratio {ref / ours:.2f}x; UUAS ours "
          f"{np.round(100 * u_ours, 1).tolist()}, reference {np.round(100 * u_ref, 1).tolist()}, "
          f"max gap {gap.max():.2f} points (mean {gap.mean():.2f})")


if __name__ == "__main__":
    main()
