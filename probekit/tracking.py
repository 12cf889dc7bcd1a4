"""Experiment tracking: log a finished run to MLflow, TensorBoard and/or Weights & Biases (config key ``track``,
``probekit run --track NAME``; the ``[track]`` extra).

Each tracker gets the resolved config, the accuracy-by-layer curves as metrics (one series per model x task x probe
x pooling, the layer as the step), the tidy table and the summary (as files or tables) and the figures. Where:

* MLflow: ``$MLFLOW_TRACKING_URI``, else the file store ``<results_dir>/mlruns``; the experiment is the config's name;
* TensorBoard: ``<results_dir>/<name>/tensorboard`` (``tensorboard --logdir results``);
* W&B: project ``probekit``, run name = the config's name; ``WANDB_MODE=offline`` works without an account.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from probekit._extras import require
from probekit.errors import unknown_name
from probekit.results.table import control_mask

log = logging.getLogger(__name__)

TRACKERS = ("mlflow", "tensorboard", "wandb")


def check_trackers(names) -> None:
    for n in names:
        if n not in TRACKERS:
            raise unknown_name("tracker", n, TRACKERS, hint="(config key 'track', option --track)")


def log_experiment(result) -> None:
    """Log an :class:`~probekit.runner.experiment.ExperimentResult` to every tracker its config names."""
    for name in result.config.track:
        {"mlflow": _mlflow, "tensorboard": _tensorboard, "wandb": _wandb}[name](result)
        log.info("logged the run to %s", name)


def curves(summary) -> dict[str, list[tuple[int, float]]]:
    """``{"<model>/<task>/<probe>/<pooling>/test_accuracy": [(layer, mean), ...]}`` of the probes (no controls)."""
    s = summary[(summary["metric"] == "accuracy") & (summary["split"] == "test")
                & (summary["method"].astype(str) == "probe") & control_mask(summary, False)]
    s = s[s["layer"].notna() & (s["layer"].astype(str) != "")]
    out: dict[str, list[tuple[int, float]]] = {}
    for (model, task, probe, pooling), part in s.groupby(["model", "task", "probe", "pooling"], sort=True):
        key = "/".join(_clean(x) for x in (Path(str(model)).name, task, probe, pooling)) + "/test_accuracy"
        out[key] = sorted((int(float(layer)), float(v)) for layer, v in zip(part["layer"], part["mean"]))
    return out


def _clean(x) -> str:
    """A metric-name part: MLflow allows letters, digits, ``_ - . /``, space and colon."""
    return re.sub(r"[^A-Za-z0-9_.\-: ]", "_", str(x))


def _files(result) -> list[Path]:
    folder = Path(result.folder)
    return [p for p in (folder / "config.yaml", folder / "results.csv", folder / "summary.csv") if p.is_file()]


def _mlflow(result) -> None:
    mlflow = require("mlflow", extra="track", purpose="Tracking with MLflow")
    cfg = result.config
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        # the default: a file store beside the results, which needs no server or database; MLflow 3 asks for this
        # opt-in to its file backend (set MLFLOW_TRACKING_URI, e.g. sqlite:///mlflow.db, for another store)
        uri = (Path(cfg.results_dir).resolve() / "mlruns").as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.name)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(cfg.name)
    run = client.create_run(exp_id, run_name=cfg.name)
    rid = run.info.run_id
    try:
        for k, v in cfg.to_dict().items():
            client.log_param(rid, k, str(v)[:6000])
        for key, points in curves(result.summary).items():
            for layer, value in points:
                client.log_metric(rid, key, value, step=layer)
        for p in _files(result):
            client.log_artifact(rid, str(p))
        for p in result.figures:
            client.log_artifact(rid, str(p), artifact_path="figures")
        client.set_terminated(rid)
    except BaseException:
        client.set_terminated(rid, status="FAILED")
        raise


def _tensorboard(result) -> None:
    require("tensorboard", extra="track", purpose="Tracking with TensorBoard")
    import matplotlib.image
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(Path(result.folder) / "tensorboard"))
    try:
        text = "\n".join("    " + line for line in result.config.to_yaml().splitlines())  # markdown code block
        writer.add_text("config", text)
        for key, points in curves(result.summary).items():
            for layer, value in points:
                writer.add_scalar(key, value, global_step=layer)
        for p in result.figures:
            if p.suffix == ".png":
                writer.add_image(f"figures/{p.stem}", matplotlib.image.imread(p)[..., :3], dataformats="HWC")
    finally:
        writer.close()


def _wandb(result) -> None:
    wandb = require("wandb", extra="track", purpose="Tracking with Weights & Biases")
    cfg = result.config
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "probekit"), name=cfg.name, config=cfg.to_dict(),
                     dir=str(Path(result.folder)), reinit="finish_previous")
    try:
        for key, points in curves(result.summary).items():
            run.define_metric(key, step_metric="layer")
            for layer, value in points:
                run.log({key: value, "layer": layer})
        run.log({"results": wandb.Table(dataframe=result.table.astype(str)),
                 "summary": wandb.Table(dataframe=result.summary.astype(str))})
        for p in result.figures:
            if p.suffix == ".png":
                run.log({f"figures/{p.stem}": wandb.Image(str(p))})
    finally:
        run.finish()
