"""The erasure study by layer, beside the probe: one table per model x task (x eraser), in LaTeX and Markdown.

:func:`erasure_table` gathers, from a summary (:func:`probekit.report.tables.summarize`) holding the erasure study's
rows (:mod:`probekit.runner.erasure`), one row per model x task x eraser x layer: the linear probe's test accuracy
(mean and 95% CI half-width over seeds), its selectivity and MDL codelength when the run made them, the majority
baseline, the sanity probes retrained on the erased features (linear, MLP) and every effect of erasing that layer on
the model, each with its 95% bootstrap interval over test sentences, and the same effect of the random-subspace
control. A column the results do not hold (no control task, no MDL run, no MLP sanity probe, no LM head) is left
out, never filled in. :func:`erasure_markdown` and :func:`erasure_latex` render the same numbers (one table per
model x task x eraser); :mod:`probekit.report.erasure_figures` draws them.

Effect columns are named after the ``metric`` of their rows, except ``accuracy_change:<task>:layer<k>``, which
becomes ``accuracy_change:<task>:+<k - l>`` (the later layer as an offset from the erased layer ``l``, so that one
column holds one offset).
"""
from __future__ import annotations

import math
import re

from probekit.report.latex import latex_escape, layer_text, pct, pct_ci
from probekit.results.table import block_outputs, control_mask

#: Prefixes of the ``method`` column: the sanity probes and the effects (``erasure:leace``, ``intervention:leace``).
SANITY, EFFECT = "erasure:", "intervention:"
#: Columns before the effects: (key, LaTeX header, Markdown header).
BASE_COLUMNS = [
    ("layer", "Layer", "Layer"),
    ("eraser_rank", "Rank", "Rank"),
    ("accuracy", r"Acc.\ (\%)", "Acc. (%)"),
    ("selectivity", "Sel.\\ (pts)", "Sel. (pts)"),
    ("mdl_kbits", "MDL (kbits)", "MDL (kbits)"),
    ("majority", r"Maj.\ (\%)", "Maj. (%)"),
    ("linear_after", r"Lin.\ erased (\%)", "Linear erased (%)"),
    ("mlp_after", r"MLP erased (\%)", "MLP erased (%)"),
]
#: Effects in display order (any other effect metric follows, by name).
EFFECT_ORDER = ("loss_change_next", "loss_change_all", "accuracy_change", "embedding_cosine")
CLEAN_LOSS = ("loss_clean_next", "loss_clean_all")
_LATER = re.compile(r"^accuracy_change:(?P<task>.+):layer(?P<k>\d+)$")


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _layer_of(v) -> int | None:
    f = _num(v)
    return None if math.isnan(f) else int(round(f))


def effect_name(metric: str, layer: int) -> str:
    """The column of an effect row: its metric, with ``accuracy_change``'s later layer as an offset from ``layer``."""
    m = _LATER.match(metric)
    return f"accuracy_change:{m['task']}:+{int(m['k']) - layer}" if m else metric


def effect_key(name: str):
    family = name.split(":", 1)[0]
    return (EFFECT_ORDER.index(family) if family in EFFECT_ORDER else len(EFFECT_ORDER), name)


def _one(frame, layer: int, metric: str, **kw) -> tuple[float, float]:
    """(mean, 95% CI half-width over seeds) of the one summary row of ``metric`` at ``layer``; NaNs when none."""
    r = frame[(frame["metric"] == metric) & (frame["layer"].map(_layer_of) == layer)]
    for k, v in kw.items():
        r = r[r[k].astype(str) == str(v)]
    if r.empty:
        return math.nan, math.nan
    mean = _num(r["mean"].iloc[0])
    return mean, _num(r["ci_hi"].iloc[0]) - mean


