"""Settings of the tuning baselines: :class:`BaselineConfig` and the method registry.

A config holds global settings plus per-method overrides. Training hyper-parameters that differ
between methods (``lr``, ``epochs``, ``batch_size``, ``patience``, ``warmup_ratio``,
``weight_decay``) default to ``None`` = "use the method's default" (see :data:`METHODS`). The order
of precedence for a method is: ``per_method[method][key]`` > the global value > the method default.

In an experiment YAML everything under ``baselines:`` is passed to :meth:`BaselineConfig.from_dict`::

    baselines:
      methods: [finetune, prompt_tuning, prefix_tuning, adapter, lora]
      train_sentences: 2000
      per_method: {lora: {lr: 1.0e-3}}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from probekit.errors import ConfigError, unknown_name
from probekit.keys import content_key


@dataclass(frozen=True)
class MethodSpec:
    """A tuning method: what it trains, which library implements it, and its default hyper-parameters."""

    name: str
    description: str
    backend: str
    defaults: dict[str, Any]


#: Registered tuning methods (name -> spec). Defaults were chosen for small-data CPU runs: the
#: parameter-efficient methods need a far larger learning rate than full fine-tuning, and soft
#: prompts/prefixes the largest (Lester et al. 2021 use 0.3 with Adafactor; 1e-2 with AdamW here).
#: Flat prefixes train well at 3e-2; with the MLP reparameterisation (prefix_flat: false) use about
#: 1e-3 — at 5e-3 the MLP's prefixes grew until minilm predicted the majority class everywhere.
METHODS: dict[str, MethodSpec] = {
    "finetune": MethodSpec(
        "finetune", "every weight of the model and a linear head are trained", "transformers + torch",
        {"lr": 5e-5, "epochs": 3, "batch_size": 16, "patience": 1, "warmup_ratio": 0.1, "weight_decay": 0.01}),
    "prompt_tuning": MethodSpec(
        "prompt_tuning", "trainable soft-prompt vectors are inserted after the first special token; model frozen",
        "adapters (BERT family) / hand-written soft prompt (other models)",
        {"lr": 1e-2, "epochs": 5, "batch_size": 16, "patience": 2, "warmup_ratio": 0.1, "weight_decay": 0.0}),
    "prefix_tuning": MethodSpec(
        "prefix_tuning", "trainable key/value prefixes in every attention layer (learned directly, as in "
        "P-tuning v2; prefix_flat: false for Li & Liang's MLP reparameterisation); model frozen", "adapters",
        {"lr": 3e-2, "epochs": 5, "batch_size": 16, "patience": 2, "warmup_ratio": 0.1, "weight_decay": 0.0}),
    "adapter": MethodSpec(
        "adapter", "Houlsby bottleneck adapters after the attention and feed-forward sublayers (double_seq_bn)",
        "adapters",
        {"lr": 1e-3, "epochs": 4, "batch_size": 16, "patience": 2, "warmup_ratio": 0.1, "weight_decay": 0.0}),
    "lora": MethodSpec(
        "lora", "low-rank updates of the attention projections (default q and v)", "adapters",
        {"lr": 1e-3, "epochs": 4, "batch_size": 16, "patience": 2, "warmup_ratio": 0.1, "weight_decay": 0.0}),
}

#: Keys whose default depends on the method.
PER_METHOD_KEYS = ("lr", "epochs", "batch_size", "patience", "warmup_ratio", "weight_decay")

SELECT_METRICS = ("accuracy", "macro_f1")
WORD_POOLINGS = ("first", "last")
LORA_MATRICES = ("q", "k", "v")
NON_LINEARITIES = ("relu", "swish", "gelu", "tanh")
PROMPT_INITS = ("vocab", "random_uniform")


def check_method(name: str) -> str:
    """Return ``name`` if it is a registered method, else raise a ConfigError with "did you mean"."""
    if name not in METHODS:
        raise unknown_name("baseline method", name, METHODS)
    return name


def _h(text: str) -> dict:
    return {"help": text}


@dataclass
class BaselineConfig:
    """Settings for the fine-tuning and lightweight-tuning baselines (all validated on creation)."""

    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata=_h(
        "Methods run by run_baselines, any of: " + ", ".join(METHODS) + "."))
    train_sentences: int | None = field(default=None, metadata=_h(
        "Train on a random subset of this many training sentences (drawn with the run's seed); null = all."))
    lr: float | None = field(default=None, metadata=_h("Learning rate (AdamW); null = the method's default."))
    head_lr: float | None = field(default=None, metadata=_h(
        "Learning rate of the linear head; null = max(lr, 1e-3), so that full fine-tuning's small lr does not "
        "starve the freshly initialised head."))
    epochs: int | None = field(default=None, metadata=_h("Maximum training epochs; null = the method's default."))
    batch_size: int | None = field(default=None, metadata=_h(
        "Training batch size in sentences (batches are built from sentences of similar length); "
        "null = the method's default."))
    eval_batch_size: int = field(default=64, metadata=_h("Batch size for dev/test prediction."))
    patience: int | None = field(default=None, metadata=_h(
        "Early stopping: stop after this many epochs without a better dev score; the best epoch's weights "
        "are restored. null = the method's default; 0 = never stop early."))
    select_metric: str = field(default="macro_f1", metadata=_h(
        "Dev metric used for early stopping and model selection: " + " or ".join(SELECT_METRICS) + "."))
    warmup_ratio: float | None = field(default=None, metadata=_h(
        "Fraction of all training steps with linear learning-rate warm-up (then linear decay to 0)."))
    weight_decay: float | None = field(default=None, metadata=_h("AdamW weight decay; null = method default."))
    grad_clip: float = field(default=1.0, metadata=_h("Clip the gradient norm to this value; 0 = no clipping."))
    head_dropout: float = field(default=0.1, metadata=_h("Dropout before the linear head during training."))
    word_pooling: str | None = field(default=None, metadata=_h(
        "Which subword of a word carries its label: first or last; null = the model's default "
        "(first for encoders, last for decoders), as for the probes."))
    prepend_bos: bool | None = field(default=None, metadata=_h(
        "Put the tokenizer's BOS token first when the tokenizer does not add it; null = for decoders only."))
    max_length: int | None = field(default=None, metadata=_h(
        "Longest input in tokens (specials and soft-prompt tokens included); longer sentences are split into "
        "overlapping windows, never truncated. null = the model's maximum."))
    lora_r: int = field(default=8, metadata=_h("LoRA rank."))
    lora_alpha: float = field(default=16.0, metadata=_h("LoRA scaling numerator (update = alpha/r * B A)."))
    lora_dropout: float = field(default=0.0, metadata=_h("Dropout on the LoRA input."))
    lora_matrices: list[str] = field(default_factory=lambda: ["q", "v"], metadata=_h(
        "Attention projections given LoRA updates, any of: q, k, v."))
    adapter_reduction_factor: float = field(default=16.0, metadata=_h(
        "Bottleneck adapter reduction factor: bottleneck width = hidden size / this."))
    adapter_non_linearity: str = field(default="swish", metadata=_h(
        "Bottleneck adapter activation: " + ", ".join(NON_LINEARITIES) + "."))
    prefix_length: int = field(default=10, metadata=_h("Prefix tuning: number of prefix positions per layer."))
    prefix_bottleneck: int = field(default=512, metadata=_h(
        "Prefix tuning with prefix_flat: false: width of the reparameterisation MLP (trained, counted as "
        "trainable: about 10% of minilm)."))
    prefix_flat: bool = field(default=True, metadata=_h(
        "Prefix tuning: learn the prefixes directly (P-tuning v2; default) or, when false, through Li & Liang's "
        "reparameterisation MLP (then use lr about 1e-3)."))
    prompt_length: int = field(default=10, metadata=_h("Prompt tuning: number of soft-prompt vectors."))
    prompt_init: str = field(default="vocab", metadata=_h(
        "Prompt tuning initialisation: vocab (embeddings of random vocabulary tokens) or random_uniform "
        "(U(-0.5, 0.5), adapters' default). Applies to both backends (adapters' BERT prompt tuning and the "
        "hand-written decoder prompt)."))
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict, metadata=_h(
        "Overrides per method, e.g. {lora: {lr: 1.0e-3}}; keys are any of the fields above except methods "
        "and per_method."))

    def __post_init__(self) -> None:
        self.methods = [check_method(m) for m in _as_list(self.methods, "methods")]
        if not self.methods:
            raise ConfigError("baselines.methods is empty; list at least one of: " + ", ".join(METHODS) + ".")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"baselines.methods lists a method twice: {self.methods}.")
        _positive_int(self, "train_sentences", allow_none=True)
        _positive_int(self, "epochs", allow_none=True)
        _positive_int(self, "batch_size", allow_none=True)
        _positive_int(self, "eval_batch_size")
        _positive_int(self, "lora_r")
        _positive_int(self, "prefix_length")
        _positive_int(self, "prefix_bottleneck")
        _positive_int(self, "prompt_length")
        for name in ("lr", "head_lr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 < v < 10):
                raise ConfigError(f"baselines.{name} must be a positive number below 10, got {v!r}.")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 0):
            raise ConfigError(f"baselines.patience must be an integer >= 0 (0 = no early stopping), "
                              f"got {self.patience!r}.")
        for name, lo, hi in (("warmup_ratio", 0.0, 1.0), ("head_dropout", 0.0, 0.99), ("lora_dropout", 0.0, 0.99)):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and lo <= v <= hi):
                raise ConfigError(f"baselines.{name} must be a number in [{lo}, {hi}], got {v!r}.")
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v >= 0):
                raise ConfigError(f"baselines.{name} must be a number >= 0, got {v!r}.")
        if not (isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0):
            raise ConfigError(f"baselines.lora_alpha must be a positive number, got {self.lora_alpha!r}.")
        if not (isinstance(self.adapter_reduction_factor, (int, float)) and self.adapter_reduction_factor >= 1):
            raise ConfigError("baselines.adapter_reduction_factor must be a number >= 1 (bottleneck = hidden size / "
                              f"factor), got {self.adapter_reduction_factor!r}.")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 8):
            raise ConfigError(f"baselines.max_length must be an integer >= 8 or null, got {self.max_length!r}.")
        if self.select_metric not in SELECT_METRICS:
            raise unknown_name("select_metric", self.select_metric, SELECT_METRICS)
        if self.word_pooling is not None and self.word_pooling not in WORD_POOLINGS:
            raise unknown_name("baseline word pooling", self.word_pooling, WORD_POOLINGS)
        if self.prepend_bos is not None and not isinstance(self.prepend_bos, bool):
            raise ConfigError(f"baselines.prepend_bos must be true, false or null, got {self.prepend_bos!r}.")
        if self.adapter_non_linearity not in NON_LINEARITIES:
            raise unknown_name("adapter non-linearity", self.adapter_non_linearity, NON_LINEARITIES)
        if self.prompt_init not in PROMPT_INITS:
            raise unknown_name("prompt init", self.prompt_init, PROMPT_INITS)
        self.lora_matrices = _as_list(self.lora_matrices, "lora_matrices")
        if not self.lora_matrices:
            raise ConfigError("baselines.lora_matrices is empty; give some of: q, k, v.")
        for mtx in self.lora_matrices:
            if mtx not in LORA_MATRICES:
                raise unknown_name("LoRA matrix", mtx, LORA_MATRICES)
        if not isinstance(self.per_method, dict):
            raise ConfigError(f"baselines.per_method must be a mapping method -> settings, got {self.per_method!r}.")
        overridable = _overridable()
        for method, over in self.per_method.items():
            check_method(method)
            if not isinstance(over, dict):
                raise ConfigError(f"baselines.per_method.{method} must be a mapping of settings, got {over!r}.")
            for key in over:
                if key not in overridable:
                    raise unknown_name("baseline setting", key, overridable,
                                       hint=f"(in baselines.per_method.{method})")
            # validate the override values by building the resolved config once
            self.resolved(method)

    # ------------------------------------------------------------------ construction / resolution
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "BaselineConfig":
        """Build from the ``baselines:`` mapping of an experiment config; unknown keys are rejected."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ConfigError(f"The 'baselines' section must be a mapping of settings, got {type(d).__name__}.")
        names = {f.name for f in fields(cls)}
        for key in d:
            if key not in names:
                raise unknown_name("baseline setting", str(key), names, hint="(in the 'baselines' section)")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved(self, method: str) -> "BaselineConfig":
        """A copy with every per-method setting filled in for ``method`` (overrides > global > default)."""
        check_method(method)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in PER_METHOD_KEYS:
            if values[key] is None:
                values[key] = METHODS[method].defaults[key]
        values.update(self.per_method.get(method, {}))
        values["methods"] = [method]
        values["per_method"] = {}
        return BaselineConfig(**values)

    def fingerprint(self, method: str) -> str:
        """A short hash of the settings that affect ``method``'s results (used to validate resumed runs)."""
        d = self.resolved(method).to_dict()
        d.pop("methods")
        d.pop("per_method")
        for key in list(d):  # another method's settings (lora_r for adapter runs...) do not matter
            owner = next((m for p, m in _METHOD_FIELD_PREFIXES.items() if key.startswith(p)), None)
            if owner is not None and owner != method:
                del d[key]
        return content_key("baseline", d)

    @classmethod
    def help(cls) -> str:
        """One line per setting: name, default, help text."""
        out = []
        for f in fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out.append(f"{f.name} (default {default!r}): {f.metadata.get('help', '')}")
        return "\n".join(out)


_METHOD_FIELD_PREFIXES = {"lora_": "lora", "adapter_": "adapter", "prefix_": "prefix_tuning",
                          "prompt_": "prompt_tuning"}


def _overridable() -> list[str]:
    return [f.name for f in fields(BaselineConfig) if f.name not in ("methods", "per_method")]


def _as_list(v, name: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"baselines.{name} must be a list, got {v!r}.")
    return [str(x) for x in v]


def _positive_int(cfg: BaselineConfig, name: str, *, allow_none: bool = False) -> None:
    v = getattr(cfg, name)
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"baselines.{name} must be a positive integer{' or null' if allow_none else ''}, "
                          f"got {v!r}.")
