"""The study registry (probekit.runner.studies): one registration per study section of the config."""
from __future__ import annotations

import pytest

from probekit.config import STUDY_SECTIONS, ExperimentConfig
from probekit.errors import ConfigError
from probekit.runner.studies import STUDIES, present


def test_one_registration_per_study_section():
    assert tuple(s.section for s in STUDIES) == STUDY_SECTIONS


def test_present_parses_every_section_up_front():
    cfg = ExperimentConfig(tasks=["upos", "aux_verb"], structural={"epochs": 1}, neurons={})
    assert [(s.section, type(st).__name__) for s, st in present(cfg)] == [("structural", "StructuralConfig"),
                                                                         ("neurons", "NeuronsConfig")]
    assert present(ExperimentConfig()) == []
    with pytest.raises(ConfigError, match="upos"):  # scalar_mix's task check is part of its settings
        present(ExperimentConfig(tasks=["upos"], scalar_mix={"metric": "pos_f1"}))
    with pytest.raises(ConfigError, match="Unknown neurons setting"):
        present(ExperimentConfig(neurons={"k": 3}))


def test_a_run_loads_each_model_once_and_a_finished_run_none(tmp_path, tiny_bert_dir, monkeypatch):
    """The probes and two study sections share one loaded model per model (the model and its random-weights twin:
    two loads, not six); a rerun, every unit finished, loads nothing."""
    from conftest import MINI_CONLLU

    import probekit.runner.data as rdata
    from probekit.runner.experiment import run_experiment

    loads = []
    real = rdata.load_model

    def counting(name, **kw):
        loads.append(name)
        return real(name, **kw)

    monkeypatch.setattr(rdata, "load_model", counting)
    cfg = ExperimentConfig(name="two", models=[str(tiny_bert_dir)], dataset="conllu",
                           files={r: str(MINI_CONLLU) for r in ("train", "dev", "test")}, tasks=["aux_verb"],
                           seeds=[0], mdl=False, control_tasks=False, random_baseline=True, Cs=[1.0],
                           store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "results"), figures=["png"],
                           structural={"epochs": 1, "kinds": ["depth"], "control": False, "bootstrap": 0},
                           scalar_mix={"max_epochs": 2, "bootstrap": 100})
    res = run_experiment(cfg, progress=False)
    twin = f"{tiny_bert_dir}@random"
    assert sorted(loads) == sorted([str(tiny_bert_dir), twin])
    df = res.table
    assert set(df[df.task == "tree_depth"].model) == set(df[df.probe == "scalar_mix"].model) == {str(tiny_bert_dir),
                                                                                                 twin}
    loads.clear()
    again = run_experiment(cfg, progress=False)
    assert loads == []
    assert again.table.drop(columns=["train_seconds"], errors="ignore").equals(
        df.drop(columns=["train_seconds"], errors="ignore"))