def erasure_table(summary):
    """One row per model x task x eraser method x erased layer (columns: see the module docstring); empty when the
    summary holds no erasure rows. Effect columns: ``<name>``, ``<name>_lo``, ``<name>_hi`` and the control's
    ``<name>_control``, ``<name>_control_lo``, ``<name>_control_hi``; ``loss_clean_next`` / ``loss_clean_all`` (the
    clean run's loss, one value per model x task) when the model has an LM head."""
    import pandas as pd

    s = block_outputs(summary)
    method = s["method"].astype(str)
    er = s[method.str.startswith(SANITY) | method.str.startswith(EFFECT)]
    if er.empty:
        return pd.DataFrame()
    er = er.assign(eraser=er["method"].astype(str).str.split(":", n=1).str[1], _layer=er["layer"].map(_layer_of))
    probes = s[(method == "probe") & s["probe"].astype(str).eq("linear") & control_mask(s, False)]
    recs = []
    for (model, task, eraser), part in er.groupby(["model", "task", "eraser"], sort=True):
        sanity = part[part["method"].astype(str) == SANITY + eraser]
        effects = part[part["method"].astype(str) == EFFECT + eraser]
        pooling = next((str(p) for p in sanity["pooling"] if str(p) not in ("", "nan", "None")), "")
        own = probes[(probes["model"] == model) & (probes["task"] == task)]
        if pooling:  # a sentence task's eraser read one pooling: the probe of that pooling
            own = own[own["pooling"].astype(str) == pooling]
        clean = {m: float(effects[effects["metric"] == m]["mean"].iloc[0])
                 for m in CLEAN_LOSS if (effects["metric"] == m).any()}
        for layer in sorted({int(v) for v in part["_layer"].dropna()}):
            acc, acc_ci = _one(own, layer, "accuracy", split="test")
            rec = {"model": model, "task": task, "method": eraser, "layer": layer, "accuracy": acc,
                   "accuracy_ci": acc_ci, "selectivity": _one(own, layer, "selectivity", split="test")[0],
                   "mdl_kbits": _one(own, layer, "mdl_codelength_kbits", split="train")[0],
                   "majority": _one(sanity, layer, "accuracy", probe="majority")[0],
                   "linear_after": _one(sanity, layer, "accuracy", probe="linear")[0],
                   "mlp_after": _one(sanity, layer, "accuracy", probe="mlp1")[0],
                   "eraser_rank": _one(sanity, layer, "eraser_rank")[0], **clean}
            here = effects[effects["_layer"] == layer]
            for _, r in here.iterrows():
                metric = str(r["metric"])
                if metric.endswith(("_ci_low", "_ci_high")):
                    continue
                name = effect_name(metric, layer) + ("_control" if str(r["control"]) == "True" else "")
                ends = [here[(here["metric"] == metric + end) & (here["control"].astype(str) == str(r["control"]))]
                        for end in ("_ci_low", "_ci_high")]
                rec[name] = float(r["mean"])
                rec[name + "_lo"], rec[name + "_hi"] = (float(e["mean"].iloc[0]) if len(e) else math.nan
                                                        for e in ends)
            recs.append(rec)
    out = pd.DataFrame(recs)
    return out.dropna(axis=1, how="all")  # what the run did not make is left out, not filled in


def effect_headers(name: str) -> tuple[str, str]:
    """(LaTeX, Markdown) header of an effect column."""
    m = re.match(r"^accuracy_change:(?P<task>.+):\+(?P<k>\d+)$", name)
    if m:
        return (rf"$\Delta$acc.\ {latex_escape(m['task'])} at $\ell$+{m['k']} (pts)",
                f"Δ acc. {m['task']} at l+{m['k']} (pts)")
    fixed = {"loss_change_next": (r"$\Delta$loss next (nats)", "Δ loss next (nats)"),
             "loss_change_all": (r"$\Delta$loss all (nats)", "Δ loss all (nats)"),
             "embedding_cosine": ("Emb.\\ cosine", "Emb. cosine")}
    return fixed.get(name, (latex_escape(name), name))


def _fmt_effect(name: str, v: float, lo: float, hi: float) -> str:
    """``value [low, high]`` in the effect's unit: nats (3 decimals), accuracy points (1 decimal), cosine (4)."""
    if math.isnan(v):
        return "--"
    if name.startswith("accuracy_change"):
        f = (lambda x: f"{100 * x:+.1f}")
    elif name.startswith("embedding_cosine"):
        f = (lambda x: f"{x:.4f}")
    elif name.startswith("loss_"):
        f = (lambda x: f"{x:+.3f}")
    else:
        f = (lambda x: f"{x:+.3g}")
    return f(v) + ("" if math.isnan(lo) or math.isnan(hi) else f" [{f(lo)}, {f(hi)}]")


def _fmt_base(key: str, r) -> str:
    v = _num(r.get(key))
    if key in ("layer", "eraser_rank"):
        return layer_text(v)
    if key == "accuracy":
        return pct_ci(v, r.get("accuracy_ci"))
    if key == "mdl_kbits":
        return "--" if math.isnan(v) else f"{v:.2f}"
    return pct(v)


