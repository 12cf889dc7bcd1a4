"""Tenney's scalar mix and cumulative scoring: the batched probe on synthetic layers with a known answer, the
expected layer's rules (hand-built counts), the config section, the runner through `probekit run`, the figure."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from probekit.config import ExperimentConfig
from probekit.errors import ConfigError
from probekit.probing.scalar_mix import CUMULATIVE_PROBE, MIX_PROBE, MixSettings, fit_mix
from probekit.report.latex import best_layer_latex
from probekit.report.scalar_mix_figures import mixing_weights
from probekit.report.tables import best_layer_table
from probekit.results.significance import resample_weights, sentence_counts
from probekit.results.stats import cumulative_summary
from probekit.runner.experiment import run_experiment
from probekit.runner.scalar_mix import ScalarMixConfig

pytestmark = pytest.mark.usefixtures("one_thread")

J, D, K = 5, 8, 3
SENT = 10  # items per synthetic "sentence" (the bootstrap resamples sentences)


def _layers(n: int, rng, informative: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``[J, n, D]`` noise; the label is written (class centroids) into layer ``informative`` only."""
    y = rng.integers(0, K, n)
    X = rng.normal(size=(J, n, D)).astype(np.float32)
    if informative is not None:
        X[informative] += 2.0 * np.random.default_rng(99).normal(size=(K, D)).astype(np.float32)[y]
    return X, y


def _data(informative: int | None, seed: int = 0):
    rng = np.random.default_rng(seed)
    parts = {role: _layers(n, rng, informative) for role, n in (("train", 1200), ("dev", 300), ("test", 400))}
    return {r: p[0] for r, p in parts.items()}, {r: p[1] for r, p in parts.items()}


def _summary(fit, y_test, metric="accuracy"):
    n = len(y_test)
    sent = np.arange(n) // SENT
    counts = np.stack([sentence_counts(metric, y_test, fit.pred["test"][p], sent, int(sent.max()) + 1, K)
                       for p in range(len(fit.ends))])
    return cumulative_summary(metric, counts, resample_weights(counts.shape[1], 200, seed=0))


def test_label_only_in_layer_3_gives_weights_and_expected_layer_there():
    X, y = _data(informative=3)
    fit = fit_mix(X, y, n_classes=K, settings=MixSettings(device="cpu", max_epochs=20))
    full = fit.weights[fit.full]
    assert int(np.argmax(full)) == 3 and full[3] > 0.6, full
    np.testing.assert_allclose(fit.weights.sum(1), 1.0, rtol=1e-5)
    # prefix p mixes layers 0..p only: exact zeros past it
    assert all((fit.weights[p, p + 1:] == 0).all() for p in range(J))
    acc = [(fit.pred["test"][p] == y["test"]).mean() for p in range(J)]
    assert max(acc[:3]) < 0.5 and min(acc[3:]) > 0.9, acc  # chance (1/3) until layer 3 enters the mix
    summ = _summary(fit, y["test"])
    assert summ["gain_lo"] > 0.4
    assert abs(summ["expected_layer"] - 3) < 0.25, summ
    assert summ["expected_layer_lo"] <= summ["expected_layer"] <= summ["expected_layer_hi"]


def test_no_gain_gives_no_expected_layer():
    X, y = _data(informative=0)  # everything is in the embeddings: later layers add nothing
    fit = fit_mix(X, y, n_classes=K, settings=MixSettings(device="cpu", max_epochs=10, Cs=(0.1,)))
    summ = _summary(fit, y["test"])
    assert summ["gain_lo"] <= 0  # no gain the test set supports (noise layers in the mix may even cost a little)
    assert math.isnan(summ["expected_layer"]) and math.isnan(summ["expected_layer_lo"])


def test_cumulative_summary_hand_built_counts():
    # 4 prefixes, 50 sentences of 10 words: prefix scores 0.5, 0.5, 0.9, 0.9 on every sentence -> E = 2 exactly
    correct = np.array([5, 5, 9, 9], dtype=float)
    counts = np.stack([np.tile([c, 10.0], (50, 1)) for c in correct])
    summ = cumulative_summary("accuracy", counts, resample_weights(50, 100, seed=0))
    assert summ["expected_layer"] == pytest.approx(2.0) and summ["gain"] == pytest.approx(0.4)
    assert summ["gain_lo"] == pytest.approx(0.4) and summ["expected_layer_hi"] == pytest.approx(2.0)
    np.testing.assert_allclose(summ["delta"], [0.0, 0.4, 0.0])
    flat = np.stack([np.tile([7.0, 10.0], (50, 1))] * 4)  # no gain at all
    assert math.isnan(cumulative_summary("accuracy", flat, resample_weights(50, 100, seed=0))["expected_layer"])


def test_deterministic_given_the_seed_and_full_mix_only():
    X, y = _data(informative=2, seed=1)
    st = MixSettings(device="cpu", max_epochs=3, Cs=(0.1, 1.0), seed=5)
    a, b = fit_mix(X, y, n_classes=K, settings=st), fit_mix(X, y, n_classes=K, settings=st)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.pred["test"], b.pred["test"])
    only = fit_mix(X, y, n_classes=K, settings=st, cumulative=False)
    assert only.ends == [J - 1] and only.weights.shape == (1, J) and set(only.pred) == {"dev", "test"}


