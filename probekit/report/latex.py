"""Paper tables: the best-layer table as LaTeX (booktabs) and Markdown, from one DataFrame.

Both renderings come from :func:`format_best_layer_table`, which turns
:func:`probekit.report.tables.best_layer_table` into display strings, so the LaTeX and the
Markdown tables always show the same numbers. Accuracies are percentages with one decimal;
``±`` is the half-width of the 95% CI over seeds (left out when it rounds to 0.0, e.g. one seed, or
a linear probe whose seeds give the same fit); ``--`` marks a value that was not computed
(one seed gives no CI; no control task gives no selectivity; no MDL run gives no MDL layer; no scalar-mix
study, or no gain over layer 0 that the test set supports, gives no expected layer).

The LaTeX needs ``\\usepackage{booktabs}`` only.
"""
from __future__ import annotations

import math
import re

#: Display columns: (key in the formatted table, LaTeX header, Markdown header).
COLUMNS = [
    ("model", "Model", "Model"),
    ("task", "Task", "Task"),
    ("probe", "Probe", "Probe"),
    ("pooling", "Pooling", "Pooling"),
    ("best_layer", "Best layer", "Best layer"),
    ("test_acc", r"Acc. (\%)", "Acc. (%)"),
    ("sent_ci", r"95\% CI (sent.)", "95% CI (sent.)"),
    ("majority", r"Maj. (\%)", "Maj. (%)"),
    ("word_majority", r"W.-maj. (\%)", "W.-maj. (%)"),
    ("selectivity", "Sel. (pts)", "Sel. (pts)"),
    ("selectivity_f1", r"Sel.\ F1 (pts)", "Sel. F1 (pts)"),
    ("expected_layer", r"$\mathrm{E}_\Delta[\ell]$", "E_Delta[layer]"),
    ("center_of_gravity", r"$\mathrm{E}_s[\ell]$", "E_s[layer]"),
    ("mdl_best_layer", "MDL layer", "MDL layer"),
]

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (``aux_verb`` -> ``aux\\_verb``)."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIAL[m.group()], str(text))


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def layer_text(v) -> str:
    """A layer number (or a count) as a table cell; ``--`` when missing."""
    f = _num(v)
    return "--" if f is None else str(int(round(f)))


def pct(v, digits: int = 1) -> str:
    """A fraction as percent points for a table cell; ``--`` when missing."""
    f = _num(v)
    return "--" if f is None else f"{100 * f:.{digits}f}"


def pct_ci(v, ci) -> str:
    """:func:`pct` of ``v`` with ``± x`` when the interval half-width ``ci`` rounds to at least 0.1 points (one
    seed, or seeds that agree, show the bare mean)."""
    c = _num(ci)
    return pct(v) + (f" ± {100 * c:.1f}" if c is not None and 100 * c >= 0.05 else "")


def format_best_layer_table(table, *, drop_constant: bool = True):
    """Display strings for :func:`probekit.report.tables.best_layer_table`'s output.

    Returns a DataFrame of strings with the keys of :data:`COLUMNS` (``test_acc`` as ``"93.4 ± 0.5"``,
    with ``±`` written as the plain character; the LaTeX renderer turns it into ``$\\pm$``), plus a
    boolean column ``_best`` marking, per task with several rows, the row with the highest accuracy
    (bold in LaTeX and Markdown). With ``drop_constant``, the ``probe`` and ``pooling`` columns are left out when they
    hold a single value.
    """
    import pandas as pd

    recs = []
    for _, r in table.iterrows():
        acc = _num(r.get("test_acc"))
        acc_s = pct_ci(acc, r.get("ci"))
        sel = _num(r.get("selectivity"))
        sel_f1 = _num(r.get("selectivity_f1"))
        lo, hi = _num(r.get("sent_lo")), _num(r.get("sent_hi"))
        el = _num(r.get("expected_layer"))
        cg = _num(r.get("center_of_gravity"))
        recs.append({"model": str(r["model"]), "task": str(r["task"]), "probe": str(r.get("probe", "")),
                     "pooling": str(r.get("pooling", "")), "best_layer": layer_text(r.get("best_layer")),
                     "test_acc": acc_s, "majority": pct(r.get("majority")),
                     "word_majority": pct(r.get("word_majority")),
                     "sent_ci": "--" if lo is None or hi is None else f"[{pct(lo)}, {pct(hi)}]",
                     "selectivity_f1": "--" if sel_f1 is None else f"{100 * sel_f1:.1f}",
                     "selectivity": "--" if sel is None else f"{100 * sel:.1f}",
                     "expected_layer": "--" if el is None else f"{el:.2f}",
                     "center_of_gravity": "--" if cg is None else f"{cg:.2f}",
                     "mdl_best_layer": layer_text(r.get("mdl_best_layer")), "_acc": acc if acc is not None else -1.0})
    cols = [c for c, _, _ in COLUMNS]
    out = pd.DataFrame(recs, columns=cols + ["_acc"])
    if len(out):
        best = out.groupby(["task"])["_acc"].transform("max")
        out["_best"] = (out["_acc"] == best) & (out["_acc"] >= 0) & (out.groupby("task")["model"].transform("size") > 1)
    else:
        out["_best"] = pd.Series(dtype=bool)
    out = out.drop(columns="_acc")
    if drop_constant:
        for c in ("probe", "pooling"):
            if out[c].nunique() <= 1:
                out = out.drop(columns=c)
        # not computed (no saved predictions; no binary task with controls; no scalar-mix study)
        for c in ("sent_ci", "selectivity_f1", "word_majority", "expected_layer", "center_of_gravity"):
            if (out[c] == "--").all():
                out = out.drop(columns=c)
    return out


