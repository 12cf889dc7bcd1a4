"""The rigour files of an experiment, written after its probes: predictions, sentence intervals, significance,
error analysis.

:func:`analyse` (called by the runner) gathers the units' saved test predictions and writes, under
``results/<experiment>/``:

* ``predictions.csv.gz``: every test item's gold and predicted label at the block outputs, per model, task, probe,
  pooling and layer, of the first seed (the linear probe's seeds fit alike; 3 seeds would triple the file and the
  time to write it); the sub-layer sites' predictions stay in ``runs/`` and give their rows' sentence intervals;
* ``significance.csv`` / ``significance.md``: paired tests between layers and between each model and its
  random-weights twin (:mod:`probekit.results.sentence_stats`), and the same in words;
* ``errors/per_label.csv``, ``errors/confusion/<model>__<task>__<probe>__<pooling>__L<layer>.csv``,
  ``errors/by_word_type.csv`` (seen / unseen types, frequency bands), ``errors/word_majority.csv``.

``predictions.csv.gz`` and ``errors/`` are a pure function of the units' saved predictions and the data, which the
unit keys determine: ``errors/analysis.json`` records their key (:func:`probekit.keys.content_key`) and each file's
sha256, written last. A rerun with the same units whose files all still match their digests keeps them instead of
writing them again (docs/design.md 24); a file that does not match is named in a warning and everything is written
again.

:func:`from_folder` redoes the summary-level part from a finished folder (``probekit report``): the summary's
``sent_lo`` / ``sent_hi`` columns and the word-majority rows.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from probekit._io import atomic_write_bytes, sha256_file
from probekit.activations.models import ModelName
from probekit.keys import content_key, distrust
from probekit.results import error_analysis, predictions, sentence_stats
from probekit.results.table import write_csv
from probekit.tasks import get_task

log = logging.getLogger(__name__)

__all__ = ["analyse", "from_folder", "labels_of", "confusion_file", "ANALYSIS_VERSION", "RECORD"]

#: Bump when the files written for the same units change (their format, or what the error analysis computes).
ANALYSIS_VERSION = 1
#: The record of the written files (key and sha256 of each), relative to the results folder.
RECORD = "errors/analysis.json"


def labels_of(task: str) -> list:
    return list(get_task(task).labels)


def confusion_file(model, task, probe, pooling, layer) -> str:
    """File name of one layer's confusion matrix under ``errors/confusion/``."""
    return "__".join(re.sub(r"[^A-Za-z0-9_.@-]+", "-", str(p)) for p in (model, task, probe, pooling, f"L{layer}")) \
        + ".csv"


def analyse(folder: Path, unit_keys, data: dict, tasks, summary):
    """Write the files of the module doc for the units ``unit_keys``; returns ``summary`` with the sentence
    intervals and word-majority rows (unchanged when no unit saved predictions)."""
    folder = Path(folder)
    records, others = _by_site(predictions.gather(folder / "runs", unit_keys))
    if not records:
        log.info("%s: no saved test predictions at the block outputs; no sentence intervals or significance tests",
                 folder)
        return summary
    counts, n_sent = sentence_stats.counts_from_records(records, labels_of)
    first = min(r["seed"] for r in records)  # the error analysis and the intervals read the first seed
    key = content_key("analysis", {"version": ANALYSIS_VERSION, "units": list(unit_keys), "first_seed": first})
    if not _kept(folder, key):
        written = _write_error_files(folder, [r for r in records if r["seed"] == first], data, tasks)
        record = {"key": key, "files": {name: sha256_file(folder / name) for name in written}}
        atomic_write_bytes(folder / RECORD, json.dumps(record, indent=1, sort_keys=True).encode())
    return _summary_and_tests(folder, summary, counts, n_sent, _site_counts(others))


def _kept(folder: Path, key: str) -> bool:
    """Whether ``folder``'s :data:`RECORD` has ``key`` and every file it lists still has its recorded sha256."""
    path = folder / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("key") != key:
        return False
    for name, digest in record.get("files", {}).items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            distrust(folder / name, "is missing or does not match the sha256 in " + RECORD, what="analysis file")
            return False
    return True


