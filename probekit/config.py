"""Experiment configuration: a dataclass with help text, read from YAML, overridden from the CLI.

Settings are resolved in one place (:func:`resolve_config`): CLI overrides > YAML file > defaults.
Unknown keys are errors with a "did you mean" suggestion, never silently ignored.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from probekit._io import check_name
from probekit.activations.align import SENTENCE_POOLINGS, check_pooling
from probekit.activations.models import WEIGHT_DTYPES
from probekit.activations.placement import QUANTIZATIONS
from probekit.activations.precision import PRECISIONS
from probekit.activations.sites import check_sites
from probekit.activations.store import DTYPES
from probekit.data.datasets import DATASETS, dataset_name
from probekit.data.own_data import FORMATS, HF_PREFIX, Columns
from probekit.errors import ConfigError, TaskError, did_you_mean, unknown_name
from probekit.probing.registry import get_probe
from probekit.tasks import Task, get_task
from probekit.tasks.base import RELATION_LEVELS
from probekit.tracking import check_trackers

_TYPE_NAMES = {"list": list, "dict": dict, "str": str, "bool": bool, "int": int, "float": float, "None": type(None)}
#: list fields and what their items must be
_LIST_ITEMS = {"models": (str, "model names"), "tasks": ((str, Task), "task names, 'module:function' or Task objects"), "probes": (str, "probe names"),
               "seeds": (int, "integers"), "layers": (int, "layer numbers"), "sites": (str, "site names"),
               "sentence_poolings": (str, "pooling names"), "Cs": ((int, float), "positive numbers"),
               "figures": (str, "formats"), "track": (str, "tracker names")}
SPLIT_NAMES = ("train", "dev", "test")
#: Keys of the ``mlp`` setting: MLPProbe's keyword arguments but those the experiment sets itself (hidden_layers
#: from the probe name, seed, device); tests/test_errors.py keeps the two in step.
MLP_SETTINGS = ("hidden_size", "dropout", "weight_decay", "lr", "batch_size", "max_epochs", "patience", "tol",
                "standardize")


def _help(default, text: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


@dataclass
class ExperimentConfig:
    """One probing experiment: models × tasks × probes × seeds on one dataset."""

    name: str = _help("experiment", "Experiment name; results go to <results_dir>/<name>/.")
    models: list = _help(["minilm"], "Model aliases, local folders, .gguf files or HF ids (NAME@random[:SEED] "
                                     "for a random-weights model).")
    dataset: str = _help("ud_ewt", "ud_ewt, ud_pud, a UD treebank by name (ud:de_gsd or UD_German-GSD); 'conllu', "
                                   "'jsonl' or 'csv' with files: {train: PATH, dev: PATH, test: PATH}; or hf:NAME_OR_PATH "
                                   "(a Hugging Face dataset; its split names in splits). See docs/data.md.")
    data_dir: str | None = _help(None, "Folder holding the treebanks (else $PROBEKIT_DATA_DIR, the cache, download).")
    splits: dict = _help({"train": "train", "dev": "dev", "test": "test"},
                         "Which dataset split plays train / dev / test (ud_pud has only test).")
    files: dict = _help({}, "For dataset conllu, jsonl or csv: paths of the train/dev/test files.")
    columns: dict = _help({}, "For dataset jsonl, csv or hf:...: which columns hold tokens, id, text and the word and "
                              "sentence labels, e.g. {tokens: words, word: [ner]} (docs/data.md); empty = defaults.")
    limit: dict = _help({}, "Maximum number of sentences per split, e.g. {train: 2000}; empty = all.")
    tasks: list = _help(["aux_verb", "subject", "syntactic_role", "upos"], "Task names (see `probekit tasks`), "
                        "'module:function' of a Python task, or (in Python) Task objects.")
    probes: list = _help(["linear"], "Probe families (probekit.probing.registry): linear, mlp1, mlp2 and any registered.")
    seeds: list = _help([0], "Seeds; the table reports the mean and a 95% CI over them.")
    layers: list | None = _help(None, "Layers to store and probe (0 = embedding output); default all. When set, "
                                      "only these layers are extracted (part of the store key).")
    sites: list = _help(["resid_post"], "Where in each block vectors are read, all in one forward pass: resid_post "
                                        "(block outputs), resid_mid, attn_out, mlp_out, heads (see "
                                        "docs/large_models.md); each site is stored and probed.")
    word_pooling: str | None = _help(None, "first / last / mean over a word's subwords (default: first for "
                                           "encoders, last for decoders).")
    sentence_poolings: list = _help(["cls", "mean", "last"], "Sentence vectors probed for sentence-level tasks.")
    Cs: list = _help([0.01, 0.1, 1.0], "Inverse L2 strengths tried for linear probes; chosen per layer on dev.")
    control_tasks: bool = _help(True, "Also train every probe on a control task (Hewitt & Liang 2019) and report "
                                      "selectivity.")
    mdl: bool = _help(True, "Report MDL online codelength per layer (Voita & Titov 2020), first seed only.")
    max_train_items: int | None = _help(None, "Probes train on a seeded random sample of at most this many labelled "
                                              "train items (words or sentences); null = all. Extraction and "
                                              "evaluation always use the whole splits.")
    train_sentences: int | None = _help(None, "Use a fixed random sample (seed 0) of this many train sentences: "
                                              "only they are extracted and probed, which cuts the cost of a study "
                                              "that trains on part of train; null = all. (baselines.train_sentences "
                                              "draws with the same rule, seeded per run.)")
    mdl_max_examples: int | None = _help(10000, "MDL uses at most this many training items (seeded sample); "
                                                "null = all.")
    random_baseline: bool = _help(True, "Also probe each model with re-initialised weights (NAME@random).")
    mlp: dict = _help({}, "MLP probe settings: hidden_size, dropout, weight_decay, lr, max_epochs, patience, "
                          "batch_size, tol, standardize.")
    dtype: str = _help("float16", "On-disk dtype of the activation store (float16, bfloat16 or float32).")
    precision: str = _help("auto", "Extraction precision: auto, fp32, bf16 or fp16 (autocast). auto = fp32 "
                                   "on every device (see the README's speed section); the precision that runs is "
                                   "part of the store key.")
    weights_dtype: str = _help("float32", "dtype the model weights are loaded in: float32, bfloat16 or float16 "
                                          "(GGUF files are de-quantised to it); not float32 is part of the keys.")
    batch_tokens: int | None = _help(None, "Token budget of one forward batch (default 4096 on CPU, 16384 on GPU).")
    device: str | None = _help(None, "cpu, cuda, cuda:1 ... (default: CUDA when available).")
    device_map: str | None = _help(None, "auto: spread the model's layers over every visible GPU (accelerate); "
                                         "CUDA only. null = the whole model on 'device'.")
    quantization: str | None = _help(None, "8bit or 4bit: load the weights quantised with bitsandbytes (CUDA only; "
                                           "part of the keys). null = weights_dtype.")
    store_dir: str | None = _help(None, "Where activation stores live (default $PROBEKIT_STORE_DIR or the cache).")
    results_dir: str = _help("results", "Folder holding one sub-folder per experiment.")
    strict: bool = _help(False, "Stop on a damaged or foreign store file, parse-cache entry or result unit "
                         "instead of recomputing it.")
    baselines: dict | None = _help(None, "Fine-tuning / lightweight-tuning baselines (see docs/baselines.md).")
    erasure: dict | None = _help(None, "Concept-erasure study: erasers per layer and task, the probes retrained on "
                                 "the erased features and the effect of erasing on the model (see docs/erasure.md).")
    structural: dict | None = _help(None, "Structural probes (Hewitt & Manning 2019): kinds, ranks, epochs, control, "
                                          "bootstrap (see docs/structural.md); run by probekit run.")
    scalar_mix: dict | None = _help(None, "Tenney et al.'s scalar mix and cumulative scoring (expected layer, centre "
                                          "of gravity): tasks, metric, lr, epochs, bootstrap (see docs/scalar_mix.md)"
                                          "; run by probekit run.")
    neurons: dict | None = _help(None, "Neuron-level analysis (NeuroX, Dalvi et al. 2019): elastic-net probe, neuron "
                                       "ranking, top/random/bottom-k accuracy and ablation (see docs/neurons.md); run "
                                       "by probekit run.")
    relations: dict | None = _help(None, "Pair and span probes (dep_arc, dep_label, subject_of, subject_span): "
                                         "tasks, span poolings, training settings (see docs/relations.md); run by "
                                         "probekit run.")
    head_probes: dict | None = _help(None, "Per-head probes: each attention head's slice of the heads site probed "
                                           "alone, by layer x head, with a heatmap: tasks (default the experiment's) "
                                           "(see docs/large_models.md); run by probekit run.")
    figures: list = _help(["pdf", "png"], "Figure formats (pdf, png, svg).")
    track: list = _help([], "Experiment trackers to log the finished run to: mlflow, tensorboard, wandb (extra "
                            "[track]; see probekit/tracking.py for where each writes).")

    def __post_init__(self) -> None:
        self._check_types()
        check_name(self.name, "Config 'name' (the experiment's folder under results_dir)")
        for role, split in self.splits.items():
            check_name(split, f"Config 'splits.{role}' (part of the store's folder name)")
        if not self.models:
            raise ConfigError("Config 'models' is empty: name at least one model (e.g. minilm).")
        if not self.tasks:
            raise ConfigError("Config 'tasks' is empty: name at least one task (see `probekit tasks`).")
        for p in self.probes:
            get_probe(p)  # an unknown name: ConfigError with the closest registered names
        for k in self.splits:
            if k not in SPLIT_NAMES:
                raise unknown_name("split role", k, SPLIT_NAMES)
        for k in self.limit:
            if k not in SPLIT_NAMES:
                raise unknown_name("split role in 'limit'", k, SPLIT_NAMES)
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise ConfigError(f"Config 'seeds' must be a non-empty list of integers, got {self.seeds!r}.")
        for key in ("models", "tasks", "probes", "seeds", "layers", "sentence_poolings", "sites"):
            v = [t.name if isinstance(t, Task) else t for t in getattr(self, key) or []]
            dup = sorted({str(x) for x in v if v.count(x) > 1})
            if dup:
                raise ConfigError(f"Config {key!r} lists {', '.join(dup)} more than once: {v!r}. Give each once "
                                  "(a repeated seed would count as two seeds in the confidence interval).")
        if self.layers is not None and (not self.layers or any(layer < 0 for layer in self.layers)):
            raise ConfigError(f"Config 'layers' must be null (all layers) or a non-empty list of layer numbers >= 0 "
                              f"(0 = embeddings; give the last layer by its number, not -1), got {self.layers!r}.")
        for k in self.mlp:
            if k not in MLP_SETTINGS:
                raise unknown_name("MLP setting", k, MLP_SETTINGS, ConfigError, hint="(config key 'mlp')")
        own = ("conllu", *FORMATS)
        if self.dataset not in own and not self.dataset.startswith(HF_PREFIX):
            if self.dataset not in DATASETS and not self.dataset.startswith("ud:") and not self.dataset.startswith("UD_"):
                raise unknown_name("dataset", self.dataset, (*DATASETS, *own), ConfigError,
                                   hint="Or a UD treebank by name (ud:de_gsd), or hf:NAME for a Hugging Face dataset; "
                                        "your own files: dataset: conllu, jsonl or csv, with files: {train: PATH, dev: "
                                        "PATH, test: PATH} (docs/data.md).")
            self.dataset = dataset_name(self.dataset, ConfigError)
        if self.columns and (self.dataset not in FORMATS and not self.dataset.startswith(HF_PREFIX)):
            raise ConfigError(f"Config 'columns' is for dataset jsonl, csv or hf:NAME, not {self.dataset!r}; remove it.")
        Columns.from_mapping(self.columns, "Config 'columns'")
        for t in self.tasks:
            if isinstance(t, Task):
                try:
                    get_task(t)  # known by its name in this process (tables and sweep cells see only the name)
                except TaskError as e:
                    raise ConfigError(f"Config 'tasks': {e}") from None
        if self.dtype not in DTYPES:
            raise unknown_name("store dtype", self.dtype, DTYPES)
        self.sites = check_sites(self.sites)
        if self.device_map not in (None, "auto"):
            raise unknown_name("device_map", self.device_map, ("auto",), hint="(or null)")
        if self.quantization not in (None, *QUANTIZATIONS):
            raise unknown_name("quantization", self.quantization, QUANTIZATIONS, hint="(or null)")
        if self.precision not in PRECISIONS:
            raise unknown_name("precision", self.precision, PRECISIONS)
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise unknown_name("weights dtype", self.weights_dtype, WEIGHT_DTYPES)
        if self.train_sentences is not None and (isinstance(self.train_sentences, bool)
                                                 or not isinstance(self.train_sentences, int)
                                                 or self.train_sentences < 1):
            raise ConfigError(f"Config 'train_sentences' must be a positive integer or null, got "
                              f"{self.train_sentences!r}.")
        if not self.Cs or any(float(c) <= 0 for c in self.Cs):
            raise ConfigError(f"Config 'Cs' must be positive numbers, got {self.Cs!r}.")
        for f in self.figures:
            if f not in ("pdf", "png", "svg"):
                raise unknown_name("figure format", f, ("pdf", "png", "svg"))
        check_trackers(self.track)
        if self.word_pooling is not None:
            check_pooling(self.word_pooling)
        for sp in self.sentence_poolings:
            if sp not in SENTENCE_POOLINGS:
                raise unknown_name("sentence pooling", sp, SENTENCE_POOLINGS)

    def _check_types(self) -> None:
        """Every value has its field's type (from the annotation), else a ConfigError naming the key.

        A single value where a list is expected becomes a one-item list (``tasks: upos``); a path
        object where a string is expected becomes a string.
        """
        for f in fields(self):
            names = [t.strip() for t in str(f.type).split("|")]
            if not all(n in _TYPE_NAMES for n in names):
                continue  # a type this check does not know: left to the field's own validation
            allowed = tuple(_TYPE_NAMES[n] for n in names)
            v = getattr(self, f.name)
            if v is None and type(None) not in allowed and (list in allowed or dict in allowed):
                v = [] if list in allowed else {}  # `limit:` left empty in YAML
            if str in allowed and isinstance(v, os.PathLike):
                v = os.fspath(v)
            if list in allowed and isinstance(v, tuple):
                v = list(v)
            elif list in allowed and isinstance(v, (str, int, float)) and not isinstance(v, bool):
                v = [v]
            ok = (bool in allowed) if isinstance(v, bool) else (
                isinstance(v, allowed) or (float in allowed and isinstance(v, int)))
            if not ok:
                want = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
                raise ConfigError(f"Config {f.name!r} must be {want}, got {v!r} ({type(v).__name__}). "
                                  f"{f.metadata.get('help', '')}")
            setattr(self, f.name, v)
        for name, (item, what) in _LIST_ITEMS.items():
            v = getattr(self, name, None)
            if v is not None and not all(isinstance(x, item) and not isinstance(x, bool) for x in v):
                raise ConfigError(f"Config {name!r} must be a list of {what}, got {v!r}.")
        for name in ("splits", "files"):
            d = getattr(self, name)
            for k, v in d.items():
                if isinstance(v, os.PathLike):
                    d[k] = os.fspath(v)
                elif not isinstance(v, str):
                    raise ConfigError(f"Config {name!r} must map split roles to names or paths, got {d!r}.")
        for k, n in self.limit.items():
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
                raise ConfigError(f"Config 'limit' must map split roles to sentence counts >= 0 "
                                  f"(e.g. {{train: 2000}}), got {self.limit!r}.")

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> "ExperimentConfig":
        d = dict(d)
        if "model" in d:  # singular alias
            m = d.pop("model")
            d.setdefault("models", [m] if isinstance(m, str) else m)
        names = {f.name for f in fields(cls)}
        for k in d:
            if k not in names:
                raise unknown_name("config key", k, names, ConfigError, hint=f"(in {source})")

        try:
            cfg = cls(**d)
            for t in cfg.tasks:  # here, not in __post_init__: the Python API also takes Task objects of its own
                try:
                    task = get_task(t)
                except TaskError as e:
                    raise ConfigError(f"Config 'tasks': {e}") from None
                if task.level in RELATION_LEVELS:
                    raise ConfigError(f"Config 'tasks': {task.name} is a {task.level}-level task; list it under "
                                      f"'relations: {{tasks: [{task.name}]}}' (see docs/relations.md).")
            return cfg
        except ConfigError as e:
            if source in str(e):
                raise
            raise ConfigError(f"{e} (in {source})") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ExperimentConfig":
        """Read a config file, or a shipped config by name (``quickstart``: see :func:`find_config`)."""
        path = find_config(path)
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({e}).") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start}).") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: a config must be a YAML mapping of keys to values.")
        return cls.from_dict(d, source=str(path))

    def to_dict(self) -> dict:
        """The settings as plain data; a Task object given in Python is written as its name (``module:function`` and
        task files stay as written, so a config.yaml reruns them)."""
        return {f.name: [t.name if isinstance(t, Task) else t for t in self.tasks] if f.name == "tasks"
                else copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def task(self, name: str) -> Task:
        """The config's task called ``name`` (a name in a result row or sweep cell), whether the config gives it by name,
        as ``module:function`` or as a Task object; also in a process that received the config pickled."""
        for t in self.tasks:
            task = get_task(t)
            if task.name == name:
                return task
        raise TaskError(f"The config has no task named {name!r}; its tasks: {', '.join(map(str, self.tasks))}.")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)


def section_settings(cls, section: dict | None, name: str, source: str = "the config"):
    """``cls(**section)`` for the dataclass of a study's config section (``erasure:``, ``scalar_mix:``...); a key
    that is not one of its fields is a ConfigError naming it, the section and the closest field names."""
    section = dict(section or {})
    names = [f.name for f in fields(cls)]
    for k in section:
        if k not in names:
            raise unknown_name(f"{name} setting", k, names, ConfigError, hint=f"(in {source}, section '{name}')")
    return cls(**section)


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with probekit, by name: the repository's ``configs/`` in a clone, the package's
    ``probekit/configs/`` in an installed wheel."""
    here = Path(__file__).resolve().parent
    for folder in (here.parent / "configs", here / "configs"):
        if folder.is_dir():
            return {p.stem: p for p in sorted(folder.glob("*.yaml"))}
    return {}


