"""The experiment runner: data → stores → probes for every layer → one results table → figures.

Every stage is a public function a notebook can call alone; :func:`run_experiment` chains them
and is what ``probekit run CONFIG`` calls.

Work is cut into *units* (model × task × pooling × probe × seed, all layers together). A unit's
rows are written atomically to ``results/<experiment>/runs/<key>.json``, keyed by the content of
everything that produced them, so a rerun (or a resumed, killed run) recomputes nothing finished
and loads no model when all its units are done.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probekit.activations.models import ModelName
from probekit.config import ExperimentConfig
from probekit.data.sampling import sample_sentences
from probekit.errors import ConfigError, TaskError
from probekit.probing.linear import check_finite
from probekit.results import predictions
from probekit.results.table import classification_metrics, load_unit, row, save_unit

log = logging.getLogger(__name__)

#: Part of every unit's key: bumped when the code that fits probes changes the numbers it gives, so that cached rows
#: of an older solver are recomputed, not mixed with new ones (2: the polish starts from the subsample's L-BFGS memory;
#: 3: the preconditioner's covariance comes from BLAS syrk, and the gradient's matmul kernel depends on the number of
#: classes; both round differently; 4: MDL solves each L2 value of its grid as its own problem, see mdl.MAX_JOINT_OUTPUTS;
#: 5: word pooling respects the word (extract.ALIGN_VERSION 2), control rows carry pos_f1, test predictions are saved).
UNIT_VERSION = 5
#: Largest float32 feature block (bytes) loaded for probe training at once; layers are grouped under it.
MEMORY_BUDGET = 3 << 30
#: Seed of the `train_sentences` sample (recorded with the sample in the data fingerprint).
TRAIN_SAMPLE_SEED = 0


# ----------------------------------------------------------------------------------------------- data

def load_data(cfg: ExperimentConfig) -> tuple[dict, dict]:
    """Sentences per split role and a fingerprint of the data: ({role: [Sentence]}, {role: {...}})."""
    from probekit._io import sha256_file
    from probekit.data.conllu_io import read_conllu
    from probekit._io import cache_root
    from probekit.data.datasets import locate
    from probekit.errors import DataError

    data, fp = {}, {}
    for role in ("train", "dev", "test"):
        limit = (cfg.limit or {}).get(role)
        if cfg.dataset == "conllu":
            if role not in cfg.files:
                raise DataError(f"Dataset 'conllu' needs files.{role}: the path of the {role} CoNLL-U file.")
            path = Path(cfg.files[role])
        else:
            split = cfg.splits.get(role, role)
            path = locate(cfg.dataset, split, data_dir=cfg.data_dir)
        sents = read_conllu(path, cache_dir=cache_root(), limit=limit)
        if not sents:
            raise DataError(f"{path}: the {role} split is empty (limit={limit}). Give a file with sentences.")
        sampled = sample_sentences(sents, cfg.train_sentences if role == "train" else None, TRAIN_SAMPLE_SEED)
        sample = cfg.train_sentences if len(sampled) < len(sents) else None
        sents = sampled
        data[role] = sents
        fp[role] = {"file": str(path), "sha256": sha256_file(path), "limit": limit, "n_sentences": len(sents),
                    "n_words": sum(len(s) for s in sents)}
        if sample:  # only when set, so that the keys of unsampled data (stores, units) stay as they were
            fp[role]["sample"] = {"sentences": sample, "seed": TRAIN_SAMPLE_SEED}
    return data, fp


def data_checksum(fp: dict) -> str:
    """What identifies one split's data inside a store key: the file's sha256 and the slice taken of it."""
    out = fp["sha256"] + f":{fp['limit']}"
    if fp.get("sample"):
        out += f":sample{fp['sample']['sentences']}@{fp['sample']['seed']}"
    return out


def model_list(cfg: ExperimentConfig) -> list[str]:
    models = list(cfg.models)
    if cfg.random_baseline:
        models += [ModelName.random_of(m) for m in cfg.models if not ModelName.parse(m).is_random]
    return models


# ----------------------------------------------------------------------------------------------- units

@dataclass
class Unit:
    model: str
    task: str
    pooling: str
    probe: str
    seed: int
    key: str = ""
    rows: list = field(default_factory=list)


def _unit_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


def plan_units(cfg: ExperimentConfig, model: str, model_fp: dict, data_fp: dict, kind_hint: str | None = None
               ) -> list[Unit]:
    """Every unit of work for one model (keys depend on everything that changes the rows)."""
    from probekit.tasks import get_task

    from probekit.activations.models import kind_of

    kind = kind_hint or kind_of(model)
    # content, not location: the same treebank found through a different directory keeps its results
    data_key = {role: {k: v for k, v in fp.items() if k != "file"} for role, fp in data_fp.items()}
    units = []
    for tname in cfg.tasks:
        task = get_task(tname)
        poolings = list(cfg.sentence_poolings) if task.level == "sentence" else [cfg.word_pooling or "default"]
        if task.level == "sentence" and kind == "decoder":
            poolings = [p for p in poolings if p != "cls"]  # a causal model has no [CLS] summary token
        for pooling in poolings:
            for probe in cfg.probes:
                for seed in cfg.seeds:
                    spec = {"v": UNIT_VERSION, "model": model_fp, "data": data_key, "task": task.name,
                            "task_version": task.version, "labels": task.labels, "pooling": pooling,
                            "probe": probe, "seed": seed, "layers": cfg.layers, "Cs": cfg.Cs,
                            "control": cfg.control_tasks, "mdl": cfg.mdl and probe == "linear" and seed == cfg.seeds[0],
                            "mdl_max": cfg.mdl_max_examples, "max_train": cfg.max_train_items, "mlp": cfg.mlp if probe != "linear" else None,
                            "dtype": cfg.dtype, "experiment": cfg.name,
                            # the linear controls of all seeds are one problem (_linear_controls), so a seed's
                            # control numbers depend on the seed list
                            "control_seeds": sorted(cfg.seeds) if cfg.control_tasks and probe == "linear" else None,
                            # the majority-class rows are written by the first probe's units only
                            "majority": probe == cfg.probes[0]}
                    units.append(Unit(model, task.name, pooling, probe, seed, key=_unit_key(spec)))
    return units


# ----------------------------------------------------------------------------------------------- probing

def _layer_groups(layers: list[int], n_rows: int, d: int, budget: int = MEMORY_BUDGET) -> list[list[int]]:
    per_layer = max(1, n_rows * d * 4)
    size = max(1, budget // per_layer)
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def _features(store, layers: list[int], rows: np.ndarray, level: str, pooling: str) -> np.ndarray:
    """``[len(layers), n, d_model]`` float32 features of the labelled items."""
    if level == "word":
        return store.layers(layers, rows=rows)
    return np.stack([store.sentence_vectors(pooling, layer)[rows] for layer in layers])


def _cached_features(cache: dict | None, store, layers: list[int], rows: np.ndarray, level: str, pooling: str):
    """:func:`_features`, reusing the cache's entry for the same store, layers, rows and pooling (one per store)."""
    if cache is None:
        return _features(store, layers, rows, level, pooling)
    key = (tuple(layers), hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest(), level, pooling)
    hit = cache.get(str(store.path))
    if hit is not None and hit[0] == key:
        return hit[1]
    cache.pop(str(store.path), None)  # free the old block before loading the new one
    X = _features(store, layers, rows, level, pooling)
    # shared by several tasks' probes, which never write into their features (tests/test_linear.py checks the
    # linear probe; a read-only flag would make torch.as_tensor in the MLP probe warn)
    cache[str(store.path)] = (key, X)
    return X


