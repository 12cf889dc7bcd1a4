"""``probekit compare A B``: paired tests of the models of two experiments on the test words they share.

Two experiments compare only when they were tested on the same test set and every shared task labels the same
test words; anything else is a DataError naming both folders.
"""
from __future__ import annotations

import json
from pathlib import Path

from probekit.errors import DataError
from probekit.report.build import load_tables
from probekit.results import predictions, sentence_stats
from probekit.results.analysis import labels_of


def _test_set(folder: Path) -> dict:
    path = folder / "provenance.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: give results/<experiment> of a finished run.")
    test = json.loads(path.read_text())["data"]["test"]
    return {k: v for k, v in test.items() if k != "file"}


def compare(folder_a, folder_b, *, n_resamples: int = sentence_stats.N_RESAMPLES, seed: int = 0):
    """Paired tests of every model of experiment A against every model of experiment B on the tasks both probed
    (layer by layer and best layer against best layer). Refuses experiments whose test sets differ."""
    folder_a, folder_b = Path(folder_a), Path(folder_b)
    ta, tb = _test_set(folder_a), _test_set(folder_b)
    if ta != tb:
        raise DataError(f"{folder_a} and {folder_b} were tested on different test sets ({ta} vs {tb}); a paired "
                        "comparison needs the same test words. Run both configs on the same dataset, split and limit.")
    pa, pb = predictions.read_predictions(folder_a), predictions.read_predictions(folder_b)
    for task in sorted(set(pa["task"]) & set(pb["task"])):
        ia = pa[pa["task"] == task].drop_duplicates(["sentence", "word_index"])[["sentence", "word_index"]]
        ib = pb[pb["task"] == task].drop_duplicates(["sentence", "word_index"])[["sentence", "word_index"]]
        if not ia.sort_values(list(ia.columns)).to_numpy().tolist() == \
                ib.sort_values(list(ib.columns)).to_numpy().tolist():
            raise DataError(f"Task {task!r} labels different test words in {folder_a} and {folder_b} (another task "
                            "version?); rerun one of them with the other's task definition.")
    ca, n_sent = sentence_stats.counts_table(pa, labels_of)
    cb, _ = sentence_stats.counts_table(pb, labels_of)
    best_a = sentence_stats.best_layers(load_tables(folder_a)[1])
    best_b = sentence_stats.best_layers(load_tables(folder_b)[1])
    return sentence_stats.model_tests(ca, cb, best_a, best_b, n_sent, n_resamples=n_resamples, seed=seed)