def find_config(path: str | os.PathLike) -> Path:
    """``path`` when it is a file, else the shipped config of that name (``quickstart`` or ``quickstart.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_configs()
    if len(p.parts) == 1 and p.suffix in ("", ".yaml") and p.stem in shipped:
        return shipped[p.stem]
    raise ConfigError(f"Config file not found: {p}. Give a path to a YAML config or the name of a shipped config "
                      f"({', '.join(shipped) or 'none found'}).{did_you_mean(p.stem, shipped)}")


def help_table() -> list[tuple[str, str, str]]:
    return [(f.name, repr(f.default if f.default is not dataclasses.MISSING else f.default_factory()),
             f.metadata.get("help", "")) for f in fields(ExperimentConfig)]


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML (``seeds=[0,1]``, ``limit={train: 100}``)."""
    if "=" not in item:
        raise ConfigError(f"Override {item!r} must look like key=value (e.g. seeds=[0,1,2]).")
    k, v = item.split("=", 1)
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError as e:
        raise ConfigError(f"Override {item!r}: value is not valid YAML ({e}).") from None


#: config keys whose value is a mapping: ``--set KEY.SUB=VALUE`` sets one entry, ``--set KEY={...}`` merges
#: The optional studies beside the per-layer probes: config sections that `probekit run` runs after the probes.
STUDY_SECTIONS = ("erasure", "structural", "scalar_mix", "neurons", "relations", "head_probes")
MAPPING_KEYS = ("splits", "files", "columns", "limit", "mlp", "baselines", *STUDY_SECTIONS)