def probe_task(*, lm_info: dict, stores: dict, data: dict, task, cfg: ExperimentConfig, units: list[Unit],
               progress: bool = True, feature_cache: dict | None = None) -> None:
    """Train and score every pending unit of one task for one model (fills ``unit.rows``).

    ``feature_cache``: a dict the caller keeps across the tasks of one model; the features of the last layer group
    are kept in it and reused by the next task that reads the same rows (word tasks that label every word do).
    """
    from probekit.probing.control import control_sentence_labels, control_word_labels

    level = task.level
    ys = {role: task.encode(data[role]) for role in ("train", "dev", "test")}
    masks = {role: np.flatnonzero(y >= 0) for role, y in ys.items()}
    C = len(task.labels)
    for role in ("train", "dev", "test"):
        if len(masks[role]) == 0:
            raise TaskError(f"Task {task.name}: the {role} split has no labelled items "
                            f"({len(data[role])} sentences). Use more data or another split.")
    present = np.unique(ys["train"][masks["train"]])
    if len(present) < 2:
        raise TaskError(f"Task {task.name}: the train split has a single label ({task.labels[present[0]]!r}); "
                        "a probe cannot learn anything. Use more training data or check the task's rule.")
    if cfg.max_train_items and len(masks["train"]) > cfg.max_train_items:
        # a fixed (seed-0) sample, so that every seed and probe sees the same training items
        keep = np.random.default_rng(0).choice(len(masks["train"]), cfg.max_train_items, replace=False)
        masks["train"] = masks["train"][np.sort(keep)]
    y = {role: ys[role][masks[role]] for role in ys}
    test_items = predictions.item_index(data["test"], masks["test"], level)
    n_layers = stores["train"].n_layers
    layers = cfg.layers if cfg.layers is not None else list(range(n_layers))
    for layer in layers:
        try:
            stores["train"]._check_layer(layer)
        except ConfigError as e:
            raise ConfigError(f"Config 'layers' = {cfg.layers}: {e} (model {lm_info['name']})") from None
    d = stores["train"].hidden_size
    left_out = {role: int((ys[role] < 0).sum()) for role in ys}
    common = dict(experiment=cfg.name, model=lm_info["name"], model_kind=lm_info["kind"],
                  model_hash=lm_info["hash"][:16], task=task.name, task_version=task.version, level=level,
                  method="probe", n_layers=n_layers - 1)
    # control labels (per seed), word-type controls for word tasks, shuffled labels for sentence tasks
    controls = {}
    if cfg.control_tasks:
        # every configured seed, not only the pending ones: the linear controls of all seeds are fitted as one
        # problem, and a unit's numbers must not depend on which other units happen to be pending
        for seed in sorted(set(cfg.seeds) | {u.seed for u in units}):
            if level == "word":
                words = {role: np.array([w for s in data[role] for w in s.words], dtype=object)[masks[role]]
                         for role in ys}
                controls[seed] = control_word_labels(words, y, n_classes=C, seed=seed)
            else:
                controls[seed] = {role: control_sentence_labels(y[role], seed=seed + 1000 * i)
                                  for i, role in enumerate(("train", "dev", "test"))}
    majority = int(np.bincount(y["train"], minlength=C).argmax())
    by_pool: dict[str, list[Unit]] = {}
    for u in units:
        by_pool.setdefault(u.pooling, []).append(u)
    for pooling, punits in by_pool.items():
        pool_name = pooling if level == "sentence" else stores["train"].manifest["word_pooling"]
        for u in punits:
            # once per task, pooling and seed: by the units of the first probe (not once per probe)
            for role in ("test",) if u.probe == cfg.probes[0] else ():
                for metric, value in classification_metrics(y[role], np.full(len(y[role]), majority), C).items():
                    u.rows.append(row(**common, probe="majority", control=False, pooling=pool_name, layer=None,
                                      seed=u.seed, split=role, metric=metric, value=value, trainable_params=0,
                                      train_size=len(y["train"])))
            for role, n in left_out.items():
                u.rows.append(row(**common, probe=u.probe, control=False, pooling=pool_name, layer=None, seed=u.seed,
                                  split=role, metric="left_out", value=float(n)))
        groups = _layer_groups(layers, len(y["train"]), d)
        for group in groups:
            t0 = time.perf_counter()
            X = {role: _cached_features(feature_cache, stores[role], group, masks[role], level, pooling)
                 for role in ("train", "dev", "test")}
            log.info("%s %s %s: layers %s loaded (%.1fs)", lm_info["name"], task.name, pool_name, group,
                     time.perf_counter() - t0)
            if any(u.probe != "linear" for u in punits):
                # once per loaded group: the linear probe checks its own inputs, scikit-learn's check in the MLP
                # probe would say neither the layer nor the cause
                for role in ("train", "dev", "test"):
                    for i, layer in enumerate(group):
                        check_finite(X[role][i], f"layer {layer} ({role})")
            shared: dict = {}
            for u in punits:
                _run_unit_group(u, X, y, group, C, controls, cfg, common, pool_name, d, shared, test_items)


