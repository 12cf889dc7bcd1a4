"""The probing engine: probe-family registry, ProbePolicy, the feature loader and probe_task on a toy store."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax
from scipy.special import softmax as scipy_softmax

from probekit.config import ExperimentConfig
from probekit.data.conllu_io import Sentence
from probekit.errors import ConfigError
from probekit.probing import registry
from probekit.probing.features import FeatureCache, layer_groups, log_softmax, softmax
from probekit.probing.registry import (
    LayerResult,
    ProbeFamily,
    get_probe,
    probe_names,
    register_probe,
)
from probekit.runner.probe_task import probe_task
from probekit.runner.units import ProbePolicy, Unit
from probekit.tasks import get_task


def test_builtin_families_are_registered_with_their_rules():
    assert {"linear", "mlp1", "mlp2"} <= set(probe_names())
    linear, mlp2 = get_probe("linear"), get_probe("mlp2")
    assert linear.seed_dependent and linear.joint_controls and linear.has_mdl
    assert mlp2.seed_dependent and not mlp2.joint_controls and not mlp2.has_mdl and mlp2.hidden_layers == 2


def test_unknown_probe_names_get_did_you_mean():
    with pytest.raises(ConfigError, match="Unknown probe 'lineer'.*Did you mean 'linear'"):
        get_probe("lineer")
    with pytest.raises(ConfigError, match="Unknown probe 'mlp3'"):
        ExperimentConfig(probes=["mlp3"])


def test_policy_defaults_match_the_configs():
    """ProbePolicy (what the notebook API builds) and ExperimentConfig must mean the same by default."""
    cfg = ExperimentConfig()
    assert ProbePolicy.from_config(cfg) == ProbePolicy(experiment=cfg.name)
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    assert {f.name for f in dataclasses.fields(ProbePolicy)} - names == {"experiment"}


def test_policy_rules():
    p = ProbePolicy(probes=("mlp1", "linear"), seeds=(3, 1), mdl=True, control_tasks=True)
    assert p.runs_mdl("linear", 3) and not p.runs_mdl("linear", 1) and not p.runs_mdl("mlp1", 3)
    assert p.writes_majority("mlp1") and not p.writes_majority("linear")
    assert p.control_seeds("linear") == [1, 3] and p.control_seeds("mlp1") is None
    assert not p.shares_fit("linear") and not p.shares_fit("mlp1")  # the seed reaches every fit (issue 18)
    assert p.fit_seed("linear", 3) == 3 and p.fit_seed("mlp1", 3) == 3
    # the linear probe's joint control heads keep its seeds in one sweep cell; without controls nothing is shared
    assert p.seeds_share_a_cell("linear") and not p.seeds_share_a_cell("mlp1")
    assert not ProbePolicy(probes=("linear",), control_tasks=False).seeds_share_a_cell("linear")
    assert ProbePolicy(control_tasks=False).control_seeds("linear") is None
    assert not ProbePolicy(mdl=False).runs_mdl("linear", 0)


def test_layer_groups_stay_under_the_budget():
    groups = layer_groups(list(range(7)), n_rows=1000, d=10, budget=3 * 1000 * 10 * 4)
    assert groups == [[0, 1, 2], [3, 4, 5], [6]]
    assert layer_groups([4, 5], n_rows=10**9, d=10**3, budget=1) == [[4], [5]]  # one layer even over the budget


def test_softmax_matches_scipy():
    z = np.random.default_rng(0).standard_normal((5, 4)) * 30
    np.testing.assert_allclose(softmax(z), scipy_softmax(z, axis=1), rtol=1e-12)
    np.testing.assert_allclose(log_softmax(z), scipy_log_softmax(z, axis=1), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------- toy store

WORDS = ["I", "have", "seen", "it", "."] * 8
UPOS = ["PRON", "AUX", "VERB", "PRON", "PUNCT"] * 8


class _Store:
    """The part of ActivationStore that probe_task reads: 3 layers of 4-wide word vectors (layer 2 separates AUX)."""

    n_layers, hidden_size, manifest, site = 3, 4, {"word_pooling": "first"}, "resid_post"

    def __init__(self, name: str, seed: int):
        self.path = name
        rng = np.random.default_rng(seed)
        self.X = rng.standard_normal((3, len(WORDS), 4)).astype(np.float32)
        self.X[2, :, 0] += 12.0 * np.array([u == "AUX" for u in UPOS])
        self.loads = 0

    def _check_layer(self, layer):
        return layer

    def layers(self, layers, rows):
        self.loads += 1
        return self.X[layers][:, rows]


def _stores():
    return {role: _Store(role, i) for i, role in enumerate(("train", "dev", "test"))}


def _data():
    return {role: [Sentence.from_words(WORDS, upos=UPOS, sent_id=role)] for role in ("train", "dev", "test")}


_INFO = {"name": "m", "kind": "encoder", "hash": "h" * 16}


@pytest.fixture
def centroid_family():
    """A probe family defined in a test: registering it is all it takes for probe_task to run it."""

    class Centroid(ProbeFamily):
        def fit(self, X, y, *, n_classes, settings, seed, reg=None):
            out = []
            for i in range(X["train"].shape[0]):
                means = np.stack([X["train"][i][y["train"] == c].mean(0) if (y["train"] == c).any()
                                  else np.full(X["train"].shape[2], np.inf) for c in range(n_classes)])

                def predict(A, means=means):
                    return np.argmin(((A[:, None, :] - means[None]) ** 2).sum(2), axis=1)

                out.append(LayerResult(predict(X["dev"][i]), predict(X["test"][i]), int(means.size), None))
            return out

    register_probe("centroid_test")(Centroid)
    yield get_probe("centroid_test")
    registry._FAMILIES.pop("centroid_test")


def test_a_registered_family_runs_without_runner_changes(centroid_family):
    policy = ProbePolicy(probes=("centroid_test",), seeds=(0, 1), control_tasks=True, mdl=True)
    units = [Unit("m", "aux_verb", "default", "centroid_test", s) for s in (0, 1)]
    rows = probe_task(lm_info=_INFO, stores=_stores(), data=_data(), task=get_task("aux_verb"), policy=policy,
                      units=units)
    assert set(rows) == set(units)
    acc = {(r["layer"], r["control"]): r["value"] for r in rows[units[0]]
           if r["metric"] == "accuracy" and r["split"] == "test" and r["probe"] == "centroid_test"}
    assert acc[(2, False)] == 1.0  # the separable layer
    assert (2, True) in acc  # controls are fitted through the family's default fit_controls
    assert not any(r["metric"].startswith("mdl_") for r in rows[units[0]])  # has_mdl is False
    assert any(r["probe"] == "majority" for r in rows[units[1]])  # the first (only) probe writes majority rows


def test_probe_task_fits_the_linear_probe_per_seed_and_reports_its_iterations():
    policy = ProbePolicy(probes=("linear",), seeds=(0, 1), control_tasks=True, mdl=False, device="cpu")
    units = [Unit("m", "aux_verb", "default", "linear", s) for s in (0, 1)]
    stores = _stores()
    cache = FeatureCache()
    rows = probe_task(lm_info=_INFO, stores=stores, data=_data(), task=get_task("aux_verb"), policy=policy,
                      units=units, feature_cache=cache)
    its = [r for r in rows[units[0]] if r["metric"] == "fit_iterations"]
    assert its and all(r["split"] == "train" and r["value"] >= 1 for r in its)  # one per layer, from the seed's fit
    assert {r["layer"] for r in its} == {r["layer"] for r in rows[units[0]] if r["metric"] == "accuracy"
                                         and r["layer"] is not None}
    assert all(r["seed"] == u.seed for u in units for r in rows[u])
    loads = [s.loads for s in stores.values()]
    probe_task(lm_info=_INFO, stores=stores, data=_data(), task=get_task("aux_verb"), policy=policy, units=units,
               feature_cache=cache)
    assert [s.loads for s in stores.values()] == loads  # the cache served the same rows again


def test_a_seed_free_family_is_fitted_once_for_all_seeds(centroid_family, monkeypatch):
    calls = []
    fit = type(centroid_family).fit

    def counting_fit(self, *a, **kw):
        calls.append(kw["seed"])
        return fit(self, *a, **kw)

    monkeypatch.setattr(type(centroid_family), "fit", counting_fit)
    monkeypatch.setattr(type(centroid_family), "seed_dependent", False)
    policy = ProbePolicy(probes=("centroid_test",), seeds=(0, 1, 2), control_tasks=False, mdl=False)
    units = [Unit("m", "aux_verb", "default", "centroid_test", s) for s in (0, 1, 2)]
    rows = probe_task(lm_info=_INFO, stores=_stores(), data=_data(), task=get_task("aux_verb"), policy=policy,
                      units=units)
    assert calls == [0]  # one fit, with seed 0, repeated for every seed's unit
    scores = [[(r["layer"], r["metric"], r["value"]) for r in rows[u] if r["probe"] == "centroid_test"]
              for u in units]
    assert scores[0] == scores[1] == scores[2]
