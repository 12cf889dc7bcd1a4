"""Train and score one tuning baseline, and loop methods x tasks x seeds with per-run resume.

A run trains on (a seeded subset of) the training split, selects the epoch with the best dev
score (early stopping with patience), and scores that epoch's weights on dev and test. Metrics
are per labelled word, like the probes: accuracy, macro-F1 and, for binary tasks, F1 of the
positive class (label index 1).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from probekit._progress import progress_bar
from probekit.activations.align import special_layout
from probekit.activations.models import fingerprint, load_model
from probekit.baselines.config import BaselineConfig, check_method
from probekit.baselines.encode import collate, drop_virtual, encode_split, insert_virtual, length_batches
from probekit.baselines.methods import build_method
from probekit.baselines.records import BaselineRun, data_identity, finished_run, run_identity, run_path, write_run
from probekit.data.conllu_io import Sentence
from probekit.data.datasets import load_split
from probekit.data.sampling import sample_sentences
from probekit.errors import ConfigError, TaskError
from probekit.results.table import COLUMNS, classification_metrics, row
from probekit.tasks.base import get_task

log = logging.getLogger(__name__)

def _row_keys() -> tuple[str, ...]:
    return tuple(COLUMNS) + (() if "train_seconds" in COLUMNS else ("train_seconds",))


#: The columns of a result row: the shared schema of :mod:`probekit.results.table` plus ``train_seconds``.
ROW_KEYS = _row_keys()


# ----------------------------------------------------------------------------------------- metrics

def word_metrics(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> dict[str, float]:
    """Per-word metrics, computed exactly as for the probes (:func:`probekit.results.table.classification_metrics`):
    accuracy, macro-F1 (over the classes present in gold or predictions) and, for binary tasks,
    ``pos_f1`` = F1 of class 1.

    Args:
        gold: ``[word]`` class ids.
        pred: ``[word]`` predicted class ids.
    """

    if len(gold) == 0:
        raise TaskError("No labelled words to score.")
    return classification_metrics(gold, pred, n_labels)


# ----------------------------------------------------------------------------------------- training

def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def subsample(train: Sequence[Sentence], n: int | None, seed: int) -> list[Sentence]:
    """A seeded random subset of ``n`` sentences, kept in corpus order (the same for every method)."""
    return sample_sentences(train, n, [seed, 7919])


def predict(tagger, encoded, *, batch_size: int, pad_id: int, device: str) -> tuple[np.ndarray, np.ndarray,
                                                                                     list[tuple[int, int]]]:
    """Predict every labelled word of an encoded split.

    Returns ``gold [word]``, ``pred [word]`` and the ``(sentence, word)`` index of each, sorted in corpus order.
    """
    import torch


    tagger.eval()
    gold, pred, where = [], [], []
    segs = encoded.segments
    with torch.inference_mode():
        for b in length_batches([len(s) for s in segs], batch_size):
            batch = [segs[i] for i in b]
            ids, mask, _ = collate(batch, pad_id)
            logits = tagger(ids.to(device), mask.to(device))
            logits = drop_virtual(logits, tagger.n_virtual, tagger.virtual_at)  # [batch, seq, n_labels]
            p = logits.argmax(-1).cpu().numpy()
            # per word, not per labelled position: two words may share one subword (Segment.positions)
            rows = np.concatenate([np.full(len(s.positions), r) for r, s in enumerate(batch)])
            cols = np.concatenate([s.positions for s in batch])
            pred.append(p[rows, cols])
            for s in batch:
                gold.append(np.asarray(s.word_labels))
                where.extend(s.words)
    gold_a, pred_a = np.concatenate(gold), np.concatenate(pred)
    order = sorted(range(len(where)), key=lambda i: where[i])
    return gold_a[order], pred_a[order], [where[i] for i in order]


def _trainable_state(tagger) -> dict:
    return {n: p.detach().clone() for n, p in tagger.named_parameters() if p.requires_grad}


def fit(tagger, train_enc, dev_enc, *, cfg: BaselineConfig, n_labels: int, pad_id: int, device: str, seed: int,
        on_epoch: Callable[[int, float, dict], None] | None = None) -> dict:
    """Train ``tagger`` with AdamW, linear warm-up/decay and early stopping on dev; restore the best epoch.

    Returns a dict with ``best_epoch``, ``epochs_run``, ``dev`` (metrics of the best epoch),
    ``history`` (per epoch: mean loss, dev metrics, seconds) and ``train_seconds``.
    """
    import torch


    rng = np.random.default_rng([seed, 17])
    params = [p for n, p in tagger.named_parameters() if p.requires_grad and not n.startswith("head.")]
    head = [p for p in tagger.head.parameters() if p.requires_grad]
    head_lr = cfg.head_lr if cfg.head_lr is not None else max(cfg.lr, 1e-3)
    groups = [{"params": head, "lr": head_lr}]
    if params:
        groups.insert(0, {"params": params, "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    segs = train_enc.segments
    steps_per_epoch = math.ceil(len(segs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = int(round(cfg.warmup_ratio * total))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (total - step) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    best_score, best_epoch, best_state, best_dev = -math.inf, -1, None, None
    history = []
    bad = 0
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        tagger.train()
        losses = []
        for b in length_batches([len(s) for s in segs], cfg.batch_size, rng=rng):
            ids, mask, labels = collate([segs[i] for i in b], pad_id)
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            logits = tagger(ids, mask)  # [batch, seq + n_virtual, n_labels]
            # soft-prompt positions get the ignore label, so logits and labels line up
            labels = insert_virtual(labels, tagger.n_virtual, tagger.virtual_at, -100)
            loss = loss_fn(logits.reshape(-1, n_labels), labels.reshape(-1))
            if not torch.isfinite(loss):
                raise TaskError(f"Training loss became {loss.item()} at epoch {epoch} (lr {cfg.lr}); lower the "
                                "learning rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        gold, pred, _ = predict(tagger, dev_enc, batch_size=cfg.eval_batch_size, pad_id=pad_id, device=device)
        dev = word_metrics(gold, pred, n_labels)
        secs = time.perf_counter() - t0
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "dev": dev, "seconds": secs})
        log.info("epoch %d/%d: loss %.4f, dev accuracy %.4f macro-F1 %.4f (%.1f s)", epoch, cfg.epochs,
                 np.mean(losses), dev["accuracy"], dev["macro_f1"], secs)
        if on_epoch:
            on_epoch(epoch, float(np.mean(losses)), dev)
        score = dev[cfg.select_metric]
        if score > best_score:
            best_score, best_epoch, best_dev, bad = score, epoch, dev, 0
            best_state = _trainable_state(tagger)
        else:
            bad += 1
            if cfg.patience and bad >= cfg.patience:
                log.info("early stop after epoch %d (best epoch %d)", epoch, best_epoch)
                break
    train_seconds = time.perf_counter() - t_start
    if best_state is not None and best_epoch != len(history):
        with torch.no_grad():
            named = dict(tagger.named_parameters())
            for n, v in best_state.items():
                named[n].copy_(v)
    return {"best_epoch": best_epoch, "epochs_run": len(history), "dev": best_dev, "history": history,
            "train_seconds": train_seconds}


# ----------------------------------------------------------------------------------------- one run

def run_baseline(*, method: str, model_name: str, task, train: Sequence[Sentence], dev: Sequence[Sentence],
                 test: Sequence[Sentence], seed: int, config: BaselineConfig | None = None, device: str | None = None,
                 experiment: str = "", loaded=None, info: dict | None = None) -> list[dict]:
    """Train one method on one task with one seed and return result rows (test and dev).

    Args:
        method: one of :data:`METHODS`.
        model_name: model alias / path for :func:`probekit.activations.models.load_model`.
        task: a word-level task name or :class:`probekit.tasks.Task`.
        train, dev, test: the splits' sentences (``config.train_sentences`` subsamples train).
        seed: seeds the subset, the new weights and the batch order.
        config: settings; per-method defaults are filled in (:meth:`BaselineConfig.resolved`).
        device: ``cpu``/``cuda``...; default CUDA when available.
        loaded: an already loaded :class:`probekit.activations.models.LoadedModel` of ``model_name``; it is
            deep-copied, never modified.
        info: if given, filled with run details (epochs, history, parameter counts, windowing).
    Returns:
        Rows with the keys of :data:`ROW_KEYS`: for split ``test`` and ``dev`` (best epoch), metrics
        ``accuracy``, ``macro_f1`` and (binary tasks) ``pos_f1``.
    """
    import torch


    check_method(method)
    config = config or BaselineConfig()
    cfg = config.resolved(method)
    task = get_task(task) if isinstance(task, str) else task
    device = _device(device)
    if loaded is None:
        loaded = load_model(model_name, device=device)
    base = copy.deepcopy(loaded.model).to(device)
    tok = loaded.tokenizer
    pooling = cfg.word_pooling or loaded.default_word_pooling
    prepend_bos = cfg.prepend_bos if cfg.prepend_bos is not None else loaded.kind == "decoder"
    max_length = min(cfg.max_length or loaded.max_length, loaded.max_length)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    n_labels = len(task.labels)

    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))

    n_prefix = len(special_layout(tok, prepend_bos=prepend_bos)[0])
    built = build_method(method, base, hidden_size=loaded.hidden_size, n_labels=n_labels, cfg=cfg,
                         n_prefix_specials=n_prefix)
    tagger = built.tagger
    reserve = tagger.n_virtual
    enc_kw = dict(pooling=pooling, max_length=max_length, prepend_bos=prepend_bos, reserve=reserve,
                  causal=loaded.kind == "decoder")
    train_used = subsample(train, cfg.train_sentences, seed)
    train_enc = encode_split(train_used, task, tok, split_name="train", **enc_kw)
    dev_enc = encode_split(dev, task, tok, split_name="dev", **enc_kw)
    test_enc = encode_split(test, task, tok, split_name="test", **enc_kw)
    for name, e in (("train", train_enc), ("dev", dev_enc), ("test", test_enc)):
        if e.n_words == 0:
            raise TaskError(f"Task {task.name}: the {name} split has no labelled words ({e.n_sentences} sentences); "
                            "cannot train or score a baseline.")
    log.info("%s / %s / %s / seed %d: %s, %d of %d params trainable (%.4f%%), %d train sentences (%d words), "
             "lr %g, up to %d epochs", model_name, task.name, method, seed, built.backend, built.trainable_params,
             built.total_params, 100 * built.trainable_fraction, len(train_used), train_enc.n_words, cfg.lr,
             cfg.epochs)
    result = fit(tagger, train_enc, dev_enc, cfg=cfg, n_labels=n_labels, pad_id=pad_id, device=device, seed=seed)
    gold, pred, _ = predict(tagger, test_enc, batch_size=cfg.eval_batch_size, pad_id=pad_id, device=device)
    test_m = word_metrics(gold, pred, n_labels)
    log.info("%s / %s / %s / seed %d: test accuracy %.4f macro-F1 %.4f (%.0f s training)", model_name, task.name,
             method, seed, test_m["accuracy"], test_m["macro_f1"], result["train_seconds"])
    common = {
        "experiment": experiment, "model": model_name, "model_kind": loaded.kind, "model_hash": loaded.weights_hash[:16],
        "task": task.name, "task_version": task.version, "level": task.level, "method": method, "probe": "",
        "control": False, "pooling": pooling, "layer": -1, "n_layers": loaded.num_layers, "seed": seed,
        "trainable_params": built.trainable_params, "trainable_fraction": built.trainable_fraction,
        "train_size": train_enc.n_words, "train_seconds": result["train_seconds"],
    }

    rows = []
    for split, metrics in (("test", test_m), ("dev", result["dev"])):
        for metric, value in metrics.items():
            r = row(**common, split=split, metric=metric, value=float(value))
            rows.append({k: r.get(k) for k in ROW_KEYS})
    if info is not None:
        info.update({"backend": built.backend, "trainable_params": built.trainable_params,
                     "total_params": built.total_params, "library_params": built.library_params,
                     "notes": built.notes, "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
                     "history": result["history"], "train_sentences": len(train_used),
                     "test_words": int(len(gold)), "dev_words": dev_enc.n_words,
                     "windowed": {"train": train_enc.n_windowed, "dev": dev_enc.n_windowed,
                                  "test": test_enc.n_windowed},
                     "settings": {k: getattr(cfg, k) for k in ("lr", "epochs", "batch_size", "patience",
                                                                 "warmup_ratio", "weight_decay")},
                     "device": device})
    del tagger, base
    return rows


# ----------------------------------------------------------------------------------------- many runs

def run_baselines(*, models: Sequence[str], tasks: Sequence[str], seeds: Sequence[int],
                  config: BaselineConfig | None = None, methods: Sequence[str] | None = None,
                  train: Sequence[Sentence] | None = None, dev: Sequence[Sentence] | None = None,
                  test: Sequence[Sentence] | None = None, dataset: str = "ud_ewt", data_dir=None,
                  limit: dict | None = None, results_dir: str | Path | None = None, device: str | None = None,
                  experiment: str = "", done: set[tuple] | None = None,
                  on_rows: Callable[[tuple, list[dict]], None] | None = None,
                  counts: dict | None = None, progress: bool = False) -> list[dict]:
    """Run every model x method x task x seed and return all rows (``progress``: a bar over the runs, with an ETA).

    Splits not given are loaded with :func:`probekit.data.datasets.load_split` (``limit`` = max
    sentences per split, e.g. ``{"train": None, "dev": 500, "test": None}``).

    Resuming: with ``results_dir`` each finished run is written atomically to its record
    (:mod:`probekit.baselines.records`); a run whose record exists with the same settings is not run again (its
    rows are read back). A record written with other settings is re-run and overwritten (logged).
    Keys ``(model, method, task, seed)`` in ``done`` are skipped without rows. ``on_rows`` is called
    with each run's key and rows as soon as it finishes.
    """

    config = config or BaselineConfig()
    methods = [check_method(m) for m in (methods or config.methods)]
    if not models or not tasks or not seeds:
        raise ConfigError("run_baselines needs at least one model, one task and one seed.")
    tasks_obj = [get_task(t) for t in tasks]
    limit = limit or {}
    splits = {}
    for name, given in (("train", train), ("dev", dev), ("test", test)):
        splits[name] = list(given) if given is not None else load_split(dataset, name, data_dir=data_dir,
                                                                        limit=limit.get(name))
    done = done or set()
    rows: list[dict] = []
    device = _device(device)
    data_id = data_identity(splits)
    bar = progress_bar(len(models) * len(methods) * len(tasks_obj) * len(seeds), "tuning baselines", unit="run",
                       enabled=progress)
    for model_name in models:
        loaded = None
        model_id = fingerprint(model_name)
        for method in methods:
            fp = config.fingerprint(method)
            for task in tasks_obj:
                for seed in seeds:
                    key = (model_name, method, task.name, seed)
                    bar.set_postfix_str(f"{Path(model_name).name} {method} {task.name} seed {seed}", refresh=False)
                    if key in done:
                        bar.update(1)
                        continue
                    identity = run_identity(fp, data_id, model_id, task)
                    path = run_path(results_dir, model=model_name, method=method, task=task.name, seed=seed) \
                        if results_dir is not None else None
                    if path is not None and path.is_file():
                        stored = finished_run(path, identity)
                        if stored is not None:
                            log.info("skip %s (finished: %s)", key, path.name)
                            rows.extend(stored.rows)
                            if on_rows:
                                on_rows(key, stored.rows)
                            bar.update(1)
                            continue
                        log.warning("%s was written with other settings, data, weights or task version; running %s "
                                    "again", path, key)
                    if loaded is None:
                        loaded = load_model(model_name, device=device)
                    info: dict = {}
                    if counts is not None:
                        counts["trained"] = counts.get("trained", 0) + 1
                    run_rows = run_baseline(method=method, model_name=model_name, task=task, train=splits["train"],
                                            dev=splits["dev"], test=splits["test"], seed=seed, config=config,
                                            device=device, experiment=experiment, loaded=loaded, info=info)
                    if path is not None:
                        write_run(path, BaselineRun(key=key, identity=identity, rows=run_rows,
                                                    n_sentences={k: len(v) for k, v in splits.items()},
                                                    config=config.resolved(method).to_dict(), info=info))
                    rows.extend(run_rows)
                    if on_rows:
                        on_rows(key, run_rows)
                    bar.update(1)
    bar.close()
    return rows
