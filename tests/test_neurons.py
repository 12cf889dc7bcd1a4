"""Neuron-level analysis (NeuroX): the elastic-net solver against sklearn, the ranking's definition, selections,
ablation on synthetic features whose informative neurons are known, config errors, the runner and its figures."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from probekit.config import ExperimentConfig, apply_overrides
from probekit.errors import ConfigError, DataError
from probekit.probing.neurons import (
    ElasticNetSettings,
    fit_elastic_net,
    masked_predict,
    n_selected,
    neuron_ordering,
    select,
)
from probekit.runner.neurons import NeuronsConfig, load_neurons_config, run_neurons

pytestmark = pytest.mark.usefixtures("one_thread")

MINI = Path(__file__).resolve().parent / "data" / "mini.conllu"
INFORMATIVE = [3, 17, 29]


def informative_data(n=900, d=40, seed=0):
    """3 classes decided by neurons 3, 17 and 29 (one each, large scale); the other neurons are noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)).astype(np.float32)
    for c, j in enumerate(INFORMATIVE):
        X[:, j] += 3.0 * (y == c)
    return X, y


def objective(fit, X, y, l1, l2, g=0):
    Xs = (X - fit.mean[g]) / fit.scale[g]
    return _objective(Xs, y, fit.W[g].astype(np.float64), fit.b[g].astype(np.float64), l1, l2)


def _objective(Xs, y, W, b, l1, l2):
    z = Xs @ W + b
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean() + l1 * np.abs(W).sum() + l2 * (W * W).sum()


