"""Tracking (probekit.tracking): a tiny run logged to an MLflow file store, a TensorBoard log folder and W&B offline,
each read back."""
from __future__ import annotations

import pytest
import yaml

from probekit.cli import main


@pytest.fixture(scope="module")
def tracked_run(tiny_bert_dir, data_dir, tmp_path_factory):
    for module in ("mlflow", "tensorboard"):
        pytest.importorskip(module)  # the [track] extra
    tmp = tmp_path_factory.mktemp("track")
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump(dict(
        name="tracked", models=[str(tiny_bert_dir)], data_dir=str(data_dir), limit={"train": 40, "dev": 15, "test": 15},
        tasks=["aux_verb"], mdl=False, random_baseline=False, control_tasks=False, figures=["png"],
        store_dir=str(tmp / "stores"), results_dir=str(tmp / "results"))))
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        assert main(["-q", "run", str(cfg), "--track", "mlflow", "--track", "tensorboard"]) == 0
    finally:
        mp.undo()
    return tmp / "results", tmp / "results" / "tracked"


def _layers(folder) -> list[int]:
    import pandas as pd

    df = pd.read_csv(folder / "results.csv")
    return sorted(int(x) for x in df[(df["probe"] == "linear")]["layer"].dropna().unique())


def test_mlflow_file_store_read_back(tracked_run, tiny_bert_dir):
    mlflow = pytest.importorskip("mlflow")

    results, folder = tracked_run
    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=(results / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["name"] == "tracked" and run.data.params["tasks"] == "['aux_verb']"
    (key,) = [k for k in run.data.metrics if k.endswith("/test_accuracy")]
    assert key == f"{tiny_bert_dir.name}/aux_verb/linear/first/test_accuracy"
    history = client.get_metric_history(run.info.run_id, key)
    assert sorted(m.step for m in history) == _layers(folder)
    assert all(0 <= m.value <= 1 for m in history)
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "results.csv", "summary.csv", "figures"} <= files
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/accuracy_by_layer.png" in figs


def test_tensorboard_log_dir_read_back(tracked_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, folder = tracked_run
    acc = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    (key,) = [t for t in tags["scalars"] if t.endswith("/test_accuracy")]
    assert sorted(e.step for e in acc.Scalars(key)) == _layers(folder)
    assert "figures/accuracy_by_layer" in tags["images"]
    assert any("config" in t for t in tags["tensors"])  # add_text is stored as a tensor summary


def test_wandb_offline(tracked_run, monkeypatch):
    from probekit.config import ExperimentConfig
    from probekit.results.table import load_results
    from probekit.runner.experiment import ExperimentResult
    from probekit.tracking import log_experiment

    pytest.importorskip("wandb")
    _, folder = tracked_run
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = ExperimentConfig.from_yaml(folder / "config.yaml").replace(track=["wandb"])
    from probekit.report.tables import summarize

    df = load_results(folder)
    res = ExperimentResult(config=cfg, folder=folder, table=df, summary=summarize(df),
                           figures=[folder / "figures" / "accuracy_by_layer.png"])
    log_experiment(res)
    import json

    (run_dir,) = (folder / "wandb").glob("offline-run-*")
    media = run_dir / "files" / "media"
    (table,) = (media / "table").glob("results_*.table.json")
    assert len(json.loads(table.read_text())["data"]) == len(df)  # every tidy row
    assert list((media / "images" / "figures").glob("accuracy_by_layer_*.png"))


def test_unknown_tracker_did_you_mean():
    from probekit.config import ExperimentConfig
    from probekit.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'mlflow'"):
        ExperimentConfig(track=["mlfow"])
