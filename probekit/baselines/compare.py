"""A data-matched frozen-probe reference for the tuning baselines.

:func:`probe_reference` trains probekit's linear probe (:func:`probekit.probing.linear.fit_from_stores`)
on every layer of the frozen model, on exactly the training sentences a baseline used (the same
seeded subset), selects the layer by dev accuracy and scores the same test sentences. It answers
"is fine-tuning better than a linear probe on the frozen model *with the same data*?", which the
main probing table (probes trained on the whole training split) does not.

Activations go through :func:`probekit.activations.extract.extract` and
:func:`probekit.probing.features.feature_groups` (the probes' own extraction, store and loader).
"""
from __future__ import annotations

import logging
from typing import Sequence

from probekit.activations.extract import extract
from probekit.activations.models import load_model
from probekit.baselines.train import subsample
from probekit.data.conllu_io import Sentence
from probekit.probing.features import labelled
from probekit.probing.linear import DEFAULT_CS, fit_from_stores
from probekit.results.table import classification_metrics
from probekit.tasks.base import get_task

log = logging.getLogger(__name__)


def probe_reference(*, model_name: str, task, train: Sequence[Sentence], dev: Sequence[Sentence],
                    test: Sequence[Sentence], seed: int = 0, train_sentences: int | None = None,
                    Cs: Sequence[float] = DEFAULT_CS, device: str | None = None, store_root=None,
                    loaded=None) -> dict:
    """Linear probes on every layer of the frozen model, trained on the baselines' training subset.

    Returns ``{"layers": [{"layer", "C", "dev_accuracy", "test": {metric: value}}...], "best": <the
    entry with the best dev accuracy>, "train_words": int, "train_sentences": int}``.
    """
    task = get_task(task) if isinstance(task, str) else task
    lm = loaded or load_model(model_name, device=device)
    used = subsample(train, train_sentences, seed)
    splits = {"train": used, "dev": dev, "test": test}
    stores = {role: extract(lm, sents, split=f"baseline-ref-{role}", store_root=store_root, progress=False)
              for role, sents in splits.items()}
    items = {role: labelled(task, sents) for role, sents in splits.items()}
    y = {role: it.y for role, it in items.items()}
    n_classes = len(task.labels)
    out = []
    layers = list(range(stores["train"].n_layers))
    for X, fits in fit_from_stores(stores, items, layers, level="word", pooling=None, n_classes=n_classes, Cs=Cs,
                                   device=device, seed=seed):
        for i, f in enumerate(fits):
            dev_acc = float((f.predict(X["dev"][i]) == y["dev"]).mean())
            test_m = classification_metrics(y["test"], f.predict(X["test"][i]), n_classes)
            out.append({"layer": f.layer, "C": f.C, "dev_accuracy": dev_acc, "test": test_m})
    best = max(out, key=lambda r: (r["dev_accuracy"], -r["layer"]))
    return {"layers": out, "best": best, "train_words": int(len(y["train"])), "train_sentences": len(used)}
