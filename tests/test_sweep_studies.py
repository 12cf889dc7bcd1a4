"""Sweeps plan and run the study sections (probekit.runner.sweep + probekit.runner.studies): one cell per model ×
section, on a tiny BERT and its random-weights twin with the 16 sentences of tests/data/mini.conllu (no treebank).

After the cells, the aggregation (``run_experiment``) finds every study unit finished and loads no model; the rows of
every section are in the sweep's results table.
"""
from __future__ import annotations

import pickle

import pytest
from conftest import MINI_CONLLU

pytestmark = pytest.mark.usefixtures("one_thread")

SECTIONS = dict(structural={"epochs": 1, "kinds": ["depth"], "control": False, "bootstrap": 0},
                relations={"tasks": ["subject_span"], "span_poolings": ["endpoints"], "bootstrap": 0},
                scalar_mix={"max_epochs": 2, "bootstrap": 100},
                neurons={"fractions": [0.5], "selections": ["top"], "modes": ["zero"], "bootstrap": 0,
                         "max_iter": 50},
                erasure={"effect_sentences": 4, "sanity_mlp": False, "later": [1]})


def _cfg(tmp_path, model_dir, **kw):
    from probekit.config import ExperimentConfig

    base = dict(name="sws", models=[str(model_dir)], dataset="conllu",
                files={r: str(MINI_CONLLU) for r in ("train", "dev", "test")}, tasks=["aux_verb"], seeds=[0],
                mdl=False, control_tasks=False, random_baseline=True, Cs=[1.0], device="cpu",
                store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "results"), figures=["png"])
    base.update(kw)
    return ExperimentConfig(**base)


def test_sweep_runs_every_study_section_per_model(tmp_path, tiny_bert_dir, monkeypatch):
    pytest.importorskip("concept_erasure")
    import probekit.runner.data as rdata
    from probekit.runner.experiment import run_experiment
    from probekit.runner.sweep import CellSpec, describe_plan, plan_sweep, run_sweep

    cfg = _cfg(tmp_path, tiny_bert_dir, **SECTIONS)
    real, twin = str(tiny_bert_dir), f"{tiny_bert_dir}@random"
    plan = plan_sweep(cfg)
    study = [c for c in plan.cells if c.kind == "study"]
    # erasure runs on the config's real models only, as in `probekit run`
    want = {(m, s) for s in SECTIONS for m in (real, twin)} - {(twin, "erasure")}
    assert {(c.model, c.method) for c in study} == want and not any(c.done for c in study)
    text = describe_plan(plan)
    assert f"study cells: {len(want)} total, 0 finished (skipped), {len(want)} to run" in text
    assert "not swept" not in text
    spec = plan.cell_spec(study[0])
    assert pickle.loads(pickle.dumps(spec)) == spec and isinstance(spec, CellSpec)  # as a pool or Ray sends it

    res = run_sweep(cfg, workers=1, progress=False, plan=plan)
    assert res.computed_cells == len(plan.cells)
    df = res.result.table
    rows = {"structural": df.task == "tree_depth", "relations": df.task == "subject_span",
            "scalar_mix": df.probe == "scalar_mix", "neurons": df.method == "neurons:zero",
            "erasure": df.method.astype(str).str.startswith("erasure:")}
    for section, mask in rows.items():
        assert set(df[mask].model) == ({real} if section == "erasure" else {real, twin}), section
    assert (res.folder / "erasure.csv").is_file()
    # every cell is finished: a new plan has nothing to run, and `probekit run` loads no model and gives the same table
    assert all(c.done for c in plan_sweep(cfg).cells)
    loads = []
    monkeypatch.setattr(rdata, "load_model", lambda name, **kw: loads.append(name))
    again = run_experiment(cfg, progress=False)
    assert loads == []
    assert again.table.drop(columns=["train_seconds"], errors="ignore").equals(
        df.drop(columns=["train_seconds"], errors="ignore"))


def test_a_finished_study_unit_makes_its_cell_done_and_a_bad_section_fails_the_plan(tmp_path, tiny_bert_dir, capsys):
    import argparse

    from probekit.errors import ConfigError
    from probekit.runner.sweep import plan_sweep, run_study_cell, run_sweep_cli

    cfg = _cfg(tmp_path, tiny_bert_dir, random_baseline=False, structural={**SECTIONS["structural"],
                                                                           "kinds": ["distance"]})
    plan = plan_sweep(cfg)
    (cell,) = [c for c in plan.cells if c.kind == "study"]
    assert (cell.model, cell.method, cell.done) == (str(tiny_bert_dir), "structural", False)
    assert run_study_cell(plan.cell_spec(cell)).computed_units == 1  # distance, full rank, no control: one unit
    assert [c.done for c in plan_sweep(cfg).cells if c.kind == "study"] == [True]
    assert run_study_cell(plan.cell_spec(cell)).computed_units == 0
    # `probekit sweep`: the plan lists the finished study cell; the study's non-probe rows (the right-branching
    # baseline) are not counted as tuning baselines
    path = tmp_path / "sweep.yaml"
    path.write_text(cfg.to_yaml())
    capsys.readouterr()
    assert run_sweep_cli(argparse.Namespace(config=str(path), overrides=None, address=None, executor="local",
                                            workers=1, dry_run=False, quiet=True)) == 0
    out = capsys.readouterr().out
    assert "study cells: 1 total, 1 finished (skipped), 0 to run" in out and "tuning baselines" not in out
    with pytest.raises(ConfigError, match="Unknown neurons setting"):
        plan_sweep(cfg.replace(neurons={"k": 3}))


@pytest.mark.slow
@pytest.mark.ray
def test_ray_runs_study_cells(tmp_path, tiny_bert_dir):
    """On Ray a study cell is a task of its own (it loads its model); its units are the ones `probekit run` reads."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'probekit-nlp[ray]')")
    from probekit.runner.sweep import plan_sweep, run_sweep

    cfg = _cfg(tmp_path, tiny_bert_dir, random_baseline=False, structural=SECTIONS["structural"],
               relations=SECTIONS["relations"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_sweep(cfg, executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert res.computed_cells == 3  # one probe cell, two study cells
    assert all(c.done for c in plan_sweep(cfg).cells)
    assert {"tree_depth", "subject_span"} <= set(res.result.table.task)
