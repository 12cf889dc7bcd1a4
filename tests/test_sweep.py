"""Sweeps (probekit.runner.sweep): plan, local process pool, Ray, resume after a kill.

A sweep of 2 tiny models (BERT encoder, GPT-2 decoder) × 2 tasks × 3 seeds of linear probes on a
40/20/20-sentence slice of EWT: 12 units in 4 cells (a linear probe's seeds share one joint control problem, so they
form one cell; MLP probes get a cell per seed). The local run and the Ray run use separate results
and store folders and must give byte-identical ``results.csv`` files.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import tiny

TASKS = ["aux_verb", "upos"]
SEEDS = [0, 1, 2]
N_UNITS = 2 * len(TASKS) * len(SEEDS)
N_CELLS = 2 * len(TASKS)


def _cfg(models, results_dir: Path, store_dir: Path, name: str = "sw"):
    from probekit.config import ExperimentConfig

    return ExperimentConfig(name=name, models=[str(m) for m in models], tasks=TASKS, seeds=SEEDS,
                            limit={"train": 40, "dev": 20, "test": 20}, mdl=False, random_baseline=False,
                            control_tasks=True, data_dir=str(tiny.data_dir()), store_dir=str(store_dir),
                            results_dir=str(results_dir), figures=["png"])


@pytest.fixture(scope="module")
def models(tiny_bert_dir, tiny_gpt2_dir, data_dir):
    return [tiny_bert_dir, tiny_gpt2_dir]


@pytest.fixture(scope="module")
def local_run(models, tmp_path_factory):
    """The sweep run once on the local executor with 2 worker processes."""
    from probekit.runner.sweep import plan_sweep, run_sweep

    root = tmp_path_factory.mktemp("sweep_local")
    cfg = _cfg(models, root / "results", root / "stores")
    before = plan_sweep(cfg)
    res = run_sweep(cfg, executor="local", workers=2, progress=False)
    return cfg, before, res


def test_plan_before_running(models, tmp_path):
    from probekit.runner.sweep import describe_plan, plan_sweep

    cfg = _cfg(models, tmp_path / "results", tmp_path / "stores")
    plan = plan_sweep(cfg)
    assert len(plan.cells) == N_CELLS
    assert {(c.model, c.task, tuple(c.seeds)) for c in plan.cells} == {(str(m), t, tuple(SEEDS)) for m in models
                                                                      for t in TASKS}
    assert all(not c.done and len(c.units) == len(SEEDS) for c in plan.cells)
    text = describe_plan(plan, workers=2)
    assert f"probe cells: {N_CELLS} total, 0 finished (skipped), {N_CELLS} to run" in text
    assert "time estimate: unknown" in text  # nothing measured in a fresh results folder
    assert "not swept" not in text
    studies = describe_plan(plan_sweep(cfg.replace(structural={"epochs": 1}, neurons={})))
    assert "study cells: 4 total, 0 finished (skipped), 4 to run" in studies  # model × section, planned
    # MLP probes: one cell per seed; unit keys are the runner's
    from probekit.activations.models import fingerprint
    from probekit.runner.units import plan_units

    plan2 = plan_sweep(cfg.replace(probes=["linear", "mlp1"]))
    mlp = [c for c in plan2.cells if c.method == "mlp1"]
    assert len(mlp) == 2 * len(TASKS) * len(SEEDS) and all(len(c.seeds) == 1 and len(c.units) == 1 for c in mlp)
    runner = {u.key for m in models for u in plan_units(plan2.config, str(m), fingerprint(str(m)), plan2.data_fp)}
    assert {k for c in plan2.cells for k in c.units} == runner


def test_local_sweep_matches_runner_units(local_run):
    """Every cell ran once; the unit files are exactly the runner's units (run_experiment found them all)."""
    cfg, before, res = local_run
    assert res.computed_cells == N_CELLS and res.computed_units == N_UNITS
    runs = Path(res.folder) / "runs"
    expected = {k for c in before.cells for k in c.units}
    assert {p.stem for p in runs.glob("*.json")} == expected
    df = res.result.table
    assert set(df["model"]) == {str(m) for m in cfg.models} and set(df["task"]) == set(TASKS)
    assert sorted(df["seed"].dropna().astype(int).unique()) == SEEDS
    assert (Path(res.folder) / "results.csv").is_file() and (Path(res.folder) / "summary.csv").is_file()
    # a second sweep computes nothing
    from probekit.runner.sweep import describe_plan, plan_sweep

    again = plan_sweep(cfg)
    assert all(c.done for c in again.cells)
    assert "nothing to run" in describe_plan(again)


