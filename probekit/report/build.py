"""``probekit report results/<experiment>``: paper tables and figures from a finished results folder.

Reads ``results.csv`` (and the tuning baselines' ``baselines/baseline_rows.csv`` when present),
recomputes the summary (mean and 95% CI over seeds, selectivity, expected layer) and writes:

* ``tables/best_layers.tex``   booktabs LaTeX: best layer per model × task with accuracy ± CI,
  majority, selectivity, expected layer and MDL-best layer;
* ``tables/best_layers.md``    the same table in Markdown (same DataFrame, same numbers);
* ``tables/best_layers.csv``   the unformatted numbers;
* ``tables/layers.md``         test accuracy of every layer (tasks × layers, per model);
* ``tables/erasure.tex`` / ``.md`` / ``.csv``  with an erasure study: per model × task, a row per layer with the
  probe's accuracy, selectivity and MDL beside the sanity probes and the effects of erasing that layer, each with
  its control (:mod:`probekit.report.erasure_tables`);
* ``figures/*``                every figure of :func:`probekit.report.figures.experiment_figures`
  (redrawn), including the heatmap and, with baselines, accuracy vs trainable parameters, and the erasure
  figures (:func:`probekit.report.erasure_figures.erasure_figures`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from probekit._io import atomic_write_bytes
from probekit.errors import DataError, unknown_name
from probekit.report.erasure_figures import erasure_figures
from probekit.report.erasure_tables import erasure_latex, erasure_markdown, erasure_table
from probekit.report.figures import experiment_figures
from probekit.report.latex import best_layer_latex, best_layer_markdown, layer_markdown
from probekit.report.tables import best_layer_table, layer_table, summarize
from probekit.results.analysis import from_folder
from probekit.results.table import COLUMNS, load_results, write_csv

log = logging.getLogger(__name__)

FORMATS = ("pdf", "png", "svg")


def load_tables(folder: str | os.PathLike):
    """``(table, summary)`` of a results folder: the tidy rows (probes plus any tuning-baseline rows)
    and their summary (:func:`probekit.report.tables.summarize`)."""
    import pandas as pd


    folder = Path(folder)
    df = load_results(folder)
    extra = folder / "baselines" / "baseline_rows.csv"
    if extra.is_file():
        b = pd.read_csv(extra)
        b = b[[c for c in b.columns if c in COLUMNS]]
        known = set(df["method"].dropna().unique())
        b = b[~b["method"].isin(known - {"probe"})] if len(known - {"probe"}) else b
        if len(b):
            log.info("%s: %d tuning-baseline rows added", extra, len(b))
            df = pd.concat([df, b], ignore_index=True)
    if df.empty:
        raise DataError(f"{folder / 'results.csv'} has no rows. Run the experiment again.")

    return df, from_folder(folder, summarize(df))


def build_report(folder: str | os.PathLike, formats: Sequence[str] = ("pdf", "png"), *, figures: bool = True
                 ) -> list[Path]:
    """Write the tables (LaTeX, Markdown, CSV) and redraw the figures of ``results/<experiment>``.

    Args:
        folder: an experiment's results folder (holding ``results.csv``).
        formats: figure formats, any of pdf / png / svg.
        figures: also redraw the figures (``False``: tables only).
    Returns:
        The paths written, tables first.
    """

    for f in formats:
        if f not in FORMATS:
            raise unknown_name("figure format", f, FORMATS)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"No results folder at {folder}. Give results/<experiment> of a finished run "
                        "(`probekit run CONFIG` writes it).")
    df, summary = load_tables(folder)
    table = best_layer_table(summary)
    tables = folder / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    name = folder.name
    out = []
    tex = best_layer_latex(table, label=f"tab:{name}-best-layers")
    for fname, text in (("best_layers.tex", tex), ("best_layers.md", best_layer_markdown(table))):
        atomic_write_bytes(tables / fname, text.encode("utf-8"))
        out.append(tables / fname)
    write_csv(table, tables / "best_layers.csv")
    out.append(tables / "best_layers.csv")
    probe_rows = ((summary["method"].astype(str) == "probe") & (summary["probe"].astype(str) == "linear")
                  & (summary["layer"].astype(str) != "") & (summary["metric"] == "accuracy"))
    matrix = layer_table(summary) if probe_rows.any() else []
    if len(matrix):
        atomic_write_bytes(tables / "layers.md", ("Test accuracy (%) of linear probes by layer (0 = embeddings), "
                                                  "mean over seeds.\n\n" + layer_markdown(matrix)).encode("utf-8"))
        out.append(tables / "layers.md")
    erasure = erasure_table(summary)
    if len(erasure):
        for fname, text in (("erasure.tex", erasure_latex(erasure, label=f"tab:{name}-erasure")),
                            ("erasure.md", erasure_markdown(erasure))):
            atomic_write_bytes(tables / fname, text.encode("utf-8"))
            out.append(tables / fname)
        write_csv(erasure, tables / "erasure.csv")
        out.append(tables / "erasure.csv")
    if figures:
        out += experiment_figures(df, summary, folder, formats=tuple(formats))
        out += erasure_figures(summary, folder / "figures", formats=tuple(formats))
    log.info("report of %s: %d files", folder, len(out))
    return out