def test_settings_and_section_errors(tmp_path):
    with pytest.raises(ConfigError, match="lrr"):
        ScalarMixConfig.from_dict({"lrr": 0.1})
    with pytest.raises(ConfigError, match="f1"):
        ScalarMixConfig(metric="f1")
    with pytest.raises(ConfigError, match="bootstrap"):
        ScalarMixConfig(bootstrap=10)
    with pytest.raises(ConfigError, match="max_epochs"):
        ScalarMixConfig(max_epochs=0)
    with pytest.raises(ConfigError, match="Cs"):
        MixSettings(Cs=(0.0,))
    cfg = ExperimentConfig(tasks=["upos", "aux_verb"], scalar_mix={"metric": "pos_f1"})
    with pytest.raises(ConfigError, match="upos"):
        ScalarMixConfig.from_dict(cfg.scalar_mix).task_names(cfg)
    assert ScalarMixConfig(tasks=["aux_verb"], metric="pos_f1").task_names(cfg) == ["aux_verb"]
    with pytest.raises(ConfigError, match="sentence-level"):
        ScalarMixConfig(tasks=["sentence_length"]).task_names(cfg)
    p = tmp_path / "c.yaml"
    p.write_text("models: [minilm]\ntasks: [upos]\nscalar_mix: {max_epochs: 5}\n")
    assert ExperimentConfig.from_yaml(p).scalar_mix == {"max_epochs": 5}


def _run_cfg(tmp_path, model_dir, **kw):
    from conftest import MINI_CONLLU

    base = dict(name="mix", models=[str(model_dir)], dataset="conllu",
                files={r: str(MINI_CONLLU) for r in ("train", "dev", "test")}, tasks=["aux_verb"], seeds=[0],
                mdl=False, control_tasks=False, random_baseline=False, store_dir=str(tmp_path / "stores"),
                results_dir=str(tmp_path / "results"), figures=["png"],
                scalar_mix={"max_epochs": 3, "bootstrap": 100})
    base.update(kw)
    return ExperimentConfig(**base)


def test_probekit_run_writes_the_rows_summary_table_and_figure(tmp_path, tiny_bert_dir):
    cfg = _run_cfg(tmp_path, tiny_bert_dir)
    res = run_experiment(cfg, progress=False)
    df = pd.read_csv(res.folder / "results.csv")
    cum = df[df.probe == CUMULATIVE_PROBE]
    assert sorted(cum[(cum.metric == "accuracy") & (cum.split == "test")].layer.dropna().astype(int)) == [0, 1, 2]  # tiny BERT: layers 0..2
    assert {"accuracy_ci_low", "accuracy_ci_high", "pos_f1", "pos_f1_ci_low"} <= set(cum.metric)
    mix = df[df.probe == MIX_PROBE]
    w = mix[mix.metric == "mix_weight"].sort_values("layer")
    assert len(w) == 3 and w.value.sum() == pytest.approx(1.0, abs=1e-6)
    assert {"gain", "gain_ci_low", "expected_layer", "expected_layer_ci_high", "center_of_gravity", "delta"} \
        <= set(mix.metric)
    full = mix[(mix.metric == "accuracy") & mix.layer.isna()].value.iloc[0]
    assert full == cum[(cum.metric == "accuracy") & (cum.layer == 2)].value.iloc[0]  # the full mix = prefix 0..2
    s = res.summary
    assert (s[s.probe == MIX_PROBE].metric == "center_of_gravity").sum() == 1
    assert (s.metric == "expected_layer_cummax").sum() == 1  # the per-layer stand-in keeps its own name
    table = best_layer_table(s)
    assert set(table.probe) == {"linear"}  # cumulative prefixes are not per-layer probes
    assert np.isfinite(table.center_of_gravity.iloc[0])
    assert r"\mathrm{E}_s" in best_layer_latex(table)
    assert (res.folder / "figures" / "mixing_weights.png").is_file()
    # a rerun reuses the unit: the same rows
    again = pd.read_csv(run_experiment(cfg, progress=False).folder / "results.csv")
    assert again.drop(columns=["train_seconds"], errors="ignore").equals(df.drop(columns=["train_seconds"],
                                                                                  errors="ignore"))


def test_mixing_weights_figure_and_ax():
    from matplotlib.figure import Figure

    rows = []
    for model, el in (("m", 2.2), ("m@random", float("nan"))):
        for task in ("upos", "aux_verb"):
            for layer, w in enumerate([0.1, 0.2, 0.6, 0.1]):
                rows.append(dict(model=model, task=task, probe=MIX_PROBE, layer=layer, metric="mix_weight", mean=w))
                if layer:
                    rows.append(dict(model=model, task=task, probe=MIX_PROBE, layer=layer, metric="delta", mean=w / 2))
            for metric, v in (("expected_layer", el), ("expected_layer_ci_low", el - 0.3),
                              ("expected_layer_ci_high", el + 0.2), ("center_of_gravity", 1.7)):
                rows.append(dict(model=model, task=task, probe=MIX_PROBE, layer="", metric=metric, mean=v))
    s = pd.DataFrame(rows)
    fig = mixing_weights(s)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    own = Figure()
    ax = own.add_subplot()
    assert mixing_weights(s, ax=ax, model="m") is own
    assert len(ax.patches) == 2 * (4 + 3)  # per task: 4 weight bars and 3 delta bars
    with pytest.raises(ConfigError, match="model=NAME"):
        mixing_weights(s, ax=own.add_subplot(2, 1, 2))
    assert mixing_weights(s[s.metric != "mix_weight"]) is None
