"""The step-by-step Python API for notebooks: load a task, extract, probe, tabulate, plot.

    import probekit as pk
    train, dev, test = (pk.load_sentences("ud_ewt", s, limit=500) for s in ("train", "dev", "test"))
    lm = pk.load_model("minilm")
    stores = {s: pk.extract_store(lm, sents, split=s) for s, sents in [("train", train), ("dev", dev), ("test", test)]}
    table = pk.probe(lm, "upos", stores, {"train": train, "dev": dev, "test": test})
    summary = pk.summarize(table)
    pk.plot_layers(summary)

Each function is the one the experiment runner uses, so a notebook and ``probekit run`` give
the same numbers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from probekit._io import cache_root
from probekit.activations.extract import extract as _extract
from probekit.activations.models import load_model
from probekit.data.conllu_io import Sentence, read_conllu
from probekit.data.datasets import load_split
from probekit.data.own_data import HF_PREFIX, Columns, from_hf, read_csv, read_jsonl
from probekit.errors import ConfigError
from probekit.probing.linear import DEFAULT_CS
from probekit.report.figures import accuracy_by_layer
from probekit.report.tables import summarize as _summarize
from probekit.results.table import to_frames
from probekit.runner.probe_task import probe_task
from probekit.runner.units import ProbePolicy, Unit
from probekit.tasks import get_task


def load_sentences(dataset="ud_ewt", split: str = "train", *, limit: int | None = None,
                   data_dir: str | os.PathLike | None = None, columns: Columns | dict | None = None
                   ) -> list[Sentence]:
    """Sentences of a named treebank split (``ud_ewt``, ``ud_pud``, ``ud:de_gsd``, ``UD_German-GSD``), of a file
    (``.conllu``; ``.jsonl``, ``.csv`` or ``.tsv`` with labels of your own), or of a Hugging Face dataset (a
    ``datasets.Dataset``, a ``DatasetDict`` and its ``split``, or ``hf:NAME_OR_PATH``). ``columns`` says which columns
    of your own data hold what (:class:`probekit.data.own_data.Columns` or a mapping; see docs/data.md)."""
    cols = columns if isinstance(columns, Columns) or columns is None else Columns.from_mapping(columns, "columns")
    if not isinstance(dataset, (str, os.PathLike)):
        return from_hf(dataset, split, columns=cols, limit=limit)
    dataset = os.fspath(dataset)
    suffix = Path(dataset).suffix.lower()
    if dataset.startswith(HF_PREFIX):
        return from_hf(dataset[len(HF_PREFIX):], split, columns=cols, limit=limit)
    if suffix == ".jsonl":
        return read_jsonl(dataset, columns=cols, limit=limit)
    if suffix in (".csv", ".tsv"):
        return read_csv(dataset, columns=cols, limit=limit)
    if columns is not None:
        raise ConfigError(f"load_sentences({dataset!r}): 'columns' is for JSONL, CSV and Hugging Face data, not a "
                          "treebank.")
    if suffix == ".conllu":
        return read_conllu(dataset, cache_dir=cache_root(), limit=limit)
    return load_split(dataset, split, data_dir=data_dir, limit=limit)


def extract_store(model, sentences: Sequence[Sentence], *, split: str = "custom", dataset: str = "custom",
                  precision: str = "auto", **kw):
    """Extract (or reuse) every layer's vectors; ``model`` is a name or a loaded model. ``precision``: ``auto``
    (fp32), ``fp32``, ``bf16`` or ``fp16`` autocast; the one that runs is part of the store key. See
    :func:`probekit.activations.extract.extract` for the other options."""
    lm = load_model(model) if isinstance(model, str) else model
    return _extract(lm, sentences, dataset=dataset, split=split, precision=precision, **kw)


def probe(model, task, stores: dict, sentences: dict, *, probe: str = "linear", seeds: Sequence[int] = (0,),
          layers: list[int] | None = None, control_tasks: bool = True, mdl: bool = False,
          pooling: str | None = None, Cs: Sequence[float] = DEFAULT_CS, device: str | None = None,
          experiment: str = "notebook", progress: bool = True):
    """Train and score probes on every layer of one task; returns the tidy results DataFrame.

    Args:
        model: the :class:`~probekit.activations.models.LoadedModel` the stores were extracted with.
        task: a task name or :class:`~probekit.tasks.Task`.
        stores: ``{"train": store, "dev": store, "test": store}``.
        sentences: ``{"train": [...], "dev": [...], "test": [...]}`` (same sentences as the stores).
        pooling: for sentence-level tasks, the sentence pooling (default: every one the store has).
        probe: a registered probe family (``linear``, ``mlp1``, ``mlp2``, ...).
        progress: a progress bar over the layers with the time left (a widget in Jupyter, text on stderr).
    Other settings mean what the experiment config's keys of the same name mean.
    """
    if not hasattr(model, "weights_hash"):
        raise ConfigError(f"probe() needs the loaded model the stores were extracted with (pk.load_model(...)), not "
                          f"{model!r}: model = pk.load_model({model!r}) once, then pass it to extract_store and probe.")
    for role in ("train", "dev", "test"):
        if role not in stores or role not in sentences:
            raise ConfigError(f"probe() needs stores and sentences for train, dev and test; {role!r} is missing.")
        m, sents = stores[role].manifest, sentences[role]
        sm = m["model"]
        if (sm.get("weights_hash"), sm.get("random_seed")) != (model.weights_hash, model.random_seed):
            raise ConfigError(f"stores[{role!r}] were extracted with {sm.get('name')!r} (weights "
                              f"{str(sm.get('weights_hash'))[:16]}), not with {model.name!r} (weights "
                              f"{model.weights_hash[:16]}): the rows would carry one model's name and the other's "
                              "numbers. Pass the model the stores were made with, or extract_store with this one.")
        n_words = sum(len(s) for s in sents)
        if (m["n_sentences"], m["n_words"]) != (len(sents), n_words):
            raise ConfigError(f"stores[{role!r}] holds {m['n_sentences']} sentences / {m['n_words']} words, but "
                              f"sentences[{role!r}] has {len(sents)} / {n_words}: they are not the same sentences "
                              "(a changed limit?). Rerun extract_store with these sentences.")
    task = get_task(task)
    poolings = [pooling] if pooling else (stores["train"].sentence_poolings if task.level == "sentence"
                                          else ["default"])
    policy = ProbePolicy(experiment=experiment, probes=(probe,), seeds=tuple(seeds),
                         layers=None if layers is None else tuple(layers), Cs=tuple(Cs), control_tasks=control_tasks,
                         mdl=mdl, device=device)
    units = [Unit(model.name, task.name, p, probe, s) for p in poolings for s in seeds]
    rows = probe_task(lm_info={"name": model.name, "kind": model.kind, "hash": model.weights_hash}, stores=stores,
                      data=sentences, task=task, policy=policy, units=units, progress=progress)
    df, _ = to_frames([r for u in units for r in rows[u]])
    return df


def summarize(table):
    """Mean and 95% CI over seeds, selectivity, expected_layer_cummax; Tenney's expected layer comes from the
    scalar-mix study (see :func:`probekit.report.tables.summarize`)."""
    return _summarize(table)


def plot_layers(summary, path: str | os.PathLike | None = None, *, formats=("pdf", "png"), ax=None,
                model: str | None = None):
    """Accuracy by layer (CI bands, majority dashed) as a matplotlib Figure: a notebook shows it as the cell's value.
    Saved to ``path`` (a stem: ``path.pdf``, ``path.png``) only when given; ``ax=`` draws one ``model`` into your own
    axes. See :func:`probekit.report.figures.accuracy_by_layer`."""
    return accuracy_by_layer(summary, path, formats, ax=ax, model=model)