def apply_overrides(base: dict, overrides: dict) -> dict:
    """``base`` with the ``--set`` overrides applied in order; returns a new dict.

    ``limit.train=50`` sets one entry of a mapping key (``baselines.lr=1e-4``: any depth). A mapping given to a
    mapping key is merged into the file's mapping, entry by entry, so ``limit={train: 50}`` keeps the file's dev and
    test limits; ``KEY=null`` resets the key to its default (``limit=null``: no limits).
    """
    names = {f.name for f in fields(ExperimentConfig)}
    out = dict(base)
    for key, value in overrides.items():
        top, *path = key.split(".")
        if top not in names:
            raise unknown_name("config key", top, names, ConfigError, hint="(in --set)")
        if path and top not in MAPPING_KEYS:
            raise ConfigError(f"--set {key}=...: {top!r} is not a mapping, so it has no entry {'.'.join(path)!r}; "
                              f"dotted keys work for {', '.join(MAPPING_KEYS)}.")
        if not path:
            if top in MAPPING_KEYS and isinstance(value, dict) and isinstance(out.get(top), dict):
                out[top] = _merged(out[top], value)
            else:
                out[top] = value
            continue
        node = out[top] = _merged(out.get(top) or {}, {})
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is not None and not isinstance(child, dict):
                raise ConfigError(f"--set {key}=...: {top}.{'.'.join(path[:i + 1])} is {child!r}, not a mapping.")
            node[part] = node = dict(child or {})
        node[path[-1]] = value
    return out


def _merged(a: dict, b: dict) -> dict:
    """A copy of ``a`` with ``b``'s entries merged in (mappings in both are merged, recursively)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(path: str | Path | None = None, overrides: dict | None = None) -> ExperimentConfig:
    """CLI overrides > YAML file (or shipped config name) > defaults, merged here and nowhere else.

    Every override is applied, ``null`` included (``--set layers=null`` means all layers); an unknown override key
    is an error that says it came from the command line. See :func:`apply_overrides` for dotted keys and mappings.
    """
    base = {}
    source = "defaults"
    if path is not None:
        found = find_config(path)
        base = ExperimentConfig.from_yaml(found).to_dict()
        source = str(found)
    base = apply_overrides(base, overrides or {})
    if overrides:
        source += " with --set " + ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    return ExperimentConfig.from_dict(base, source=source)
