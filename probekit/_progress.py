"""Progress bars with an ETA, the one way every stage reports progress.

In Jupyter a widget bar (when ipywidgets is installed; else the text bar, without tqdm's "IProgress not found"
warning), in a terminal a text bar on stderr, nothing when disabled (``-q``, ``progress=False``). The probing loop
calls the same helper once per task x layer group::

    with progress_bar(total=n_tasks * n_groups, desc=f"probe {model}", unit="group", enabled=progress) as bar:
        ...  # per layer group
        bar.update(1)
"""
from __future__ import annotations

import sys
import warnings
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def _tqdm_class():
    """tqdm.auto's choice (widgets in a Jupyter kernel, text elsewhere), with its missing-ipywidgets warning
    silenced: the text bar it falls back to is the right answer there."""
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm


def progress_bar(total: int | None, desc: str, *, unit: str = "it", enabled: bool = True, leave: bool = False):
    """A tqdm bar (a context manager; ``.update(n)``) showing rate and time left; silent when not ``enabled``."""
    tqdm = _tqdm_class()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, file=sys.stderr,
                unit_scale=unit == "word", dynamic_ncols=True)


def progress_iter(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it",
                  enabled: bool = True) -> Iterator[T]:
    """``items`` with a progress bar advanced once per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, desc, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update(1)