def _score_rows(common, u, pool_name, layer, control, split_scores, n_params, train_size, reg, seconds):
    out = []
    for split, metrics in split_scores.items():
        for metric, value in metrics.items():
            out.append(row(**common, probe=u.probe, control=control, pooling=pool_name, layer=layer, seed=u.seed,
                           split=split, metric=metric, value=value, trainable_params=n_params,
                           train_size=train_size, reg=reg, train_seconds=seconds))
    return out


def _predict_test(model, X_test):
    """(class ids, probability of the predicted class) on the test items; the ids are ``model.predict``'s."""
    if hasattr(model, "coef"):  # linear: one float64 scoring pass gives both
        z = model.decision_function(X_test)
        return z.argmax(1), 1.0 / np.exp(z - z.max(1, keepdims=True)).sum(1)
    return model.predict(X_test), model.predict_proba(X_test).max(1)


def _fit_predict(probe: str, X: dict, y: dict, C: int, cfg: ExperimentConfig, seed: int, fixed_C=None):
    """Fit one probe type on a layer group; returns per layer (pred_dev, pred_test, n_params, reg, proba_test)."""
    from probekit.probing.linear import fit_layers

    out = []
    if probe == "linear":
        if fixed_C is None:
            fits = fit_layers(X["train"], y["train"], n_classes=C, Cs=tuple(cfg.Cs), X_dev=X["dev"], y_dev=y["dev"],
                              device=cfg.device, seed=seed)
        else:
            fits = fit_layers(X["train"], y["train"], n_classes=C, fixed_C=fixed_C, device=cfg.device, seed=seed)
        for i, f in enumerate(fits):
            ptest, proba = _predict_test(f, X["test"][i])
            out.append((f.predict(X["dev"][i]), ptest, f.n_params, f.C, proba))
        return out
    from probekit.probing.mlp import MLPProbe

    params = {"hidden_size": 256, "dropout": 0.1, "weight_decay": 0.0, "max_epochs": 20, "patience": 3,
              "batch_size": 512}
    params.update(cfg.mlp or {})
    for i in range(X["train"].shape[0]):
        m = MLPProbe(hidden_layers=1 if probe == "mlp1" else 2, seed=seed, device=cfg.device, **params)
        m.fit(X["train"][i], y["train"], X["dev"][i], y["dev"])
        n_params = sum(p.numel() for p in m.model_.parameters()) if hasattr(m, "model_") else None
        ptest, proba = _predict_test(m, X["test"][i])
        out.append((m.predict(X["dev"][i]), ptest, n_params, params.get("weight_decay"), proba))
    return out


