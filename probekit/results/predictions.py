"""Per-item test predictions of every probe: kept beside the unit files, gathered into ``predictions.csv.gz``.

The runner hands each layer's test predictions to :func:`save_layer` (one ``.npz`` per unit and layer under
``runs/``, written atomically before the unit's row file, so a finished unit always has them), at every site; the
table below and the analyses built on it (significance, error analysis) hold the block outputs (``resid_post``),
while the sentence intervals cover every site.
:func:`gather` collects the files of an experiment's units; :func:`write_predictions` writes the table a notebook
reads (one row per test item, layer and seed: ``sentence_id, sentence, word_index, word, gold, predicted,
probability, layer``, plus model, task, probe, pooling, seed); :func:`read_predictions` reads it back.
``sentence`` is the sentence's position in the test split; ``word_index`` is 0-based (-1 for a sentence task).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from probekit._io import atomic_write_bytes
from probekit.errors import DataError

__all__ = ["item_index", "save_layer", "gather", "write_predictions", "read_predictions", "FILE"]

FILE = "predictions.csv.gz"
_KEYS = ["model", "task", "probe", "pooling", "seed", "layer"]


def item_index(sentences, mask: np.ndarray, level: str) -> dict:
    """Sentence position and word index of each labelled item (``mask``: indices into the flat item list)."""
    if level == "word":
        lens = np.array([len(s) for s in sentences], dtype=np.int64)
        sent = np.repeat(np.arange(len(sentences)), lens)
        word = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    else:
        sent = np.arange(len(sentences))
        word = np.full(len(sentences), -1)
    return {"sentence": sent[mask], "word_index": word[mask], "n_sentences": len(sentences)}


def save_layer(runs: Path, unit_key: str, *, gold, pred, proba, items: dict, model: str, task: str, probe: str,
               pooling: str, seed: int, layer: int, site: str = "resid_post") -> None:
    """Write one layer's test predictions of one unit (``proba``: the probability of the predicted class)."""
    buf = io.BytesIO()
    np.savez(buf, model=np.str_(model), task=np.str_(task), probe=np.str_(probe), pooling=np.str_(pooling),
             site=np.str_(site), seed=np.int64(seed), layer=np.int64(layer),
             gold=np.asarray(gold, dtype=np.int16), pred=np.asarray(pred, dtype=np.int16),
             proba=np.asarray(proba, dtype=np.float32), sentence=np.asarray(items["sentence"], dtype=np.int32),
             word_index=np.asarray(items["word_index"], dtype=np.int32),
             n_sentences=np.int64(items["n_sentences"]))
    atomic_write_bytes(Path(runs) / f"{unit_key}.pred-L{int(layer)}.npz", buf.getvalue())


def gather(runs: Path, unit_keys=None, *, skip_site: str | None = None) -> list[dict]:
    """The saved predictions of the units ``unit_keys`` (None: every unit under ``runs``): one dict per unit and
    layer with the arrays and keys of :func:`save_layer`, except those of site ``skip_site`` (their arrays are not
    read). A unit without files (computed before predictions were saved) contributes nothing; files written before
    sites were saved are ``resid_post``'s."""
    out = []
    patterns = ["*.pred-L*.npz"] if unit_keys is None else [f"{key}.pred-L*.npz" for key in unit_keys]
    for pattern in patterns:
        for p in sorted(Path(runs).glob(pattern)):
            with np.load(p) as z:  # an .npz reads each array when asked: a skipped file costs its site only
                site = str(z["site"]) if "site" in z.files else "resid_post"
                if site == skip_site:
                    continue
                rec = {k: z[k] for k in z.files}
            rec["site"] = site
            for k in ("model", "task", "probe", "pooling", "site"):
                rec[k] = str(rec[k])
            for k in ("seed", "layer", "n_sentences"):
                rec[k] = int(rec[k])
            out.append(rec)
    return out


def write_predictions(path: Path, records: list[dict], test_sentences, labels_of) -> None:
    """Write :func:`gather`'s records as one gzip CSV (``labels_of(task)`` gives the task's label names)."""
    import pandas as pd

    sent_ids = np.array([s.sent_id for s in test_sentences], dtype=object)
    flat = np.array([w for s in test_sentences for w in s.words] + [""], dtype=object)  # last: sentence tasks
    start = np.concatenate([[0], np.cumsum([len(s) for s in test_sentences])])
    frames = []
    for r in records:
        labels = np.array(labels_of(r["task"]), dtype=object)
        words = flat[np.where(r["word_index"] >= 0, start[r["sentence"]] + r["word_index"], -1)]
        frames.append(pd.DataFrame({
            "model": r["model"], "task": r["task"], "probe": r["probe"], "pooling": r["pooling"], "seed": r["seed"],
            "layer": r["layer"], "sentence_id": sent_ids[r["sentence"]], "sentence": r["sentence"],
            "word_index": r["word_index"], "word": words, "gold": labels[r["gold"]],
            "predicted": labels[r["pred"]], "probability": np.round(r["proba"].astype(np.float64), 5)}))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=_KEYS + ["sentence_id", "sentence", "word_index", "word", "gold", "predicted", "probability"])
    buf = io.BytesIO()
    df.to_csv(buf, index=False, compression={"method": "gzip", "compresslevel": 1, "mtime": 0})
    atomic_write_bytes(Path(path), buf.getvalue())


def read_predictions(folder) -> "object":
    """``<folder>/predictions.csv.gz`` as a DataFrame (a clear error when the experiment has none)."""
    import pandas as pd

    path = Path(folder) / FILE
    if not path.is_file():
        raise DataError(f"{path} does not exist: the experiment has no saved predictions. Rerun it with this version "
                        "of probekit (`probekit run CONFIG`), which saves them.")
    return pd.read_csv(path, keep_default_na=False, na_values=[], dtype={"sentence_id": str, "word": str,
                                                                        "gold": str, "predicted": str})
