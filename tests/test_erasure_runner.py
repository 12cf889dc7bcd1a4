"""The erasure runner (probekit.runner.erasure) on the tiny BERT and a few EWT sentences, and the shipped config."""
from __future__ import annotations

from pathlib import Path

import pytest

from probekit.errors import ConfigError
from probekit.runner.erasure import ErasureSettings, load_erasure_config, run_erasure

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("concept_erasure")
ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_loads():
    cfg, s = load_erasure_config(ROOT / "configs" / "erasure.yaml")
    assert cfg.models == ["minilm", "smollm2-135m"] and {"aux_verb", "subject"} <= set(cfg.tasks)
    assert s.method == "leace"


def test_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="Unknown erasure method 'lace'"):
        ErasureSettings(method="lace")
    p = tmp_path / "c.yaml"
    p.write_text("models: [minilm]\nerasure: {metod: leace}\n")
    with pytest.raises(ConfigError, match="Unknown erasure setting 'metod'.*Did you mean 'method'"):
        load_erasure_config(p)


def test_runner_rows_and_eraser_reuse(tiny_bert_dir, data_dir, tmp_path):
    from probekit.config import ExperimentConfig
    from probekit.results.table import COLUMNS

    cfg = ExperimentConfig(name="e", models=[str(tiny_bert_dir)], data_dir=str(data_dir),
                           limit={"train": 60, "dev": 30, "test": 30}, tasks=["aux_verb", "subject"], dtype="float32",
                           results_dir=str(tmp_path), store_dir=str(tmp_path / "stores"), device="cpu",
                           random_baseline=False, mlp={"max_epochs": 2})
    s = ErasureSettings(effect_sentences=8, later=[1])
    rows = run_erasure(cfg, s, progress=False)
    assert all(list(r)[:len(COLUMNS)] == COLUMNS for r in rows)
    methods = {r["method"] for r in rows}
    assert methods == {"erasure:leace", "intervention:leace"}
    got = {(r["task"], r["method"], r["probe"], r["metric"], r["layer"], r["control"]) for r in rows}
    for task in ("aux_verb", "subject"):
        for layer in range(3):
            assert (task, "erasure:leace", "linear", "accuracy", layer, False) in got
            assert (task, "erasure:leace", "mlp1", "accuracy", layer, False) in got
            for control in (False, True):
                assert (task, "intervention:leace", None, "embedding_cosine_ci_high", layer, control) in got
    other = {"aux_verb": "subject", "subject": "aux_verb"}
    assert ("aux_verb", "intervention:leace", None, f"accuracy_change:{other['aux_verb']}:layer2", 1, True) in got
    assert (tmp_path / "e" / "erasure.csv").is_file()
    files = sorted((tmp_path / "e" / "erasers").iterdir())
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert run_erasure(cfg, s, progress=False) == rows  # erasers reused (not rewritten), same rows
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_erasure_layers_pick_among_the_stored_layers(tiny_bert_dir, data_dir, tmp_path):
    from probekit.config import ExperimentConfig

    cfg = ExperimentConfig(name="e", models=[str(tiny_bert_dir)], data_dir=str(data_dir),
                           limit={"train": 40, "dev": 20, "test": 20}, tasks=["aux_verb", "subject"], layers=[0, 2],
                           results_dir=str(tmp_path), store_dir=str(tmp_path / "stores"), device="cpu",
                           random_baseline=False)
    rows = run_erasure(cfg, ErasureSettings(effect_sentences=5, later=[1, 2], sanity_mlp=False, layers=[0]),
                       progress=False)
    erased = {r["layer"] for r in rows if r["method"] == "intervention:leace" and r["layer"] is not None}
    assert erased == {0} and {r["layer"] for r in rows if r["method"] == "erasure:leace"} == {0}
    later = {r["metric"] for r in rows if r["metric"].startswith("accuracy_change:") and "_ci_" not in r["metric"]}
    assert later == {"accuracy_change:subject:layer2", "accuracy_change:aux_verb:layer2"}  # layer 1 is not stored
    with pytest.raises(ConfigError, match="Layer 1 is not in this store"):
        run_erasure(cfg, ErasureSettings(effect_sentences=5, layers=[1]), progress=False)
    with pytest.raises(ConfigError, match="erasure.layers must be null"):
        ErasureSettings(layers=[])