def _linear_controls(X: dict, controls: dict, C: int, cfg: ExperimentConfig, chosen: list) -> dict:
    """Linear probes on the control labels of every seed at once (one multi-head problem per layer group, at the
    strengths chosen for the real task): {seed: [(pred_dev, pred_test, n_params, C) per layer]}."""
    from probekit.probing.linear import fit_layers

    seeds = sorted(controls)
    Y = np.stack([controls[s]["train"] for s in seeds])
    heads = fit_layers(X["train"], Y, n_classes=C, fixed_C=chosen, device=cfg.device, seed=0)
    return {s: [(None, f.predict(X["test"][i]), f.n_params, f.C) for i, f in enumerate(fits)]
            for s, fits in zip(seeds, heads)}


def _run_unit_group(u: Unit, X: dict, y: dict, group: list[int], C: int, controls: dict, cfg: ExperimentConfig,
                    common, pool_name: str, d: int, shared: dict | None = None, test_items: dict | None = None
                    ) -> None:
    t0 = time.perf_counter()
    if u.probe == "linear" and shared is not None:
        # The linear probe is a convex problem solved to convergence: its fit does not depend on the seed
        # (stage 1 uses a fixed subsample), so it is computed once and its rows repeated for every seed.
        # Seeds change what really is random: control labels, MDL block order, MLP initialisation.
        if "linear" not in shared:
            shared["linear"] = (_fit_predict("linear", X, y, C, cfg, 0), time.perf_counter() - t0)
        res, secs = shared["linear"]
        secs /= len(group)
    else:
        res = _fit_predict(u.probe, X, y, C, cfg, u.seed)
        secs = (time.perf_counter() - t0) / len(group)
    for i, layer in enumerate(group):
        pdev, ptest, n_params, reg, proba = res[i]
        if test_items is not None:  # the per-sentence scores of the bootstrap and the error analysis read these
            predictions.save_layer(Path(cfg.results_dir) / cfg.name / "runs", u.key, gold=y["test"], pred=ptest,
                                   proba=proba, items=test_items, model=common["model"], task=common["task"],
                                   probe=u.probe, pooling=pool_name, seed=u.seed, layer=layer)
        scores = {"dev": {"accuracy": float((pdev == y["dev"]).mean())},
                  "test": classification_metrics(y["test"], ptest, C)}
        u.rows += _score_rows(common, u, pool_name, layer, False, scores, n_params, len(y["train"]), reg, secs)
    control = controls.get(u.seed)
    if control is not None:
        t0 = time.perf_counter()
        if u.probe == "linear" and shared is not None:
            if "control" not in shared:
                shared["control"] = (_linear_controls(X, controls, C, cfg, [r[3] for r in res]),
                                     (time.perf_counter() - t0) / len(controls))
            all_seeds, secs = shared["control"]
            cres = all_seeds[u.seed]
        else:
            chosen = [res[i][3] for i in range(len(group))] if u.probe == "linear" else None
            cres = _fit_predict(u.probe, X, control, C, cfg, u.seed, fixed_C=chosen)
            secs = time.perf_counter() - t0
        secs /= len(group)
        for i, layer in enumerate(group):
            pdev, ptest, n_params, reg = cres[i][:4]
            # accuracy, and for a binary task the positive class's F1 (selectivity on F1, report.tables)
            scores = {"test": {k: v for k, v in classification_metrics(control["test"], ptest, C).items()
                               if k != "macro_f1"}}
            u.rows += _score_rows(common, u, pool_name, layer, True, scores, n_params, len(y["train"]), reg, secs)
    if cfg.mdl and u.probe == "linear" and u.seed == cfg.seeds[0]:
        # MDL is costly (11 trainings per layer); it is computed for the first seed only.
        from probekit.probing.mdl import online_codelength_layers
        from probekit.probing.linear import small_problem_threads, torch_threads

        t0 = time.perf_counter()
        n = len(y["train"])
        take = np.arange(n)
        if cfg.mdl_max_examples and n > cfg.mdl_max_examples:
            take = np.sort(np.random.default_rng(u.seed).choice(n, cfg.mdl_max_examples, replace=False))
        with torch_threads(small_problem_threads(len(group) * len(take) * d, cfg.device or "cpu")):
            res_mdl = online_codelength_layers(X["train"][:, take], y["train"][take], n_classes=C, seed=u.seed,
                                               device=cfg.device)
        secs = (time.perf_counter() - t0) / len(group)
        for i, layer in enumerate(group):
            for metric, value in res_mdl[i].metrics().items():
                u.rows.append(row(**common, probe=u.probe, control=False, pooling=pool_name, layer=layer,
                                  seed=u.seed, split="train", metric=f"mdl_{metric}", value=value,
                                  train_size=len(take), train_seconds=secs))