def test_estimate_from_measured_runs(local_run, models):
    """A new experiment in the same results folder gets a time estimate from the finished units."""
    from probekit.runner.sweep import describe_plan, plan_sweep

    cfg, _, _ = local_run
    plan = plan_sweep(cfg.replace(name="sw_more", seeds=[0, 1, 2, 3]))
    assert all(c.estimate_s is not None and c.estimate_s > 0 for c in plan.cells)
    text = describe_plan(plan, workers=2)
    assert "time estimate: ~" in text and "unknown" not in text
    assert "stores already extracted" in text


def test_ray_missing_gives_clear_error(monkeypatch, local_run):
    from probekit.errors import ConfigError
    from probekit.runner.sweep import run_sweep

    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    cfg, _, _ = local_run
    with pytest.raises(ConfigError, match=r"probekit-nlp\[ray\]"):
        run_sweep(cfg, executor="ray")


@pytest.mark.slow
@pytest.mark.ray
def test_ray_sweep_identical_to_local(local_run, models, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'probekit-nlp[ray]')")
    from probekit.runner.sweep import run_sweep

    cfg_local, _, res_local = local_run
    cfg = _cfg(models, tmp_path / "results", tmp_path / "stores")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_sweep(cfg, executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert res.computed_cells == N_CELLS and res.computed_units == N_UNITS
    ext = (Path(res.folder) / "sweep" / "extract.jsonl").read_text().splitlines()
    assert len(ext) == 2 and '"computed_shards": 3' in ext[0]  # stores made by the Ray extraction tasks
    a = (Path(res_local.folder) / "results.csv").read_bytes()
    b = (Path(res.folder) / "results.csv").read_bytes()
    assert a == b, "Ray and local sweeps gave different results tables"


def _cli_sweep(models, cfg_local, tmp_path, *, workers: int, **popen):
    """`probekit sweep` in a subprocess: same stores as the local run (content-addressed: pure reuse), a fresh
    results folder. Returns (config, its runs folder, the process)."""
    cfg = _cfg(models, tmp_path / "results", Path(cfg_local.store_dir))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "PROBEKIT_DATA_DIR": str(tiny.data_dir())}
    proc = subprocess.Popen([sys.executable, "-m", "probekit.cli", "-q", "sweep", str(path), "--workers", str(workers)],
                            cwd=tiny.repo_root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)
    return cfg, tmp_path / "results" / cfg.name / "runs", proc


def test_killed_sweep_resumes_without_recomputing(local_run, models, tmp_path):
    """Kill a CLI sweep after its first finished unit; the rerun leaves finished unit files untouched."""
    from probekit.runner.sweep import plan_sweep, run_sweep

    cfg_local, _, res_local = local_run
    cfg, runs, proc = _cli_sweep(models, cfg_local, tmp_path, workers=1)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if runs.is_dir() and any(runs.glob("*.json")):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the sweep ended before it could be killed:\n" + proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in runs.glob("*.json")}
    assert 1 <= len(finished) < N_UNITS, f"killed after {len(finished)} of {N_UNITS} units"
    plan = plan_sweep(cfg)
    done_units = {k for c in plan.cells for k in c.units if f"{k}.json" in finished}
    assert len(done_units) == len(finished)
    assert sum(c.done for c in plan.cells) == sum(all(f"{k}.json" in finished for k in c.units) for c in plan.cells)
    res = run_sweep(cfg, workers=1, progress=False, plan=plan)
    assert res.computed_units == N_UNITS - len(finished)
    assert res.computed_cells == sum(not c.done for c in plan.cells)
    for name, stamp in finished.items():
        p = runs / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"{name} was recomputed"
    assert (Path(res.folder) / "results.csv").read_bytes() == (Path(res_local.folder) / "results.csv").read_bytes()


