"""Finished tuning-baseline runs on disk: one JSON record per run (model × method × task × seed).

:func:`write_run` and :func:`read_run` are the only code that writes or reads these files: ``run_baselines``
resumes through them, the sweep plans and estimates through them. A change of the record (a checksum, another key)
is a change here only.

A record, ``<results_dir>/runs/baseline-<model>-<method>-<task>-seed<k>.json`` (:func:`run_path`)::

    {"format": 1, "key": [model, method, task, seed], "identity": {...}, "n_sentences": {role: n},
     "config": {the method's resolved settings}, "info": {epochs, history, parameter counts...}, "rows": [...]}

A record is reused only when its ``identity`` (:func:`run_identity`: settings fingerprint, data checksums, model
weights, task version and labels) equals the one the run would have now.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from probekit._io import atomic_write_bytes
from probekit.activations.extract import corpus_checksum

log = logging.getLogger(__name__)

#: Version of the record layout; a file of another format is not read (the run is done again).
RUN_FORMAT = 1


@dataclass(frozen=True)
class BaselineRun:
    """One finished run: its key, what it was computed from, and its result rows."""

    key: tuple  # (model, method, task, seed)
    identity: dict
    rows: list[dict]
    n_sentences: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.key[0]

    @property
    def method(self) -> str:
        return self.key[1]

    @property
    def task(self) -> str:
        return self.key[2]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@:-]+", "_", s).replace(":", "_").strip("_") or "model"


def run_path(results_dir: str | Path, *, model: str, method: str, task: str, seed: int) -> Path:
    """``results_dir/runs/baseline-<model>-<method>-<task>-seed<k>.json``."""
    return Path(results_dir) / "runs" / f"baseline-{_slug(model)}-{method}-{task}-seed{seed}.json"


def write_run(path: Path, run: BaselineRun) -> None:
    """Write ``run`` to ``path`` atomically (a reader sees the old record or the new one, never a part)."""
    payload = {"format": RUN_FORMAT, "key": list(run.key), "identity": run.identity, "n_sentences": run.n_sentences,
               "config": run.config, "info": run.info, "rows": run.rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(payload, indent=1, default=str).encode())


def read_run(path: Path) -> BaselineRun | None:
    """The record at ``path``, or None when it is missing, unreadable, damaged or of another format."""
    try:
        d = json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        log.warning("cannot read %s (%s); the run is done again", path, e)
        return None
    if not isinstance(d, dict) or d.get("format") != RUN_FORMAT or not isinstance(d.get("rows"), list):
        return None
    return BaselineRun(key=tuple(d.get("key") or ()), identity=d.get("identity"), rows=d["rows"],
                       n_sentences=d.get("n_sentences") or {}, config=d.get("config") or {}, info=d.get("info") or {})


def finished_run(path: Path, identity: dict) -> BaselineRun | None:
    """The record at ``path`` when it was computed from ``identity`` (so its rows can be reused), else None."""
    run = read_run(path)
    return run if run is not None and run.identity == identity else None


def iter_runs(results_dir: str | Path) -> Iterator[BaselineRun]:
    """Every readable record under ``results_dir/runs`` (damaged ones are skipped), in file-name order."""
    runs = Path(results_dir) / "runs"
    for p in sorted(runs.glob("baseline-*.json")) if runs.is_dir() else []:
        run = read_run(p)
        if run is not None:
            yield run


def data_identity(splits: dict) -> dict:
    """The sentences a run is computed from: the corpus checksum of each split."""
    return {role: corpus_checksum(sents) for role, sents in splits.items()}


def run_identity(fingerprint: str, data_id: dict, model_id: dict, task) -> dict:
    """What a stored run's rows were computed from (settings, sentences, weights, task rule): a record is reused only
    when its ``identity`` equals this (run_baselines, and the sweep's plan)."""
    return {"fingerprint": fingerprint, "data": data_id, "model": model_id, "task_version": task.version,
            "labels": list(task.labels)}
