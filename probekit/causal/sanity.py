"""Does the eraser remove the concept from the features? Probes retrained on erased features, per layer.

After LEACE a linear probe retrained on the erased training features can do no better than a constant predictor
(the erased features have zero covariance with the one-hot label), so its test accuracy should sit at the majority
baseline; that is the check. An MLP probe on the same erased features shows how much *non-linear* information about
the concept remains (LEACE promises nothing there). Every probe is trained on erased train features, its strength or
early stopping chosen on erased dev features, and scored on erased test features (the eraser itself was fitted on
train only).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probekit.causal.erasure import EraserSet, labelled_rows, layer_features
from probekit.probing.linear import fit_layers
from probekit.probing.mlp import MLPProbe
from probekit.results.table import row


@dataclass
class SanityScore:
    """Test accuracies of one layer: majority baseline, linear probe before / after erasure, MLP after erasure."""

    layer: int
    method: str
    rank: int
    majority: float
    linear_before: float
    linear_after: float
    mlp_after: float | None
    train_size: int

    def rows(self, **common) -> list[dict]:
        """Result rows (``method`` = ``erasure:<method>``); ``common`` gives experiment, model, task... columns."""
        base = dict(common, method=f"erasure:{self.method}", layer=self.layer, split="test", control=False,
                    train_size=self.train_size)
        out = [row(**base, probe="majority", metric="accuracy", value=self.majority),
               row(**base, probe="linear", metric="accuracy_before_erasure", value=self.linear_before),
               row(**base, probe="linear", metric="accuracy", value=self.linear_after),
               row(**base, probe=None, metric="eraser_rank", value=float(self.rank))]
        if self.mlp_after is not None:
            out.append(row(**base, probe="mlp1", metric="accuracy", value=self.mlp_after))
        return out


def sanity_scores(erasers: EraserSet, stores: dict, data: dict, task, *, mlp: bool = True,
                  Cs=(0.001, 0.01, 0.1, 1.0), mlp_params: dict | None = None, device: str | None = None,
                  seed: int = 0) -> list[SanityScore]:
    """Retrain probes on erased features, layer by layer (one layer's features in memory at a time).

    Args:
        erasers: from :func:`~probekit.causal.erasure.fit_erasers` (on ``stores["train"]``).
        stores, data: ``{"train", "dev", "test"}`` -> activation store / its sentences.
        mlp: also train a one-hidden-layer :class:`~probekit.probing.mlp.MLPProbe` on the erased features.
    """

    C = len(task.labels)
    lab = {r: labelled_rows(task, data[r]) for r in ("train", "dev", "test")}
    y = {r: v[1] for r, v in lab.items()}
    majority_class = np.bincount(y["train"], minlength=C).argmax()
    out = []
    for layer, er in sorted(erasers.erasers.items()):
        X = {r: layer_features(stores[r], layer, lab[r][0], task.level, erasers.pooling) for r in lab}
        E = {r: er(x) for r, x in X.items()}
        fits = fit_layers(np.stack([X["train"], E["train"]]), y["train"], n_classes=C, Cs=tuple(Cs),
                          X_dev=np.stack([X["dev"], E["dev"]]), y_dev=y["dev"], device=device, seed=seed)
        before, after = ((f.predict(x) == y["test"]).mean() for f, x in zip(fits, (X["test"], E["test"])))
        mlp_acc = None
        if mlp:
            params = {"hidden_size": 256, "max_epochs": 20, "patience": 3, **(mlp_params or {})}
            m = MLPProbe(hidden_layers=1, seed=seed, device=device, **params).fit(E["train"], y["train"], E["dev"],
                                                                                 y["dev"])
            mlp_acc = float((m.predict(E["test"]) == y["test"]).mean())
        out.append(SanityScore(layer, erasers.method, er.rank, float((y["test"] == majority_class).mean()),
                               float(before), float(after), mlp_acc, len(y["train"])))
    return out
