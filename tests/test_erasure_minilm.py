"""The LEACE guarantee on real features: after erasure, a linear probe retrained on minilm's erased features is within
one point of the majority baseline at every layer (small EWT slices; marked slow)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("concept_erasure")


@pytest.mark.parametrize("task_name", ["aux_verb", "upos"])
def test_linear_probe_falls_to_majority_after_leace_on_minilm(task_name, ewt_dev, tmp_path_factory):
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.causal.erasure import fit_erasers
    from probekit.causal.sanity import sanity_scores
    from probekit.tasks import get_task

    lm = load_model("minilm", device="cpu")
    # EWT dev cut in three: 300 sentences to fit the erasers and train the probes, 100 to choose C, 200 to score
    data = {"train": ewt_dev[:300], "dev": ewt_dev[300:400], "test": ewt_dev[400:600]}
    root = tmp_path_factory.mktemp("stores")
    stores = {r: extract(lm, s, split=r, store_root=root, dtype="float32", progress=False) for r, s in data.items()}
    task = get_task(task_name)
    erasers = fit_erasers(stores["train"], task, data["train"], weights_hash=lm.weights_hash)
    scores = sanity_scores(erasers, stores, data, task, mlp=False, device="cpu")
    assert [s.layer for s in scores] == list(range(lm.num_layers + 1))
    for s in scores:
        assert s.linear_before > s.majority + 0.02, s  # the concept was linearly there (aux_verb layer 6: +0.03)
        assert abs(s.linear_after - s.majority) <= 0.01, s