def _write_error_files(folder: Path, records: list[dict], data: dict, tasks) -> list[str]:
    """Write ``predictions.csv.gz`` and ``errors/`` from the first seed's ``records``; their names, relative to
    ``folder``."""
    import pandas as pd

    predictions.write_predictions(folder / predictions.FILE, records, data["test"], labels_of)
    pred = predictions.read_predictions(folder)
    written = [predictions.FILE, "errors/per_label.csv"]
    write_csv(error_analysis.per_label(pred), folder / written[-1])
    for key, m in error_analysis.confusions(pred).items():
        written.append(f"errors/confusion/{confusion_file(*key)}")
        atomic_write_bytes(folder / written[-1], m.to_csv().encode())
    type_counts, wm = {}, []
    for task in tasks:
        if task.level != "word":
            continue
        type_counts[task.name], best, majority = error_analysis.train_word_stats(data["train"], task)
        for metric, value in error_analysis.word_majority(data["test"], task, best, majority).items():
            wm.append({"task": task.name, "metric": metric, "value": value})
    write_csv(error_analysis.by_word_type(pred, type_counts), folder / "errors/by_word_type.csv")
    write_csv(pd.DataFrame(wm, columns=["task", "metric", "value"]), folder / "errors/word_majority.csv")
    return written + ["errors/by_word_type.csv", "errors/word_majority.csv"]


def _by_site(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the block outputs' records, the sub-layer sites' records)."""
    return ([r for r in records if r["site"] == "resid_post"], [r for r in records if r["site"] != "resid_post"])


def _site_counts(records: list[dict]) -> dict:
    """{site: counts} of the sub-layer sites' records (:func:`sentence_stats.counts_from_records`)."""
    sites = sorted({r["site"] for r in records})
    return {site: sentence_stats.counts_from_records([r for r in records if r["site"] == site], labels_of)[0]
            for site in sites}


def _summary_and_tests(folder: Path, summary, counts: dict, n_sent: int, site_counts: dict):
    import pandas as pd

    summary = sentence_stats.add_intervals(summary, counts, n_sent, site_counts=site_counts)
    summary = _with_word_majority(folder, summary)
    best = sentence_stats.best_layers(summary)
    models = {k[0] for k in counts}
    twins = [(m, ModelName.random_of(m)) for m in sorted(models) if ModelName.random_of(m) in models]
    tests = pd.concat([sentence_stats.layer_tests(summary, counts, n_sent),
                       sentence_stats.model_tests(counts, counts, best, best, n_sent, pairs=twins)],
                      ignore_index=True)
    write_csv(tests, folder / "significance.csv")
    text = ["Paired permutation tests over test sentences (1000 resamples, Holm-corrected, alpha 0.05); "
            "brackets: 95% sentence-bootstrap interval of the difference.", ""]
    atomic_write_bytes(folder / "significance.md",
                       "\n".join(text + [f"- {s}" for s in sentence_stats.describe(tests)]).encode("utf-8") + b"\n")
    return summary


def _with_word_majority(folder: Path, summary):
    """``summary`` plus one ``probe = word_majority`` row per word task and metric (from errors/word_majority.csv)."""
    import pandas as pd

    path = Path(folder) / "errors" / "word_majority.csv"
    if not path.is_file() or summary.empty:
        return summary
    wm = pd.read_csv(path)
    maj = summary[(summary["probe"] == "majority") & (summary["method"] == "probe")]  # not a study's majority rows
    rows = []
    for r in wm.itertuples():
        for _, base in maj[(maj["task"] == r.task) & (maj["metric"] == r.metric)].iterrows():
            rows.append({**base.to_dict(), "probe": "word_majority", "mean": r.value, "ci_lo": r.value,
                         "ci_hi": r.value})
    return pd.concat([summary, pd.DataFrame(rows)], ignore_index=True) if rows else summary


def from_folder(folder, summary):
    """``summary`` with the sentence intervals and word-majority rows of a finished results folder (rewrites its
    ``significance.*``); unchanged when the folder has no ``predictions.csv.gz``."""
    folder = Path(folder)
    if not (folder / predictions.FILE).is_file():
        return summary
    counts, n_sent = sentence_stats.counts_table(predictions.read_predictions(folder), labels_of)
    others = predictions.gather(folder / "runs", skip_site="resid_post")  # the table holds resid_post's
    return _summary_and_tests(folder, summary, counts, n_sent, _site_counts(others))