def test_solver_reaches_sklearn_saga_optimum():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    N, d, K = 500, 10, 3
    X = rng.normal(size=(N, d)).astype(np.float32)
    Wt = np.zeros((d, K))
    Wt[:3] = 3 * rng.normal(size=(3, K))
    y = (X @ Wt + rng.gumbel(size=(N, K))).argmax(1)
    st = ElasticNetSettings(l1=0.01, l2=0.005, max_iter=5000, tol=1e-6, device="cpu")
    fit = fit_elastic_net(X[None], y, n_classes=K, settings=st)
    assert fit.converged[0]
    assert (np.diff(fit.objective[0]) <= 1e-7).all()  # monotone FISTA never increases the objective
    Xs = ((X - fit.mean[0]) / fit.scale[0]).astype(np.float64)
    # sklearn: 0.5 (1 - r) |w|^2 + r |w|_1 + C sum CE = C N (mean CE + l1 |w|_1 + l2 |w|^2) with these C, r
    rho = st.l1 / (st.l1 + 2 * st.l2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(penalty="elasticnet", solver="saga", l1_ratio=rho, C=rho / (st.l1 * N), tol=1e-9,
                                max_iter=20000).fit(Xs, y)
    ours = objective(fit, X, y, st.l1, st.l2)
    theirs = _objective(Xs, y, sk.coef_.T, sk.intercept_, st.l1, st.l2)
    assert ours <= theirs + 1e-5
    assert np.abs(fit.W[0] - sk.coef_.T).max() < 0.02
    # the L1 penalty zeroes weights exactly (as the prox does), and both solvers zero the same ones
    assert ((fit.W[0] == 0) == (np.abs(sk.coef_.T) < 1e-6)).mean() > 0.9


def test_layers_in_one_batch_are_independent_and_warm_start_converges_sooner():
    X, y = informative_data(n=400, d=32)
    rng = np.random.default_rng(2)
    block = np.stack([X, rng.normal(size=X.shape).astype(np.float32), X[:, ::-1].copy()])
    st = ElasticNetSettings(l1=1e-3, l2=1e-3, tol=1e-5, device="cpu")
    fit = fit_elastic_net(block, y, n_classes=3, settings=st)
    assert fit.converged.all()
    alone = fit_elastic_net(block[1:2], y, n_classes=3, settings=st)
    assert np.abs(alone.W[0] - fit.W[1]).max() < 5e-3  # to the solver tolerance
    np.testing.assert_allclose(fit.W[2], fit.W[0][::-1], atol=5e-3)  # reversed neurons: reversed weights
    warm = fit_elastic_net(block, y, n_classes=3, settings=st, init=(fit.W, fit.b))
    assert (warm.iterations < fit.iterations).all()
    with pytest.raises(DataError, match="init shapes"):
        fit_elastic_net(block, y, n_classes=3, settings=st, init=(fit.W[:, :5], fit.b))


def neurox_top_neurons(W, percentage):
    """NeuroX's get_top_neurons, written from its definition: the union over classes of the neurons (by |weight|,
    descending) up to and including the first whose cumulative mass reaches ``percentage`` of the class's mass."""
    A = np.abs(W)
    out = set()
    for c in range(A.shape[1]):
        idx = np.argsort(-A[:, c], kind="stable")
        cum = np.cumsum(A[idx, c])
        over = np.flatnonzero(cum >= A[:, c].sum() * percentage)
        out |= set(idx[: over[0] + 1].tolist() if len(over) else idx.tolist())
    return out


def test_ordering_follows_neurox_definition():
    rng = np.random.default_rng(3)
    W = rng.laplace(size=(30, 4))
    order, cutoffs = neuron_ordering(W, search_stride=20)
    assert sorted(order.tolist()) == list(range(30))
    for p in range(21):
        assert set(order[: cutoffs[p]].tolist()) == neurox_top_neurons(W, p / 20), p
    # within a step: by the largest |weight|
    first = order[: cutoffs[0]]
    assert list(first) == sorted(first, key=lambda j: -np.abs(W[j]).max())
    # neurons with zero weight everywhere (the L1 penalty's work) come last; a class of zeros selects nothing
    W[[4, 9]] = 0
    W[:, 2] = 0
    order, cutoffs = neuron_ordering(W, search_stride=20)
    assert set(order[-2:].tolist()) == {4, 9} and cutoffs[-1] == 28


def test_informative_neurons_rank_first_and_their_ablation_hurts():
    X, y = informative_data()
    Xtr, ytr, Xte, yte = X[:600], y[:600], X[600:], y[600:]
    st = ElasticNetSettings(l1=3e-3, l2=1e-3, device="cpu")
    fit = fit_elastic_net(Xtr[None], ytr, n_classes=3, settings=st)
    order, _ = neuron_ordering(fit.W[0])
    assert set(order[:3].tolist()) == set(INFORMATIVE)
    top = select(order, 3, "top")
    assert top.tolist() == INFORMATIVE
    assert not set(select(order, 3, "bottom").tolist()) & set(INFORMATIVE)
    acc = (fit.predict(Xte[None])[0] == yte).mean()
    zeroed = (masked_predict(fit, Xte[None], top[None])[0] == yte).mean()
    others = np.setdiff1d(np.arange(40), top)
    kept_only = (masked_predict(fit, Xte[None], others[None])[0] == yte).mean()
    rng = np.random.default_rng(0)
    rand = [(masked_predict(fit, Xte[None], np.sort(rng.choice(others, 3, replace=False))[None])[0] == yte).mean()
            for _ in range(5)]  # three of the noise neurons zeroed
    assert acc > 0.85 and kept_only > 0.85
    assert zeroed < 0.6 < min(rand)
    # retrained on the three informative neurons alone: as good as all neurons
    keep = fit_elastic_net(Xtr[None][:, :, top], ytr, n_classes=3, settings=st)
    assert (keep.predict(Xte[None][:, :, top])[0] == yte).mean() > acc - 0.03
    # the input block is not modified by ablation
    X2 = Xte.copy()
    masked_predict(fit, X2[None], top[None])
    np.testing.assert_array_equal(X2, Xte)


def test_selection_errors():
    order = np.arange(10)
    with pytest.raises(ConfigError, match="k must be in 1..10"):
        select(order, 11, "top")
    with pytest.raises(ConfigError, match="Unknown neuron selection 'best'"):
        select(order, 2, "best")
    assert n_selected(0.1, 384) == 38 and n_selected(0.001, 20) == 1
    with pytest.raises(ConfigError, match="fractions"):
        n_selected(1.5, 10)
    with pytest.raises(ConfigError, match="l1"):
        ElasticNetSettings(l1=-1)
    with pytest.raises(DataError, match="labels"):
        fit_elastic_net(np.zeros((1, 5, 3), np.float32), np.zeros(4, int), n_classes=2)


@pytest.mark.parametrize("section, message", [
    ({"fraction": [0.1]}, "Unknown neurons setting 'fraction'"),
    ({"fractions": [10]}, r"neurons.fractions must lie in \(0, 1\]"),
    ({"fractions": []}, "neurons.fractions must be a non-empty list"),
    ({"selections": ["middle"]}, "Unknown neuron selection 'middle'"),
    ({"modes": ["zeroed"]}, "Unknown neuron mode 'zeroed'"),
    ({"random_draws": 0}, "random_draws must be an integer >= 1"),
    ({"bootstrap": 10}, "bootstrap must be 0"),
    ({"l2": -0.1}, "l2 must be a number >= 0"),
])
def test_config_errors(section, message):
    with pytest.raises(ConfigError, match=message):
        NeuronsConfig.from_dict(section)


def test_config_section_from_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("models: [minilm]\ntasks: [upos]\nneurons: {fractions: [0.1, 0.2], random_draws: 3}\n")
    cfg, ncfg = load_neurons_config(p)
    assert ncfg.fractions == [0.1, 0.2] and ncfg.random_draws == 3 and ncfg.modes == ["keep", "mask", "zero",
                                                                                      "zero_retrain"]
    over = apply_overrides(cfg.to_dict(), {"neurons.l1": 0.01})
    assert over["neurons"] == {"fractions": [0.1, 0.2], "random_draws": 3, "l1": 0.01}
    p.write_text("models: [minilm]\nneurons: {draws: 3}\n")
    with pytest.raises(ConfigError, match="draws"):
        load_neurons_config(p)


def _cfg(tmp_path, model_dir, **kw):
    base = dict(name="n", models=[str(model_dir)], dataset="conllu", files={r: str(MINI) for r in
                                                                            ("train", "dev", "test")},
                tasks=["upos"], seeds=[0], mdl=False, random_baseline=False, control_tasks=False, Cs=[1.0],
                store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "results"), figures=["png"])
    base.update(kw)
    return ExperimentConfig(**base)


