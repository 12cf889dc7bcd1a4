"""The experiment's data and activation stores: the splits a config names (sampled and limited as it says), the
fingerprint that identifies them in every key, the models it probes, and their stores.

:func:`probekit.runner.experiment.run_experiment`, the sweep workers and the erasure study all read their data and
stores through these functions, so they share stores and keys.
"""
from __future__ import annotations

from pathlib import Path

from probekit._io import cache_root, sha256_file
from probekit.activations.budget import check_disk, describe_stores, extraction_bytes
from probekit.activations.extract import default_store_root, extract_sites
from probekit.activations.models import ModelName, load_model
from probekit.activations.sites import check_sites
from probekit.config import ExperimentConfig
from probekit.data.conllu_io import read_conllu
from probekit.data.datasets import locate
from probekit.data.own_data import FORMATS, HF_PREFIX, Columns, load_own
from probekit.data.sampling import sample_sentences
from probekit.errors import DataError

ROLES = ("train", "dev", "test")
#: Seed of the `train_sentences` sample (recorded with the sample in the data fingerprint).
TRAIN_SAMPLE_SEED = 0


def load_data(cfg: ExperimentConfig) -> tuple[dict, dict]:
    """Sentences per split role and a fingerprint of the data: ({role: [Sentence]}, {role: {...}})."""

    data, fp = {}, {}
    # own data (jsonl, csv, hf:) is identified by its sentences and labels as read: the columns setting is part of it
    columns = Columns.from_mapping(cfg.columns, "Config 'columns'")
    for role in ("train", "dev", "test"):
        limit = (cfg.limit or {}).get(role)
        split = cfg.splits.get(role, role)
        if cfg.dataset.startswith(HF_PREFIX):
            sents, digest = load_own(cfg.dataset, None, split=split, columns=columns, limit=limit)
            source = f"{cfg.dataset}[{split}]"
        elif cfg.dataset in FORMATS:
            source = _given_file(cfg, role)
            sents, digest = load_own(cfg.dataset, source, columns=columns, limit=limit)
        else:
            path = Path(_given_file(cfg, role)) if cfg.dataset == "conllu" else locate(cfg.dataset, split,
                                                                                       data_dir=cfg.data_dir)
            sents = read_conllu(path, cache_dir=cache_root(), limit=limit, strict=cfg.strict)
            source, digest = str(path), sha256_file(path)
        if not sents:
            raise DataError(f"{source}: the {role} split is empty (limit={limit}). Give a file with sentences.")
        sampled = sample_sentences(sents, cfg.train_sentences if role == "train" else None, TRAIN_SAMPLE_SEED)
        sample = cfg.train_sentences if len(sampled) < len(sents) else None
        sents = sampled
        data[role] = sents
        fp[role] = {"file": source, "sha256": digest, "limit": limit, "n_sentences": len(sents),
                    "n_words": sum(len(s) for s in sents)}
        if sample:  # only when set, so that the keys of unsampled data (stores, units) stay as they were
            fp[role]["sample"] = {"sentences": sample, "seed": TRAIN_SAMPLE_SEED}
    return data, fp


def _given_file(cfg: ExperimentConfig, role: str) -> str:
    if role not in cfg.files:
        raise DataError(f"Dataset {cfg.dataset!r} needs files.{role}: the path of the {role} file.")
    return cfg.files[role]


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



def load_config_model(cfg: ExperimentConfig, name: str):
    """The model ``name`` loaded as the config says (device, weights dtype, device_map, quantization)."""
    return load_model(name, device=cfg.device, dtype=cfg.weights_dtype, device_map=cfg.device_map,
                      quantization=cfg.quantization)


