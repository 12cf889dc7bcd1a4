"""Listing and cleaning the activation stores under one store root (``probekit cache list|clean``).

A store is a direct sub-folder of the root that holds a ``manifest.json``; nothing else is listed or deleted, and a
folder that resolves outside the root (a symbolic link) is skipped, so cleaning never deletes outside the cache.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from probekit.activations.extract import default_store_root


@dataclass
class StoreEntry:
    path: Path
    size: int  # bytes of every file in the folder
    age_days: float  # since the manifest was last written
    model: str
    dataset: str
    split: str
    complete: bool


def list_stores(root: str | Path | None = None) -> list[StoreEntry]:
    """Every store folder under ``root`` (default: the store root extraction uses), oldest first."""
    root = Path(root) if root else default_store_root()
    if not root.is_dir():
        return []
    real_root = root.resolve()
    out = []
    now = time.time()
    for d in sorted(root.iterdir()):
        manifest = d / "manifest.json"
        if d.is_symlink() or not d.is_dir() or d.resolve().parent != real_root or not manifest.is_file():
            continue
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            m = {}
        spec = m if isinstance(m, dict) else {}
        model = (spec.get("model") or {}) if isinstance(spec.get("model"), dict) else {}
        data = (spec.get("data") or {}) if isinstance(spec.get("data"), dict) else {}
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink())
        out.append(StoreEntry(d, size, (now - manifest.stat().st_mtime) / 86400, str(model.get("name", "?")),
                              str(data.get("dataset", "?")), str(data.get("split", "?")), bool(m.get("complete"))))
    return sorted(out, key=lambda e: -e.age_days)


def clean_stores(root: str | Path | None = None, *, older_than_days: float | None = None, model: str | None = None,
                 dry_run: bool = False) -> list[StoreEntry]:
    """Delete the stores not written for more than ``older_than_days`` and/or made by ``model``; returns them.

    With neither selector every store is deleted (the whole cache of activations, which extraction rebuilds).
    """
    chosen = [e for e in list_stores(root)
              if (older_than_days is None or e.age_days > older_than_days) and (model is None or e.model == model)]
    if not dry_run:
        for e in chosen:
            shutil.rmtree(e.path)
    return chosen