def test_runner_rows_ranking_resume_and_figures(tmp_path, tiny_bert_dir):
    from probekit.report.neuron_figures import neuron_accuracy_figure, neuron_ranking_figure
    from probekit.report.style import new_figure

    cfg = _cfg(tmp_path, tiny_bert_dir)
    ncfg = NeuronsConfig(fractions=[0.25], random_draws=3, bootstrap=100, max_iter=300)
    res = run_neurons(cfg, ncfg, progress=False)
    df = res.table()
    assert sorted(df.layer.unique().tolist()) == [0, 1, 2]
    assert set(df.method) == {"neurons:all", "neurons:keep", "neurons:mask", "neurons:zero", "neurons:zero_retrain"}
    assert set(df.probe) == {"elastic_net", "top_k0.25", "random_k0.25", "bottom_k0.25"}
    acc = df[df.metric == "accuracy"].set_index(["method", "probe", "layer"]).value
    lo = df[df.metric == "accuracy_ci_low"].set_index(["method", "probe", "layer"]).value
    hi = df[df.metric == "accuracy_ci_high"].set_index(["method", "probe", "layer"]).value
    assert len(acc) == 3 * (1 + 4 * 3) and ((lo <= acc + 1e-12) & (acc <= hi + 1e-12)).all()
    assert set(df[df.metric == "accuracy_sd"].probe) == {"random_k0.25"}
    path = tmp_path / "results" / "n" / "neurons" / f"ranking-{tiny_bert_dir.name}-upos.json"
    doc = json.loads(path.read_text())
    assert sorted(doc["layers"]) == ["0", "1", "2"]
    assert all(sorted(v["order"]) == list(range(32)) for v in doc["layers"].values())
    again = run_neurons(cfg, ncfg, progress=False).table()  # every unit reused
    assert again.drop(columns=["train_seconds"], errors="ignore").equals(
        df.drop(columns=["train_seconds"], errors="ignore"))
    fig, axes = new_figure((6, 2.5), 1, 2)
    assert neuron_accuracy_figure(df, ax=axes[0, 0]) is fig
    assert neuron_ranking_figure(doc["layers"], fraction=0.25, ax=axes[0, 1]) is fig
    assert len(axes[0, 0].lines) == 6
    with pytest.raises(ConfigError, match="model 'x' has no rows"):
        neuron_accuracy_figure(df, model="x")


def test_experiment_runs_the_section(tmp_path, tiny_bert_dir):
    from probekit.runner.experiment import run_experiment

    cfg = _cfg(tmp_path, tiny_bert_dir, neurons={"fractions": [0.5], "selections": ["top"], "modes": ["zero"],
                                                 "bootstrap": 0, "max_iter": 100})
    res = run_experiment(cfg, progress=False)
    rows = res.table[res.table.method == "neurons:zero"]
    assert set(rows.probe) == {"top_k0.5"} and set(rows.layer) == {0, 1, 2}
    assert any(p.name.startswith("neurons_") for p in res.figures)
    with pytest.raises(ConfigError, match="Unknown neurons setting"):
        run_experiment(_cfg(tmp_path, tiny_bert_dir, neurons={"k": 3}), progress=False)


def test_command_line_writes_the_study_folder(tmp_path, tiny_bert_dir, capsys):
    import yaml

    from probekit.runner.neurons import main

    assert main([]) == 2 and "usage: python -m probekit.runner.neurons" in capsys.readouterr().err
    cfg = _cfg(tmp_path, tiny_bert_dir, neurons={"fractions": [0.5], "selections": ["bottom"], "modes": ["mask"],
                                                 "bootstrap": 0, "max_iter": 50})
    path = tmp_path / "n.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main([str(path)]) == 0
    out = tmp_path / "results" / "n" / "neurons"
    assert (out / "results.csv").is_file() and (out / "figures" / f"neurons_{tiny_bert_dir.name}_upos_ranking.png").is_file()