def format_erasure_table(table) -> list[tuple[tuple[str, str, str], list[tuple[str, str]], list[list[str]], str]]:
    """Display strings of :func:`erasure_table`, one block per model x task x eraser: ``((model, task, method),
    [(LaTeX header, Markdown header)], rows of cells, the note that explains them)``. A column is shown when that block has a value
    in it; an effect is followed by its control."""
    out = []
    if table is None or len(table) == 0:
        return out
    for (model, task, method), part in table.groupby(["model", "task", "method"], sort=True):
        part = part.sort_values("layer").dropna(axis=1, how="all")
        base = [(k, tex, md) for k, tex, md in BASE_COLUMNS if k in part]
        effects = sorted((c for c in part if c not in {k for k, _, _ in BASE_COLUMNS} and not c.endswith(
            ("_lo", "_hi", "_control")) and c not in ("model", "task", "method", "accuracy_ci") + CLEAN_LOSS),
            key=effect_key)
        headers = [(tex, md) for _, tex, md in base]
        for e in effects:
            headers.append(effect_headers(e))
            if e + "_control" in part:
                headers.append(("control", "control"))
        rows = []
        for _, r in part.iterrows():
            cells = [_fmt_base(k, r) for k, _, _ in base]
            for e in effects:
                cells.append(_fmt_effect(e, *(_num(r.get(e + x)) for x in ("", "_lo", "_hi"))))
                if e + "_control" in part:
                    cells.append(_fmt_effect(e, *(_num(r.get(e + "_control" + x)) for x in ("", "_lo", "_hi"))))
            rows.append(cells)
        clean = {m: _num(part[m].iloc[0]) for m in CLEAN_LOSS if m in part}
        note = _note(str(method), [k for k, _, _ in base], any(h == ("control", "control") for h in headers), clean)
        out.append(((str(model), str(task), str(method)), headers, rows, note))
    return out


#: What each base column is, for the tables' notes (only the columns shown are explained).
NOTES = {
    "eraser_rank": "Rank: directions the eraser removes",
    "accuracy": "Acc.: linear probe test accuracy (mean, ± 95% CI half-width over seeds when it rounds above 0)",
    "selectivity": "Sel.: selectivity (task − control-task accuracy, points)",
    "mdl_kbits": "MDL: online codelength (Voita & Titov 2020)",
    "majority": "Maj.: majority class",
    "linear_after": "Linear erased: a linear probe retrained on the erased features",
    "mlp_after": "MLP erased: an MLP probe retrained on them",
}


def _note(method: str, keys, has_control: bool, clean: dict) -> str:
    text = (f"Erasure ({method}) at each layer (0 = embeddings). " + "; ".join(NOTES[k] for k in keys if k in NOTES)
            + ". Effects: the change when that layer is erased at every subword of the labelled words, with the 95% "
            "percentile bootstrap interval over test sentences")
    text += ("; control: a random subspace of the same rank erased at the same positions." if has_control else ".")
    if clean:
        text += " Clean next-token loss: " + ", ".join(
            f"{v:.3f} nats ({m.rsplit('_', 1)[1]})" for m, v in clean.items()) + "; next = the subword right after a " \
            "word whose label is not the training majority, all = every content subword."
    return text


def erasure_markdown(table) -> str:
    """:func:`erasure_table` as GitHub Markdown: a heading and a table per model x task x eraser."""
    parts = []
    for (model, task, method), headers, rows, note in format_erasure_table(table):
        lines = [f"### {model}: {task}", "", note, "",
                 "| " + " | ".join(md for _, md in headers) + " |",
                 "|" + "|".join("---:" for _ in headers) + "|"]
        lines += ["| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |" for cells in rows]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def erasure_latex(table, *, label: str = "tab:erasure") -> str:
    """:func:`erasure_table` as booktabs LaTeX, one ``table`` environment per model x task x eraser (labels
    ``<label>-1``, ``<label>-2``...)."""
    parts = []
    for n, ((model, task, method), headers, rows, note) in enumerate(format_erasure_table(table), 1):
        caption = latex_escape(f"{model}, {task}. " + note).replace("±", r"$\pm$").replace(
            "−", "$-$")
        lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "r" * len(headers) + "}",
                 r"\toprule", " & ".join(tex for tex, _ in headers) + r" \\", r"\midrule"]
        lines += [" & ".join(latex_escape(c).replace("±", r"$\pm$") for c in cells) + r" \\" for cells in rows]
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", rf"\label{{{label}-{n}}}",
                  r"\end{table}"]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
