"""The structural-probe runner on a tiny random BERT and a slice of EWT: rows, baselines, CIs, resume."""
from __future__ import annotations

import pytest

from probekit.config import ExperimentConfig
from probekit.errors import ConfigError
from probekit.runner.structural import (
    StructuralConfig,
    load_structural_config,
    run_structural,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tmp_path, model_dir, data_dir, **kw):
    base = dict(name="t", models=[str(model_dir)], dataset="ud_ewt", data_dir=str(data_dir),
                limit={"train": 30, "dev": 10, "test": 12}, tasks=["upos"], seeds=[0], mdl=False,
                random_baseline=False, store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "results"))
    base.update(kw)
    return ExperimentConfig(**base)


def test_rows_baselines_cis_and_resume(tmp_path, tiny_bert_dir, data_dir):
    cfg = _cfg(tmp_path, tiny_bert_dir, data_dir)
    scfg = StructuralConfig(epochs=2, ranks=[None, 8], bootstrap=100)
    res = run_structural(cfg, scfg, progress=False)
    df = res.table()
    test = df[(df.split == "test") & (df.method == "probe")]
    # tiny BERT: layers 0..2, both kinds, two ranks, real and control
    assert sorted(test.layer.dropna().unique().tolist()) == [0, 1, 2]
    assert set(test.probe) == {"structural", "structural_k8"} and set(test.control) == {False, True}
    assert {"uuas", "dspr", "uuas_ci_low", "uuas_ci_high"} <= set(test[test.task == "tree_distance"].metric)
    assert {"root_acc", "nspr"} <= set(test[test.task == "tree_depth"].metric)
    u = test[(test.metric == "uuas") & ~test.control.astype(bool) & (test.probe == "structural")].value
    lo = test[(test.metric == "uuas_ci_low") & ~test.control.astype(bool) & (test.probe == "structural")].value
    hi = test[(test.metric == "uuas_ci_high") & ~test.control.astype(bool) & (test.probe == "structural")].value
    assert ((lo.values <= u.values) & (u.values <= hi.values)).all()
    rb = df[df.probe == "right_branching"]
    assert set(rb.metric) >= {"uuas", "dspr"} and rb[rb.metric == "uuas"].value.between(0.2, 0.8).all()
    kept = res.records[(str(tiny_bert_dir), "distance", "structural", False)]
    assert len(kept["records"]) == 3 and kept["preds"][0].shape[0] == 3
    # a rerun reuses every unit (same rows, no training)
    again = run_structural(cfg, scfg, progress=False).table()
    assert again.drop(columns=["train_seconds"], errors="ignore").equals(
        df.drop(columns=["train_seconds"], errors="ignore"))


def test_rank_larger_than_hidden_size_names_it(tmp_path, tiny_bert_dir, data_dir):
    cfg = _cfg(tmp_path, tiny_bert_dir, data_dir)
    with pytest.raises(ConfigError, match="rank 64 must be an integer in 1..32"):
        run_structural(cfg, StructuralConfig(epochs=1, ranks=[64], kinds=["depth"], control=False, bootstrap=0),
                       progress=False)


def test_config_section(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("models: [minilm]\nstructural: {ranks: [null, 64], epoch: 3}\n")
    with pytest.raises(ConfigError, match="epoch"):
        load_structural_config(p)
    p.write_text("models: [minilm]\nstructural: {ranks: [null, 64], kinds: [distance]}\n")
    cfg, scfg = load_structural_config(p)
    assert scfg.ranks == [None, 64] and scfg.kinds == ["distance"] and cfg.models == ["minilm"]


def test_figures(tmp_path, tiny_bert_dir, data_dir):
    from probekit.report.structural_figures import structural_figures

    cfg = _cfg(tmp_path, tiny_bert_dir, data_dir, limit={"train": 20, "dev": 8, "test": 12})
    res = run_structural(cfg, StructuralConfig(epochs=1, bootstrap=100, control=False), progress=False)
    files = structural_figures(res, tmp_path / "figs", formats=["png"])
    names = {f.name for f in files}
    assert {"tree_distance_by_layer.png", "tree_depth_by_layer.png"} <= names
    assert any(n.startswith("tree_") and "layer" in n and "by_layer" not in n for n in names)
    assert any(n.startswith("distances_") for n in names)


def test_too_few_bootstrap_resamples_is_a_config_error():
    with pytest.raises(ConfigError, match="'bootstrap' is 20"):
        StructuralConfig.from_dict({"bootstrap": 20})
    assert StructuralConfig.from_dict({"bootstrap": 0}).bootstrap == 0
