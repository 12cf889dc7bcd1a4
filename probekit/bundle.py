"""Saved probes: train linear probes on every layer once, save them to one file, apply them to new text.

A :class:`ProbeBundle` holds, for one model and one task, a trained linear probe per layer plus
everything needed to make the *same* features again on new sentences:

* the model (name, weights hash, kind, depth, width): a bundle refuses features of any other
  model (a different weights hash is a :class:`~probekit.errors.ModelError` naming both);
* the task (name, version, level, labels);
* the extraction settings (word pooling, sentence pooling, special-token prefix/suffix,
  ``prepend_bos``, ``max_length``, alignment version, the store dtype the probes were trained on).

Typical use::

    from probekit.data.datasets import load_split
    from probekit.bundle import load_probe_bundle, train_probe_bundle

    bundle = train_probe_bundle("minilm", "aux_verb", train=load_split("ud_ewt", "train", limit=2000),
                                dev=load_split("ud_ewt", "dev", limit=300))
    bundle.save("minilm-aux_verb.probe")
    df = load_probe_bundle("minilm-aux_verb.probe").predict(["I have eaten.", "I have a dog."], layers="best")

**File format** (``.probe``): a NumPy ``.npz`` archive (a zip) with one ``__meta__`` entry (UTF-8
JSON as ``uint8``; ``format`` = ``probekit-probe``, ``format_version``, model/task/extraction
metadata, a sha256 of the arrays) and four float32 arrays per layer: ``L{layer}.coef``
``[d_model, n_classes]`` (in standardised feature space), ``L{layer}.intercept`` ``[n_classes]``,
``L{layer}.mean`` and ``L{layer}.scale`` ``[d_model]``. It is written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

import probekit
from probekit._io import atomic_write_bytes
from probekit.activations.align import check_pooling
from probekit.activations.extract import Extractor, corpus_checksum, extract
from probekit.activations.models import load_model
from probekit.data.annotate import to_sentences
from probekit.data.conllu_io import Sentence
from probekit.errors import ConfigError, DataError, ModelError, TaskError, unknown_name
from probekit.probing.features import labelled
from probekit.probing.linear import DEFAULT_CS, LayerFit, fit_from_stores
from probekit.tasks import get_task

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from probekit.activations.models import LoadedModel
    from probekit.tasks.base import Task

log = logging.getLogger(__name__)

FORMAT = "probekit-probe"
FORMAT_VERSION = 1
#: Extraction settings that must be equal at training and prediction time.
_SETTINGS_CHECKED = ("prefix", "suffix", "prepend_bos", "max_length", "align_version", "word_pooling")


# ----------------------------------------------------------------------------------------------- bundle

@dataclass
class ProbeBundle:
    """Linear probes for every requested layer of one model on one task, with their provenance.

    Attributes:
        model_name: what :func:`probekit.activations.models.load_model` loads (alias, folder, .gguf, hub id).
        weights_hash: the model's :attr:`~probekit.activations.models.LoadedModel.weights_hash`.
        model_kind: ``encoder`` or ``decoder``.
        num_layers, hidden_size: blocks (hidden states are layers ``0..num_layers``) and ``d_model``.
        task, task_version, level, labels: the task (``labels[i]`` is class ``i``).
        word_pooling: ``first`` / ``last`` / ``mean`` over a word's subwords.
        sentence_pooling: ``cls`` / ``mean`` / ``last`` for sentence-level tasks, else None.
        extraction: the extractor settings (prefix, suffix, prepend_bos, max_length, align_version,
            word_pooling) and ``dtype``, the store dtype the probes were trained on.
        fits: layer -> :class:`~probekit.probing.linear.LayerFit`.
        info: free provenance (training sizes, data checksum, dev accuracy, time, probekit version).
    """

    model_name: str
    weights_hash: str
    model_kind: str
    num_layers: int
    hidden_size: int
    task: str
    task_version: int
    level: str
    labels: list[str]
    word_pooling: str
    extraction: dict
    fits: dict[int, "LayerFit"]
    sentence_pooling: str | None = None
    info: dict = field(default_factory=dict)
    #: the model folder's config + tokenizer hash (:func:`probekit.activations.models.files_hash`); None for hub models and
    #: bundles saved before it was recorded
    files_hash: str | None = None

    # ------------------------------------------------------------------ metadata
    @property
    def layers(self) -> list[int]:
        """The layers that have a probe (0 = embedding output)."""
        return sorted(self.fits)

    @property
    def best_layer(self) -> int:
        """The layer with the best dev accuracy (ties -> the lower layer); the last layer without dev data."""
        scored = [(f.dev_accuracy, -layer) for layer, f in self.fits.items() if f.dev_accuracy is not None]
        if not scored:
            return self.layers[-1]
        return -max(scored)[1]

    def dev_accuracy(self) -> dict[int, float | None]:
        """layer -> dev accuracy measured at training time (None without dev data)."""
        return {layer: self.fits[layer].dev_accuracy for layer in self.layers}

    def __repr__(self) -> str:
        layers = self.layers
        span = f"{layers[0]}..{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else str(layers)
        return (f"ProbeBundle(model={self.model_name!r} ({self.model_kind}, weights {self.weights_hash[:12]}), "
                f"task={self.task!r} v{self.task_version} {self.labels}, layers={span}, "
                f"pooling={self.sentence_pooling or self.word_pooling}, best_layer={self.best_layer})")

    # ------------------------------------------------------------------ I/O
    def _meta(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                "model": {"name": self.model_name, "weights_hash": self.weights_hash, "kind": self.model_kind,
                          "num_layers": self.num_layers, "hidden_size": self.hidden_size,
                          "files_hash": self.files_hash},
                "task": {"name": self.task, "version": self.task_version, "level": self.level,
                         "labels": list(self.labels)},
                "word_pooling": self.word_pooling, "sentence_pooling": self.sentence_pooling,
                "extraction": self.extraction,
                "layers": {str(layer): {"C": f.C, "iterations": f.iterations, "dev_accuracy": f.dev_accuracy}
                           for layer, f in sorted(self.fits.items())},
                "info": self.info}

    def save(self, path: str | Path) -> Path:
        """Write the bundle to one file (atomically; ``.probe`` is the customary suffix). Returns the path."""
        arrays = _arrays_of(self.fits)
        meta = self._meta()
        meta["arrays_sha256"] = _arrays_digest(arrays)
        buf = io.BytesIO()
        np.savez_compressed(buf, __meta__=np.frombuffer(json.dumps(meta, default=_json_default).encode(), np.uint8),
                            **arrays)
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        log.info("Saved %r to %s (%.1f KiB)", self, path, len(buf.getvalue()) / 1024)
        return path

    # ------------------------------------------------------------------ prediction
    def predict(self, sentences: "str | Sentence | Iterable[str | Sentence]", *,
                layers: "Sequence[int] | int | str | None" = None, device: str | None = None,
                model: "LoadedModel | None" = None, tokenize: str = "spacy", spacy_model=None,
                batch_sentences: int = 256) -> "pd.DataFrame":
        """Label new sentences with the saved probes.

        Args:
            sentences: raw strings (one sentence each), :class:`~probekit.data.Sentence` records, or a
                mix; a single string is one sentence. Strings are cut into words with spaCy
                (``tokenize="spacy"``, UD-like words: "don't" -> "do" + "n't") or on whitespace
                (``tokenize="whitespace"``).
            layers: layers to report: None = every layer of the bundle, ``"best"`` = the best dev
                layer, an int or a list of ints.
            device: where to run the model when it is loaded here (default CUDA when available).
            model: an already loaded model; it must be the one the probes were trained on.
            spacy_model: spaCy pipeline for ``tokenize="spacy"`` (default: see
                :func:`probekit.data.annotate.load_spacy`).
            batch_sentences: sentences encoded per forward group (bounds memory).

        Returns:
            A DataFrame, one row per sentence x word x layer (word tasks) or sentence x layer
            (sentence tasks), sorted in that order, with columns ``sentence`` (index in the input),
            ``word_index`` and ``word`` (word tasks) or ``text`` (sentence tasks), ``layer``,
            ``predicted`` (label), ``probability`` (of the predicted label) and ``p_<label>`` for
            every label.

        Raises:
            ModelError: ``model`` (or the model loaded by name) has other weights than the
                bundle's, or its tokenizer now produces other special tokens.
            ConfigError: a requested layer has no probe; unknown ``tokenize``.
            DataError: an empty sentence.
        """
        import pandas as pd

        if isinstance(batch_sentences, bool) or not isinstance(batch_sentences, int) or batch_sentences < 1:
            raise ConfigError(f"batch_sentences must be a positive integer, got {batch_sentences!r}.")
        chosen = self._select_layers(layers)
        sents = to_sentences(sentences, tokenize=tokenize, spacy_model=spacy_model)
        lm = model if model is not None else self._load_model(device)
        self.check_model(lm)
        ex = self._extractor(lm)
        feats = []  # per chunk: [len(chosen), item, d_model]
        for i in range(0, len(sents), batch_sentences):
            words, sent_vecs = ex.encode_shard(sents[i:i + batch_sentences])
            X = words if self.level == "word" else sent_vecs[self.sentence_pooling]
            feats.append(self._as_trained(X[chosen]))
        X = np.concatenate(feats, axis=1)  # [len(chosen), item, d_model]
        n_items = X.shape[1]
        # [L, item, n_classes]
        probs = np.stack([self.fits[layer].predict_proba(X[k]) for k, layer in enumerate(chosen)])
        # rows ordered item-major, layer-minor
        P = probs.transpose(1, 0, 2).reshape(-1, len(self.labels))
        pred = P.argmax(1)
        cols: dict[str, object] = {}
        if self.level == "word":
            sent_idx = np.concatenate([np.full(len(s), i) for i, s in enumerate(sents)])
            word_idx = np.concatenate([np.arange(len(s)) for s in sents])
            words_arr = np.array([w for s in sents for w in s.words], dtype=object)
            cols["sentence"] = np.repeat(sent_idx, len(chosen))
            cols["word_index"] = np.repeat(word_idx, len(chosen))
            cols["word"] = np.repeat(words_arr, len(chosen))
        else:
            cols["sentence"] = np.repeat(np.arange(n_items), len(chosen))
            cols["text"] = np.repeat(np.array([s.text for s in sents], dtype=object), len(chosen))
        cols["layer"] = np.tile(np.asarray(chosen, dtype=np.int64), n_items)
        cols["predicted"] = np.asarray(self.labels, dtype=object)[pred]
        cols["probability"] = P[np.arange(len(P)), pred]
        for c, lab in enumerate(self.labels):
            cols[f"p_{lab}"] = P[:, c]
        return pd.DataFrame(cols)

    def check_model(self, lm: "LoadedModel") -> None:
        """Raise :class:`ModelError` unless ``lm`` has the weights the probes were trained on."""
        if lm.weights_hash != self.weights_hash:
            raise ModelError(
                f"This probe was trained on features of {self.model_name!r} (weights {self.weights_hash[:16]}, "
                f"{self.model_kind}, {self.num_layers} layers x {self.hidden_size}), but the model given is "
                f"{lm.name!r} (weights {lm.weights_hash[:16]}, {lm.kind}, {lm.num_layers} layers x {lm.hidden_size}). "
                "A probe only reads the feature space it was trained on: use the same model, or train a new probe "
                "with probekit.bundle.train_probe_bundle.")
        if self.files_hash and lm.files_hash and lm.files_hash != self.files_hash:
            raise ModelError(
                f"{lm.name!r} has the weights this probe was trained on, but other config or tokenizer files "
                f"(hash {lm.files_hash[:16]}, trained with {self.files_hash[:16]}): its hidden states differ. Use the "
                "model folder the probe was trained with, or retrain the probe.")

    def _load_model(self, device: str | None) -> "LoadedModel":
        try:
            return load_model(self.model_name, device=device)
        except ModelError as e:
            raise ModelError(f"{e} (The probe was trained on {self.model_name!r}, weights "
                             f"{self.weights_hash[:16]}; if the model now lives elsewhere, load it and pass "
                             "model=load_model(<its path>).)") from None

    def _extractor(self, lm: "LoadedModel"):
        ex = Extractor(lm, word_pooling=self.word_pooling, prepend_bos=self.extraction.get("prepend_bos"),
                       max_length=self.extraction.get("max_length"))
        now = ex.settings()
        diff = [k for k in _SETTINGS_CHECKED if k in self.extraction and _norm(now.get(k)) != _norm(self.extraction[k])]
        if diff:
            detail = "; ".join(f"{k}: trained {self.extraction[k]!r}, now {now.get(k)!r}" for k in diff)
            raise ModelError(f"{lm.name!r} would be read with other extraction settings than the probe was trained "
                             f"with ({detail}). The tokenizer or probekit's alignment changed; retrain the probe.")
        if self.level == "sentence" and self.sentence_pooling not in ex.sentence_poolings:
            raise ConfigError(f"Sentence pooling {self.sentence_pooling!r} is not available for {lm.name!r} "
                              f"(has {', '.join(ex.sentence_poolings)}).")
        return ex

    def _as_trained(self, X: np.ndarray) -> np.ndarray:
        """Round features through the store dtype the probes were trained on (float16 by default)."""
        dtype = self.extraction.get("dtype", "float32")
        if dtype == "float32":
            return np.asarray(X, dtype=np.float32)
        return np.asarray(X, dtype=np.dtype(dtype)).astype(np.float32)

    def _select_layers(self, layers) -> list[int]:
        if layers is None:
            return self.layers
        if isinstance(layers, str):
            if layers != "best":
                raise ConfigError(f"layers={layers!r}: give None (all), 'best', an int or a list of ints.")
            return [self.best_layer]
        if isinstance(layers, (int, np.integer)):
            layers = [int(layers)]
        out = []
        for layer in layers:
            layer = int(layer)
            if layer < 0:
                layer += self.num_layers + 1
            if layer not in self.fits:
                raise ConfigError(f"Layer {layer} has no probe in this bundle; it has layers {self.layers} "
                                  f"(0 = embedding output, best dev layer {self.best_layer}).")
            out.append(layer)
        return out


def _norm(v):
    return json.loads(json.dumps(v)) if v is not None else None


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _arrays_of(fits: dict[int, "LayerFit"]) -> dict[str, np.ndarray]:
    out = {}
    for layer, f in sorted(fits.items()):
        for name in ("coef", "intercept", "mean", "scale"):
            out[f"L{layer}.{name}"] = np.ascontiguousarray(getattr(f, name), dtype=np.float32)
    return out


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = arrays[k]
        h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- loading

def load_probe_bundle(path: str | Path) -> ProbeBundle:
    """Read a bundle written by :meth:`ProbeBundle.save`.

    Raises:
        DataError: the file is missing, is not a probekit probe file (foreign), was written by a
            newer probekit, or is damaged (truncated, bytes changed, arrays missing or of the wrong shape).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Probe file not found: {path}. Make one with probekit.bundle.train_probe_bundle(...)"
                        ".save(path).")
    damaged = (f"{path} is damaged (truncated or changed after it was written); train and save the probe again.")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "__meta__" not in names:
                raise DataError(f"{path} is a NumPy archive but not a probekit probe file (no __meta__ entry).")
            meta = json.loads(z["__meta__"].tobytes().decode("utf-8"))
            arrays = {k: z[k] for k in names if k != "__meta__"}
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error) as e:
        if zipfile.is_zipfile(path):
            raise DataError(f"{damaged} ({e})") from None
        raise DataError(f"{path} is not a probekit probe file (not an .npz archive). Probe files are written by "
                        "ProbeBundle.save.") from None
    except (ValueError, OSError, EOFError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path} is not a probekit probe file (not an .npz archive). Probe files are written "
                            "by ProbeBundle.save.") from None
        raise DataError(f"{damaged} ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"{path} is not a probekit probe file (format {found!r}, expected {FORMAT!r}).")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{path} was written by a newer probekit (probe format {meta['format_version']}, this "
                        f"probekit reads up to {FORMAT_VERSION}). Upgrade probekit.")
    try:
        if meta.get("arrays_sha256") != _arrays_digest(arrays):
            raise DataError(f"{damaged} (array checksum mismatch)")
        m, t = meta["model"], meta["task"]
        d, n_classes = int(m["hidden_size"]), len(t["labels"])
        fits = {}
        for key, lm in meta["layers"].items():
            layer = int(key)
            a = {n: arrays[f"L{layer}.{n}"] for n in ("coef", "intercept", "mean", "scale")}
            shapes = {"coef": (d, n_classes), "intercept": (n_classes,), "mean": (d,), "scale": (d,)}
            for n, shape in shapes.items():
                if a[n].shape != shape:
                    raise DataError(f"{damaged} (L{layer}.{n} has shape {a[n].shape}, expected {shape})")
            fits[layer] = LayerFit(layer=layer, C=float(lm["C"]), coef=a["coef"], intercept=a["intercept"],
                                   mean=a["mean"], scale=a["scale"], iterations=int(lm.get("iterations", 0)),
                                   dev_accuracy=lm.get("dev_accuracy"))
        if not fits:
            raise DataError(f"{damaged} (no layers)")
        return ProbeBundle(model_name=m["name"], weights_hash=m["weights_hash"], model_kind=m["kind"],
                           num_layers=int(m["num_layers"]), hidden_size=d, task=t["name"],
                           task_version=int(t["version"]), level=t["level"], labels=list(t["labels"]),
                           word_pooling=meta["word_pooling"], sentence_pooling=meta.get("sentence_pooling"),
                           extraction=dict(meta["extraction"]), fits=fits, info=dict(meta.get("info") or {}),
                           files_hash=m.get("files_hash"))
    except DataError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{damaged} (metadata: {type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------------- training

def train_probe_bundle(model: "str | LoadedModel", task: "str | Task", *, train: Sequence[Sentence],
                       dev: Sequence[Sentence] | None = None, layers: Sequence[int] | None = None,
                       Cs: Sequence[float] = DEFAULT_CS, word_pooling: str | None = None,
                       sentence_pooling: str = "mean", store_root: str | Path | None = None,
                       device: str | None = None, dtype: str = "float16", seed: int = 0,
                       dataset: str = "custom", progress: bool = False) -> ProbeBundle:
    """Extract (or reuse) activation stores and fit a linear probe on every requested layer.

    Args:
        model: a model name for :func:`~probekit.activations.models.load_model` or a loaded model.
        task: a task name (see ``probekit tasks``) or :class:`~probekit.tasks.base.Task`.
        train: labelled sentences (gold CoNLL-U or spaCy silver annotation).
        dev: labelled sentences for choosing C per layer (and the best layer); without dev the
            weakest regularisation (largest C) is kept.
        layers: layers to probe (0 = embedding output; negative counts from the last); default all.
        Cs: inverse L2 strengths tried (scikit-learn units).
        word_pooling: ``first`` / ``last`` / ``mean`` (default first for encoders, last for decoders).
        sentence_pooling: ``cls`` / ``mean`` / ``last`` for sentence-level tasks (decoders have no cls).
        store_root: where the activation stores go (default ``$PROBEKIT_STORE_DIR`` or the cache);
            a store made earlier for the same model, sentences and settings is reused.
        device: model and probe device (default CUDA when available).
        dtype: store dtype (``float16`` as in experiments, so their stores are reused; or ``float32``).
        seed: probe training seed.
        dataset: a name recorded in the store manifest.

    Raises:
        TaskError: the training data has no labelled items or a single label.
        ConfigError: a layer out of range or an unknown pooling.
    """
    task = get_task(task)
    if not train:
        raise TaskError(f"Task {task.name}: no training sentences given.")
    if task.level == "sentence":
        check_pooling(sentence_pooling, sentence=True)
    lm = load_model(model, device=device) if isinstance(model, str) else model
    n_layers = lm.num_layers + 1
    if layers is None:
        chosen = list(range(n_layers))
    else:
        chosen = []
        for layer in layers:
            if not -n_layers <= int(layer) < n_layers:
                raise ConfigError(f"Layer {layer} is out of range for {lm.name!r}: valid layers are 0..{n_layers - 1} "
                                  f"(0 = embedding output), or -{n_layers}..-1 counting from the last.")
            chosen.append(int(layer) % n_layers)
        chosen = sorted(set(chosen))
    t0 = time.perf_counter()
    kw = dict(dataset=dataset, store_root=store_root, word_pooling=word_pooling, dtype=dtype, progress=progress)
    stores = {"train": extract(lm, list(train), split="train", **kw)}
    if dev:
        stores["dev"] = extract(lm, list(dev), split="dev", **kw)
    extract_s = time.perf_counter() - t0
    manifest = stores["train"].manifest
    if task.level == "sentence" and sentence_pooling not in stores["train"].sentence_poolings:
        raise unknown_name("sentence pooling", sentence_pooling, stores["train"].sentence_poolings,
                           hint=f"({lm.name!r} is a {lm.kind}; decoders have no cls vector)")
    items = {"train": labelled(task, train)}
    if dev:
        items["dev"] = labelled(task, dev)
    y = {r: it.y for r, it in items.items()}
    if len(y["train"]) == 0:
        raise TaskError(f"Task {task.name}: the {len(train)} training sentences have no labelled items.")
    present = np.unique(y["train"])
    if len(present) < 2:
        raise TaskError(f"Task {task.name}: the training data has a single label ({task.labels[present[0]]!r}); "
                        "a probe cannot learn anything. Use more or other training sentences.")
    if dev and len(y["dev"]) == 0:
        raise TaskError(f"Task {task.name}: the {len(dev)} dev sentences have no labelled items; give other dev data "
                        "or none.")
    pooling = sentence_pooling if task.level == "sentence" else None
    fits: dict[int, LayerFit] = {}
    t1 = time.perf_counter()
    for _, out in fit_from_stores(stores, items, chosen, level=task.level, pooling=pooling,
                                  n_classes=len(task.labels), Cs=Cs, device=device, seed=seed):
        fits.update({f.layer: f for f in out})
    fit_s = time.perf_counter() - t1
    extraction = {k: manifest["extraction"].get(k) for k in ("prefix", "suffix", "prepend_bos", "max_length",
                                                               "align_version")}
    extraction.update(word_pooling=manifest["word_pooling"], dtype=manifest["dtype"])
    info = {"probekit_version": probekit.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "train_sentences": len(train), "train_items": int(len(y["train"])),
            "dev_sentences": len(dev) if dev else 0, "dev_items": int(len(y["dev"])) if dev else 0,
            "train_checksum": corpus_checksum(train), "Cs": [float(c) for c in Cs], "seed": seed,
            "label_counts": {task.labels[i]: int(n) for i, n in enumerate(np.bincount(y["train"],
                                                                                       minlength=len(task.labels)))},
            "extract_seconds": round(extract_s, 2), "fit_seconds": round(fit_s, 2)}
    bundle = ProbeBundle(model_name=lm.name, weights_hash=lm.weights_hash, model_kind=lm.kind,
                         num_layers=lm.num_layers, hidden_size=lm.hidden_size, task=task.name,
                         task_version=task.version, level=task.level, labels=list(task.labels),
                         word_pooling=manifest["word_pooling"], sentence_pooling=pooling, extraction=extraction,
                         fits=fits, info=info, files_hash=lm.files_hash)
    log.info("Trained %r (extract %.1fs, fit %.1fs)", bundle, extract_s, fit_s)
    return bundle