def best_layer_latex(table, *, caption: str | None = None, label: str = "tab:best-layers") -> str:
    """A booktabs ``table`` environment of the best layer per model × task (× probe × pooling).

    ``table`` is the output of :func:`probekit.report.tables.best_layer_table`. Rows are grouped by
    model (``\\midrule`` between models); the best accuracy per task across models is bold.
    """
    f = format_best_layer_table(table)
    cols = [(k, tex) for k, tex, _ in COLUMNS if k in f]
    align = "".join("l" if k in ("model", "task", "probe", "pooling") else "r" for k, _ in cols)
    caption = caption or ("Best layer per model and task (layer 0 = embeddings). Acc.: test accuracy at the best "
                          r"layer, mean $\pm$ 95\% CI half-width over seeds; 95\% CI (sent.): percentile interval "
                          "of a bootstrap over test sentences; Maj.: majority-class accuracy; W.-maj.: each test word gets its "
                          "type's most frequent train label (unseen types: the majority label); "
                          "Sel.: selectivity (task $-$ control-task accuracy) at that layer; Sel.\\ F1: the same "
                          "on the positive class's F1 (binary tasks); "
                          r"$\mathrm{E}_\Delta[\ell]$, $\mathrm{E}_s[\ell]$: expected layer of the cumulative "
                          "scores and centre of gravity of the scalar-mix weights (Tenney et al., 2019; -- for "
                          "the expected layer when the gain of the full mix over layer 0 is not above 0 at 95\\%); "
                          "MDL layer: layer with the "
                          "shortest online codelength (Voita \\& Titov, 2020).")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(tex for _, tex in cols) + r" \\", r"\midrule"]
    prev = None
    for _, r in f.iterrows():
        if prev is not None and r["model"] != prev:
            lines.append(r"\midrule")
        cells = []
        for k, _ in cols:
            v = str(r[k])
            if k == "model":
                v = latex_escape(v) if v != prev else ""
            elif k == "test_acc":
                v = v.replace(" ± ", r" $\pm$ ")
                if r["_best"]:
                    v = r"\textbf{" + v + "}"
            else:
                v = latex_escape(v)
            cells.append(v)
        lines.append(" & ".join(cells) + r" \\")
        prev = r["model"]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def best_layer_markdown(table) -> str:
    """The same table as :func:`best_layer_latex` in GitHub Markdown (best accuracy per task in bold)."""
    f = format_best_layer_table(table)
    cols = [(k, md) for k, _, md in COLUMNS if k in f]
    lines = ["| " + " | ".join(md for _, md in cols) + " |",
             "|" + "|".join(":---" if k in ("model", "task", "probe", "pooling") else "---:" for k, _ in cols) + "|"]
    for _, r in f.iterrows():
        cells = []
        for k, _ in cols:
            v = str(r[k]).replace("|", r"\|")
            if k == "test_acc" and r["_best"]:
                v = f"**{v}**"
            cells.append(v)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def layer_markdown(matrix, *, digits: int = 1) -> str:
    """A tasks × layers matrix (:func:`probekit.report.tables.layer_table`, index model × task) as Markdown,
    values in percent."""
    cols = [str(c) for c in matrix.columns]
    lines = ["| model | task | " + " | ".join(cols) + " |", "|:---|:---|" + "|".join("---:" for _ in cols) + "|"]
    for idx, row in matrix.iterrows():
        model, task = idx if isinstance(idx, tuple) else ("", idx)
        vals = [pct(v, digits) for v in row.to_numpy()]
        lines.append(f"| {model} | {task} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"