def extract_site_stores(cfg: ExperimentConfig, lm, data: dict, data_fp: dict, *, sites=None,
                        progress: bool = True) -> dict:
    """Write (or reuse) the model's train/dev/test stores of every site the config names (``sites`` overrides
    it): ``{site: {role: ActivationStore}}``, each split's sites read in one forward pass.

    First the disk guard (:func:`probekit.activations.budget.check_disk`): what will be written, GB per split, and
    a refusal when the disk has no room. ``probekit run`` and the sweep workers both call this, so they share
    stores.
    """
    sites = check_sites(sites or cfg.sites)
    kw = {role: dict(dataset=cfg.dataset, split=cfg.splits.get(role, role), data_checksum=data_checksum(data_fp[role]),
                     store_root=cfg.store_dir) for role in ROLES}
    common = dict(sites=sites, layers=cfg.layers, dtype=cfg.dtype, word_pooling=cfg.word_pooling,
                  precision=cfg.precision)
    per_split = {kw[role]["split"]: extraction_bytes(lm, data[role], **common, **kw[role]) for role in ROLES}
    check_disk(per_split, cfg.store_dir or default_store_root(),
               describe=describe_stores(lm, sites, cfg.layers, cfg.dtype))
    out: dict = {s: {} for s in sites}
    for role in ROLES:
        got = extract_sites(lm, data[role], **common, **kw[role], batch_tokens=cfg.batch_tokens, strict=cfg.strict,
                            progress=progress)
        for site, store in got.items():
            out[site][role] = store
    return out


def model_info(name: str, lm) -> dict:
    """The model columns of a study's result rows."""
    return {"model": name, "model_kind": lm.kind, "model_hash": lm.weights_hash[:16]}


def study_model(cfg: ExperimentConfig, m: str, data: dict, data_fp: dict, *, progress: bool = True,
                site: str | None = "resid_post"):
    """What a study section needs of model ``m`` once it has work to do: ``(lm, stores, info)``, the model loaded as
    the config says (:func:`load_config_model`), its stores of ``site`` (default the block outputs; None: no stores,
    for a study that runs the model but reads no vectors) for the config's data and ``info``, the model columns of
    its result rows."""
    lm = load_config_model(cfg, m)
    stores = None if site is None else extract_site_stores(cfg, lm, data, data_fp, sites=[site],
                                                           progress=progress)[site]
    return lm, stores, model_info(m, lm)


def study_loader(cfg: ExperimentConfig, data: dict, data_fp: dict, *, progress: bool = True):
    """The ``load(model, site="resid_post") -> (lm, stores, info)`` of a study runner called on its own
    (:func:`study_model` at each call); ``probekit run`` and the sweep pass :meth:`RunModels.study` instead, which
    loads each model once."""
    def load(m: str, site: str | None = "resid_post"):
        return study_model(cfg, m, data, data_fp, progress=progress, site=site)
    return load


class RunModels:
    """The models of one run (``probekit run``, a sweep cell), each loaded at most once and only when a piece of
    work asks for it: the probes (:meth:`model`, :meth:`site_stores`) and every study section (:meth:`study`, the
    ``load`` of the study runners) share one loaded model and its stores. A run whose units are all finished asks
    for nothing and so loads nothing.

    Loaded models are held until :meth:`release`: the experiment runner works model by model and releases each one
    before the next is loaded, so at most one model is in memory.
    """

    def __init__(self, cfg: ExperimentConfig, data: dict, data_fp: dict, *, progress: bool = True):
        self.cfg, self.data, self.data_fp, self.progress = cfg, data, data_fp, progress
        self._models: dict = {}
        self._stores: dict = {}  # (model, site) -> {role: ActivationStore}

    def model(self, name: str):
        """The model ``name`` loaded as the config says (:func:`load_config_model`), once."""
        if name not in self._models:
            self._models[name] = load_config_model(self.cfg, name)
        return self._models[name]

    def site_stores(self, name: str, sites=None) -> dict:
        """:func:`extract_site_stores` of the model for ``sites`` (default: the config's); a site extracted (or
        found finished) once in this run is not checked again."""
        sites = check_sites(sites or self.cfg.sites)
        missing = [s for s in sites if (name, s) not in self._stores]
        if missing:
            got = extract_site_stores(self.cfg, self.model(name), self.data, self.data_fp, sites=missing,
                                      progress=self.progress)
            self._stores.update({(name, s): stores for s, stores in got.items()})
        return {s: self._stores[(name, s)] for s in sites}

    def study(self, name: str, site: str | None = "resid_post"):
        """What a study section needs of the model (as :func:`study_model`): ``(lm, stores of site, info)``; site
        None: no stores."""
        stores = None if site is None else self.site_stores(name, [site])[site]
        return self.model(name), stores, model_info(name, self.model(name))

    def release(self, name: str) -> None:
        """Forget the model ``name`` and its stores (its memory is freed once no caller holds it)."""
        self._models.pop(name, None)
        for key in [k for k in self._stores if k[0] == name]:
            del self._stores[key]