# ----------------------------------------------------------------------------------------------- runner

@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns: the tidy table, its summary and where files went."""

    config: ExperimentConfig
    folder: Path
    table: object  # pandas.DataFrame
    summary: object  # pandas.DataFrame
    figures: list[Path]
    forward_passes: int = 0

    def __repr__(self) -> str:
        return (f"ExperimentResult({self.config.name!r}, rows={len(self.table)}, models={self.table['model'].nunique()}, "
                f"tasks={self.table['task'].nunique()}, folder={str(self.folder)!r})")

    def _repr_html_(self) -> str:
        from probekit.report.tables import best_layer_table

        return (f"<p><b>{self.config.name}</b>: {len(self.table)} rows in {self.folder}</p>"
                + best_layer_table(self.summary).to_html(index=False))


def extract_stores(cfg: ExperimentConfig, lm, data: dict, data_fp: dict, *, progress: bool = True) -> dict:
    """Write (or reuse) the model's train/dev/test stores as the config says: {role: ActivationStore}.

    ``probekit run`` and the sweep workers both call this, so they share stores.
    """
    from probekit.activations.extract import extract

    return {role: extract(lm, data[role], dataset=cfg.dataset, split=cfg.splits.get(role, role),
                          data_checksum=data_checksum(data_fp[role]),
                          store_root=cfg.store_dir, word_pooling=cfg.word_pooling, dtype=cfg.dtype,
                          batch_tokens=cfg.batch_tokens, strict=cfg.strict, progress=progress)
            for role in ("train", "dev", "test")}


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True) -> ExperimentResult:
    """Run (or resume) an experiment end to end and write its results folder."""
    from probekit.activations.models import fingerprint, load_model
    from probekit.results.table import provenance, to_frames, write_csv
    from probekit.tasks import get_task

    t_start = time.time()
    folder = Path(cfg.results_dir) / cfg.name
    runs = folder / "runs"  # created by the first unit written: a run that fails on its input leaves no folder
    # but an unusable results_dir (a file, no permission) fails now, not after the extraction and the probes
    Path(cfg.results_dir).mkdir(parents=True, exist_ok=True)
    tasks = [get_task(t) for t in cfg.tasks]
    data, data_fp = load_data(cfg)
    all_rows: list[dict] = []
    unit_keys: list[str] = []
    models_info = {}
    forward_passes = 0
    for m in model_list(cfg):
        fp = fingerprint(m)
        units = plan_units(cfg, m, fp, data_fp)
        pending = []
        for u in units:
            rows = load_unit(runs / f"{u.key}.json")
            if rows is None:
                pending.append(u)
            else:
                u.rows = rows
        models_info[m] = {"fingerprint": fp}
        if pending:
            log.info("%s: %d of %d units to compute", m, len(pending), len(units))
            lm = load_model(m, device=cfg.device)
            stores = extract_stores(cfg, lm, data, data_fp, progress=progress)
            forward_passes += sum(st.computed_shards for st in stores.values())
            info = {"name": m, "kind": lm.kind, "hash": lm.weights_hash}
            models_info[m].update({"kind": lm.kind, "weights_hash": lm.weights_hash, "num_layers": lm.num_layers,
                                   "stores": {r: str(s.path) for r, s in stores.items()}})
            feature_cache: dict = {}
            for task in tasks:
                tunits = [u for u in pending if u.task == task.name]
                if not tunits:
                    continue
                t0 = time.perf_counter()
                probe_task(lm_info=info, stores=stores, data=data, task=task, cfg=cfg, units=tunits,
                           progress=progress, feature_cache=feature_cache)
                for u in tunits:
                    save_unit(runs / f"{u.key}.json", u.rows)
                log.info("%s %s: probed in %.1fs", m, task.name, time.perf_counter() - t0)
            del lm, feature_cache
        for u in units:
            all_rows.extend(u.rows)
        unit_keys += [u.key for u in units]
    if cfg.baselines:
        all_rows.extend(run_config_baselines(cfg, data, progress=progress))
    df, timings = to_frames(all_rows)
    write_csv(df, folder / "results.csv")
    if timings is not None:
        write_csv(timings, folder / "timings.csv")
    from probekit.report.tables import summarize

    summary = summarize(df)
    from probekit.results.analysis import analyse

    summary = analyse(folder, unit_keys, data, tasks, summary)  # sentence intervals, significance, error analysis
    write_csv(summary, folder / "summary.csv")
    prov = provenance(cfg.to_dict(), data=data_fp, models=models_info)
    from probekit._io import atomic_write_bytes

    atomic_write_bytes(folder / "provenance.json", json.dumps(prov, indent=1, default=str).encode())
    # the resolved config: `probekit run <folder>/config.yaml` runs this experiment again
    atomic_write_bytes(folder / "config.yaml", cfg.to_yaml().encode())
    from probekit.report.figures import experiment_figures

    figs = experiment_figures(df, summary, folder, formats=cfg.figures)
    _append_run_log(folder, {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
                             "seconds": round(time.time() - t_start, 2), "forward_passes": forward_passes})
    result = ExperimentResult(config=cfg, folder=folder, table=df, summary=summary, figures=figs,
                              forward_passes=forward_passes)
    if cfg.track:
        from probekit.tracking import log_experiment

        log_experiment(result)
    return result


def _append_run_log(folder: Path, entry: dict) -> None:
    """Keep a log of runs (wall time, forward passes) beside the results (not part of results.csv)."""
    from probekit._io import atomic_write_bytes

    path = folder / "run_log.json"
    try:
        runs = json.loads(path.read_bytes().decode("utf-8")) if path.is_file() else []
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        log.warning("%s is damaged; starting a new run log", path)
        runs = []
    if not isinstance(runs, list):
        runs = []
    runs.append(entry)
    atomic_write_bytes(path, json.dumps(runs, indent=1).encode())


def run_config_baselines(cfg: ExperimentConfig, data: dict, *, progress: bool = False) -> list[dict]:
    """The config's fine-tuning / lightweight-tuning baselines, as rows of the same table.

    Each finished run is kept under ``results/<experiment>/baselines/runs`` and skipped on a rerun.
    """
    from probekit.baselines.config import BaselineConfig
    from probekit.baselines.train import run_baselines

    bcfg = BaselineConfig.from_dict(cfg.baselines)
    from probekit.tasks import get_task

    word_tasks = [t for t in cfg.tasks if get_task(t).level == "word"]  # baselines tag words only
    if not word_tasks:
        return []
    return run_baselines(models=[m for m in cfg.models if not ModelName.parse(m).is_random], tasks=word_tasks, seeds=list(cfg.seeds),
                         config=bcfg, train=data["train"], dev=data["dev"], test=data["test"],
                         results_dir=Path(cfg.results_dir) / cfg.name / "baselines", device=cfg.device,
                         experiment=cfg.name, progress=progress)
