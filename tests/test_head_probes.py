"""Per-head probes (issue 20): each head's slice of the `heads` site probed alone, by layer x head, with a heatmap."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import MINI_CONLLU

from probekit.config import ExperimentConfig
from probekit.errors import ConfigError
from probekit.report.head_figures import head_grid, heads_heatmap
from probekit.runner import head_probes as hp
from probekit.runner.experiment import run_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_heads_takes_each_heads_slice():
    X = np.arange(2 * 3 * 8, dtype=np.float32).reshape(2, 3, 8)  # 2 layers, 3 items, 4 heads of width 2
    H = hp.split_heads(X, 4)
    assert H.shape == (8, 3, 2)
    for g in range(2):
        for h in range(4):
            np.testing.assert_array_equal(H[g * 4 + h], X[g][:, 2 * h:2 * h + 2])
    with pytest.raises(ConfigError, match="not a multiple of 3 heads"):
        hp.split_heads(X, 3)


def _cfg(tmp_path, model_dir, **kw):
    base = dict(name="h", models=[str(model_dir)], dataset="conllu",
                files={r: str(MINI_CONLLU) for r in ("train", "dev", "test")}, tasks=["upos", "voice"], seeds=[0],
                mdl=False, random_baseline=False, store_dir=str(tmp_path / "stores"), Cs=[0.1, 1.0],
                results_dir=str(tmp_path / "results"), device="cpu", figures=["png"])
    base.update(kw)
    return ExperimentConfig(**base)


def test_every_head_of_every_block_is_probed(tmp_path, tiny_bert_dir, monkeypatch):
    cfg = _cfg(tmp_path, tiny_bert_dir)
    df = hp.run_head_probes(cfg, progress=False).table()
    acc = df[(df.split == "test") & (df.metric == "accuracy") & (df.method == "probe")]
    # tiny BERT: 2 blocks x 2 heads, for the word task (upos) and the sentence task (voice)
    assert sorted(set(zip(acc.task, acc.layer.astype(int), acc.site))) == [
        (t, layer, f"heads.{h}") for t in ("upos", "voice") for layer in (1, 2) for h in (0, 1)]
    assert acc.value.between(0, 1).all() and set(df.probe) == {"linear", "majority"}
    assert set(acc.n_layers) == {2}  # blocks, as in every probe row
    base = df[(df.method == "baseline") & (df.metric == "accuracy")]
    assert sorted(base.task) == ["upos", "voice"] and base.layer.isna().all()
    # a head's probe reads d_head = 16 features (hidden 32 over 2 heads): 17 weights per upos class
    params = set(acc[acc.task == "upos"].trainable_params)
    assert len(params) == 1 and params.pop() % 17 == 0
    # the heads' probes differ: each read its own slice
    upos = acc[acc.task == "upos"].value.to_numpy()
    assert len(set(np.round(upos, 6))) > 1

    from matplotlib.figure import Figure
    fig = heads_heatmap(df, tmp_path / "fig" / "heads", formats=("png",))
    assert isinstance(fig, Figure) and (tmp_path / "fig" / "heads.png").is_file() and len(fig.axes) == 4
    assert "majority" in fig.axes[0].get_title()
    layers, grid = head_grid(df, str(tiny_bert_dir), "upos")
    assert layers == [1, 2] and grid.shape == (2, 2) and np.isfinite(grid).all()
    ax = Figure().subplots()
    assert heads_heatmap(df, task="upos", ax=ax) is ax.figure

    def no_model(*a, **k):
        raise AssertionError("a rerun must reuse the finished units")

    import probekit.runner.data as rd

    monkeypatch.setattr(rd, "load_config_model", no_model)
    assert hp.run_head_probes(cfg, progress=False).table().equals(df)
    # the command line writes the table and a heatmap per model
    path = tmp_path / "h.yaml"
    path.write_text(cfg.to_yaml())
    assert hp.main([str(path)]) == 0
    out = tmp_path / "results" / "h" / "heads"
    assert (out / "results.csv").is_file() and len(list((out / "figures").glob("heads_accuracy_*.png"))) == 1


def test_relation_tasks_are_refused(tmp_path, tiny_bert_dir):
    with pytest.raises(ConfigError, match="word and sentence tasks; dep_arc"):
        hp.run_head_probes(_cfg(tmp_path, tiny_bert_dir), hp.HeadProbesConfig(tasks=["dep_arc"]), progress=False)
    with pytest.raises(ConfigError, match="word and sentence tasks; dep_arc"):  # before any work in probekit run
        run_experiment(_cfg(tmp_path, tiny_bert_dir, head_probes={"tasks": ["dep_arc"]}), progress=False)


def test_probekit_run_runs_the_head_probes_section(tmp_path, tiny_bert_dir, monkeypatch):
    """``head_probes:`` is a study section of probekit run: the same rows as the module's own run, its heatmap
    drawn, and a rerun loads no model."""
    cfg = _cfg(tmp_path, tiny_bert_dir, tasks=["upos"], head_probes={})
    res = run_experiment(cfg, progress=False)
    heads = res.table[res.table.site.astype(str).str.startswith("heads.")]
    assert sorted(set(heads.site)) == ["heads.0", "heads.1"] and set(heads.layer.dropna().astype(int)) == {1, 2}
    assert (res.table.site == "resid_post").any()  # the per-layer probes ran beside it
    assert any(p.name.startswith("heads_accuracy_") for p in res.figures)
    alone = hp.run_head_probes(cfg, hp.HeadProbesConfig(), progress=False).table()
    acc = alone[(alone.method == "probe") & (alone.split == "test") & (alone.metric == "accuracy")]
    ran = heads[(heads.split == "test") & (heads.metric == "accuracy")]
    assert sorted(acc.value.round(9)) == sorted(ran.value.round(9))

    import probekit.runner.data as rd

    def no_model(*a, **k):
        raise AssertionError("a rerun must reuse the finished units")

    monkeypatch.setattr(rd, "load_config_model", no_model)
    assert len(run_experiment(cfg, progress=False).table) == len(res.table)
