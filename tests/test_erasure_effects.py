"""Effects of erasure on the model (probekit.causal.effects): a synthetic model whose output reads one known direction
of layer 1 changes when the property along that direction is erased, and does not when an orthogonal one is."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.causal.effects import intervention_effects
from probekit.causal.erasure import fit_leace
from probekit.results.significance import bootstrap_ratio

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("concept_erasure")


def test_bootstrap_ratio():
    num, den = np.array([1.0, 2.0, 3.0, 6.0]), np.array([1, 1, 1, 3])
    v, lo, hi = bootstrap_ratio(num, den)
    assert v == pytest.approx(2.0) and lo <= v <= hi and hi - lo > 0
    assert bootstrap_ratio(np.full(50, 0.5))[1:] == (0.5, 0.5)  # no spread, no width
    assert all(np.isnan(bootstrap_ratio(np.array([]))))


@pytest.fixture(scope="module")
def readout_model(tiny_llama_dir, ewt_dev, tmp_path_factory):
    """The tiny Llama made into a model whose output reads only ``u · h1``: block 1 adds nothing (its output
    projections are zero, so layer 2 = layer 1), no final norm, and an LM head of rank one along ``u``.

    Property A (the known direction): is ``h1 · u`` above its median. Property B: is ``h1 · w`` above its median for
    the second principal direction ``w``; ``u`` is the first one made orthogonal to B's covariance with the features,
    so that erasing B cannot move ``h1 · u``.
    """
    import torch

    from probekit.activations.extract import extract
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_llama_dir), device="cpu")
    blk = lm.model.layers[1]
    blk.self_attn.o_proj.weight.zero_()
    blk.mlp.down_proj.weight.zero_()
    lm.model.norm = torch.nn.Identity()
    sents = [s for s in ewt_dev[:200] if len(s) <= 14][:40]
    X = extract(lm, sents, store_root=tmp_path_factory.mktemp("st"), dtype="float32", progress=False).layer(1)
    Xc = X - X.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    w = vt[1]
    yb = (X @ w > np.median(X @ w)).astype(np.int64)
    cb = Xc.T @ (yb - yb.mean())
    u = vt[0] - (vt[0] @ cb) / (cb @ cb) * cb
    u /= np.linalg.norm(u)
    ya = (X @ u > np.median(X @ u)).astype(np.int64)
    r = torch.randn(lm.tokenizer.vocab_size + 8, generator=torch.Generator().manual_seed(0))[:len(lm.tokenizer)]
    # confident: a wrong guess costs much, so the loss moves whenever u . h1 does
    head = torch.outer(r, torch.as_tensor(u, dtype=torch.float32)) * 30
    return lm, sents, X, ya, yb, head


def test_erasing_the_read_direction_changes_the_output_and_an_orthogonal_one_does_not(readout_model):
    lm, sents, X, ya, yb, head = readout_model
    res = {}
    for name, y in (("A", ya), ("B", yb)):
        er = fit_leace(X, y, n_classes=2, layer=1)
        effects = intervention_effects(lm, sents, y, {1: er}, majority=0, head=head)
        res[name] = {(e.edit, e.metric): e for e in effects}
    a = res["A"][("leace", "loss_change_all")]
    b = res["B"][("leace", "loss_change_all")]
    assert abs(a.value) > 0.05 and not a.ci_low <= 0 <= a.ci_high, a  # A is used: the loss moves
    assert abs(b.value) < 1e-3 * abs(a.value), (a, b)  # B is not: the read direction is untouched
    assert abs(res["B"][("leace", "loss_change_next")].value) < 1e-3 * abs(a.value)
    # the controls are there, at the same layer, with intervals
    ctrl = res["A"][("random", "loss_change_all")]
    assert ctrl.layer == 1 and ctrl.ci_low <= ctrl.value <= ctrl.ci_high


def test_probe_and_embedding_effects_on_an_encoder(tiny_bert_dir, ewt_dev, tmp_path):
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.probing.linear import fit_layers
    from probekit.tasks import get_task

    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = [s for s in ewt_dev[:200] if len(s) <= 14][:40]
    store = extract(lm, sents, store_root=tmp_path, dtype="float32", progress=False)
    aux, subj = get_task("aux_verb").encode(sents), get_task("subject").encode(sents)
    fits = fit_layers(store.layers([2]), subj, n_classes=2, fixed_C=[1.0], device="cpu")
    er = fit_leace(store.layer(0), aux, n_classes=2, layer=0)
    # erasing aux at layer 0 changes the sentence embedding (cosine under 1), and every effect has its control
    effects = intervention_effects(lm, sents, aux, {0: er}, majority=0, probes={"subject": (subj, {2: fits[0]})})
    by = {(e.edit, e.metric): e for e in effects}
    assert set(by) == {(k, m) for k in ("leace", "random") for m in ("accuracy_change:subject:layer2",
                                                                      "embedding_cosine")}
    cos = by[("leace", "embedding_cosine")]
    assert 0.5 < cos.value < 1 and cos.ci_low <= cos.value <= cos.ci_high
    acc = by[("leace", "accuracy_change:subject:layer2")]
    assert -1 <= acc.ci_low <= acc.value <= acc.ci_high <= 1
    rows = acc.rows(model="m", task="aux_verb", method="intervention:leace")
    assert [r["metric"] for r in rows] == ["accuracy_change:subject:layer2", "accuracy_change:subject:layer2_ci_low",
                                           "accuracy_change:subject:layer2_ci_high"]
    assert rows[0]["control"] is False and by[("random", "embedding_cosine")].rows(method="x")[0]["control"] is True
