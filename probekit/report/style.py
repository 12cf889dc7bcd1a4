"""One style for every probekit figure: paper column sizes, embedded fonts, colourblind-safe colours.

Sizes: one column = 3.25 in, two columns = 6.75 in wide (ACL / NeurIPS style). Fonts are embedded
as TrueType (``pdf.fonttype`` 42) so that PDFs pass camera-ready checks; text is 8 pt, readable at
print size. The palette is Okabe & Ito's colourblind-safe set.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from probekit.errors import ConfigError, unknown_name

ONE_COLUMN = 3.25
TWO_COLUMN = 6.75
#: Okabe & Ito (2008) colourblind-safe palette.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

RC = {
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 3,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.5, "legend.frameon": False, "figure.dpi": 150, "savefig.dpi": 300,
    # "standard": a figure is exactly its size (3.25 in one column); constrained layout keeps every label inside
    "savefig.bbox": "standard",
}


def mpl():
    """matplotlib with a non-interactive backend unless one is already chosen (e.g. in Jupyter)."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget",
                                                "ipympl"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def paper_style():
    plt = mpl()
    from cycler import cycler

    with plt.rc_context({**RC, "axes.prop_cycle": cycler(color=PALETTE)}):
        yield plt


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


#: File metadata without dates, so that the same figure gives the same bytes on every run.
METADATA = {"pdf": {"CreationDate": None, "ModDate": None, "Producer": "probekit (matplotlib)"},
            "svg": {"Date": None}, "png": {"Software": "probekit (matplotlib)"}}
FORMATS = ("pdf", "png", "svg")


def save(fig, stem: Path, formats=("pdf", "png")) -> list[Path]:
    """Save a figure as vector PDF plus PNG (and SVG on request), atomically; returns the paths.

    PDFs and SVGs carry no creation date, so they are byte-reproducible.
    """
    import logging


    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting logs every table at INFO
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise unknown_name("figure format", fmt, FORMATS)
        p = stem.with_name(f"{stem.name}.{fmt}")
        tmp = p.with_name(f".{p.name}.tmp.{fmt}")
        fig.savefig(tmp, format=fmt, metadata=METADATA[fmt])
        tmp.replace(p)
        out.append(p)
    return out


def new_figure(figsize, nrows=1, ncols=1, **kw):
    """A new Figure (not registered with pyplot) with constrained layout, and its axes grid (always 2-D)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def finish(fig, stem, formats):
    """Save ``fig`` when a ``stem`` is given (call it inside :func:`paper_style`: saving reads its settings); return
    the figure."""
    if stem is not None:
        save(fig, Path(stem), formats)
    return fig


def figure_paths(stem: Path, formats) -> list[Path]:
    """The files :func:`probekit.report.style.save` writes for ``stem`` and ``formats``."""
    return [Path(stem).with_name(f"{Path(stem).name}.{fmt}") for fmt in formats]


def only_model(models: list[str], model: str | None, what: str) -> list[str]:
    """With ``ax=`` one axes is drawn: the one model asked for, or the only one."""
    if model is not None:
        if model not in models:
            raise ConfigError(f"{what}: no rows for model {model!r}; the table has {', '.join(models)}.")
        return [model]
    if len(models) > 1:
        raise ConfigError(f"{what}(ax=...) draws one model, and the table has {len(models)} "
                          f"({', '.join(models)}): pass model=NAME, or no ax for one panel per model.")
    return models