def test_ctrl_c_stops_a_pooled_sweep_at_once(local_run, models, tmp_path):
    """Ctrl-C reaches every process of the group. Workers used to fail one cell each and go on, and the driver's pool
    shutdown then ran every queued cell before the sweep ended."""
    _, runs, proc = _cli_sweep(models, local_run[0], tmp_path, workers=2, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not (runs.is_dir() and any(runs.glob("*.json"))):
            time.sleep(0.005)
        assert proc.poll() is None, "the sweep ended before Ctrl-C:\n" + proc.stdout.read().decode()
        before = {p.name for p in runs.glob("*.json")}
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == 130, proc.stdout.read().decode()
    # 2 cells were running (each may have written a unit in the moment before it was ended) and 2 were queued, with
    # 3 units each: the queued ones must not run
    after = {p.name for p in runs.glob("*.json")}
    assert len(after - before) <= 2, f"{len(after - before)} units were written after Ctrl-C"


def test_baseline_cells_word_tasks_only_and_done_when_their_run_file_matches(models, tmp_path, monkeypatch):
    """The sweep plans tuning baselines for word-level tasks only (as `probekit run`), and a finished run is done:
    its run file is recognised by the same identity run_baselines checks, and a rerun trains nothing."""
    import probekit.baselines.train as btrain
    from probekit.runner.sweep import plan_sweep, run_baseline_cell

    def fake_run(**kw):
        return [{k: None for k in btrain.ROW_KEYS} | {"method": kw["method"], "seed": kw["seed"], "value": 0.5}]

    monkeypatch.setattr(btrain, "run_baseline", fake_run)
    cfg = _cfg(models[:1], tmp_path / "results", tmp_path / "stores").replace(
        tasks=["aux_verb", "tense"], seeds=[0], baselines={"methods": ["lora"], "epochs": 1})
    plan = plan_sweep(cfg)
    cells = [c for c in plan.cells if c.kind == "baseline"]
    assert [(c.task, c.method, c.done) for c in cells] == [("aux_verb", "lora", False)]
    spec = plan.cell_spec(cells[0])
    assert run_baseline_cell(spec).computed_units == 1
    assert [c.done for c in plan_sweep(cfg).cells if c.kind == "baseline"] == [True]
    assert run_baseline_cell(spec).computed_units == 0


def test_cell_spec_is_frozen_and_survives_pickle(models, tmp_path):
    """A worker gets a frozen CellSpec (as the process pool and Ray send it: pickled) holding the config object, not
    a dict to rebuild; after the round trip it plans exactly the driver's unit keys."""
    import dataclasses
    import pickle

    from probekit.runner.sweep import CellSpec, ExtractionSpec, plan_sweep
    from probekit.runner.units import plan_units

    plan = plan_sweep(_cfg(models, tmp_path / "results", tmp_path / "stores").replace(probes=["linear", "mlp1"]))
    for cell in (plan.cells[0], next(c for c in plan.cells if c.method == "mlp1")):
        spec = plan.cell_spec(cell)
        back = pickle.loads(pickle.dumps(spec))
        assert isinstance(back, CellSpec) and back == spec and back.config == plan.config
        assert back.seeds == tuple(cell.seeds) and back.units == tuple(cell.units)
        with pytest.raises(dataclasses.FrozenInstanceError):
            back.seeds = (9,)
        keys = {u.key for u in plan_units(back.config, back.model, back.model_fp, back.data_fp)
                if (u.task, u.probe) == (back.task, back.method) and u.seed in back.seeds}
        assert keys == set(cell.units)
    ext = plan.extraction_spec(plan.models[0])
    assert pickle.loads(pickle.dumps(ext)) == ext and isinstance(ext, ExtractionSpec)


def test_model_names_and_control_cells_are_parsed_in_one_place():
    """The typed helpers that replace `"@" in name` and `control.astype(str) == "True"`."""
    import pandas as pd

    from probekit.activations.models import ModelName
    from probekit.errors import ModelError
    from probekit.results.table import control_mask, is_control

    m = ModelName.parse("minilm@random:3")
    assert (m.base, m.random_seed, m.is_random, str(m)) == ("minilm", 3, True, "minilm@random:3")
    assert ModelName.parse("minilm@random").random_seed == 0 and not ModelName.parse("org/name").is_random
    assert ModelName.parse(ModelName.random_of("minilm")).base == "minilm"
    with pytest.raises(ModelError, match="variant"):
        ModelName.parse("minilm@randm")
    df = pd.DataFrame({"control": [True, False, "True", "False", None]})
    assert control_mask(df).tolist() == [True, False, True, False, False]
    assert control_mask(df, False).tolist() == [False, True, False, True, False]
    assert [is_control(v) for v in df["control"]] == control_mask(df).tolist()
