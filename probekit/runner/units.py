"""Units of probing work and the policy that decides what each one computes.

A *unit* is model × task × pooling × probe × seed × site, all layers together; its rows are stored under a key made of
everything that produced them (:func:`plan_units`). :class:`ProbePolicy` is the one place that says which seeds share
a fit, which unit computes MDL, which one writes the majority-class rows and which control seeds a unit depends on;
:func:`plan_units`, :func:`probekit.runner.probe_task.probe_task` and the sweep read it from there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from probekit.activations.models import check_device, kind_of
from probekit.activations.precision import resolve_precision
from probekit.config import ExperimentConfig
from probekit.keys import content_key
from probekit.probing.registry import FitSettings, ProbeFamily, get_probe
from probekit.tasks import get_task

#: Part of every unit's key: bumped when the code that fits probes changes the numbers it gives (its history is in
#: docs/design.md, "UNIT_VERSION").
UNIT_VERSION = 6


@dataclass(frozen=True)
class Unit:
    """One unit of work; ``key`` names its record file (empty for units that are not stored, e.g. the notebook's)."""

    model: str
    task: str
    pooling: str
    probe: str
    seed: int
    key: str = ""
    site: str = "resid_post"  # where the vectors are read (probekit.activations.sites)


@dataclass(frozen=True)
class ProbePolicy:
    """What probing reads from an experiment's settings, and the rules that follow from them.

    The fields mirror :class:`~probekit.config.ExperimentConfig`'s (same names and defaults;
    tests/test_probe_task.py keeps them in step); :meth:`from_config` takes them from a config.
    """

    experiment: str = "experiment"
    probes: tuple[str, ...] = ("linear",)
    seeds: tuple[int, ...] = (0,)
    layers: tuple[int, ...] | None = None
    sites: tuple[str, ...] = ("resid_post",)
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    control_tasks: bool = True
    mdl: bool = True
    mdl_max_examples: int | None = 10000
    max_train_items: int | None = None
    mlp: dict = field(default_factory=dict)
    device: str | None = None

    def __post_init__(self) -> None:
        for p in self.probes:
            get_probe(p)  # an unknown name: ConfigError with the closest names

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> "ProbePolicy":
        return cls(experiment=cfg.name, probes=tuple(cfg.probes), seeds=tuple(cfg.seeds),
                   layers=None if cfg.layers is None else tuple(cfg.layers), sites=tuple(cfg.sites),
                   Cs=tuple(cfg.Cs),
                   control_tasks=cfg.control_tasks, mdl=cfg.mdl, mdl_max_examples=cfg.mdl_max_examples,
                   max_train_items=cfg.max_train_items, mlp=cfg.mlp, device=cfg.device)

    # ------------------------------------------------------------------ rules
    def family(self, probe: str) -> ProbeFamily:
        return get_probe(probe)

    @property
    def fit_settings(self) -> FitSettings:
        return FitSettings(inv_l2_grid=tuple(self.Cs), mlp=self.mlp, device=self.device)

    def fit_seed(self, probe: str, seed: int) -> int:
        """The seed a fit runs with: a family whose fit does not depend on the seed fits once, with seed 0, and
        every seed's unit repeats those rows (seeds change what really is random: controls, MDL order, MLP init)."""
        return seed if self.family(probe).seed_dependent else 0

    def shares_fit(self, probe: str) -> bool:
        """Whether the units of all seeds of ``probe`` share one fit (and so one sweep cell)."""
        return not self.family(probe).seed_dependent

    def seeds_share_a_cell(self, probe: str) -> bool:
        """Whether one sweep cell should run every seed of ``probe``: they share a fit, or their control tasks are
        one problem over all seeds (one cell per seed would solve it once per seed)."""
        return self.shares_fit(probe) or self.control_seeds(probe) is not None

    def runs_mdl(self, probe: str, seed: int) -> bool:
        """MDL is costly (11 trainings per layer): computed for the first seed only, by families that have it."""
        return self.mdl and self.family(probe).has_mdl and seed == self.seeds[0]

    def writes_majority(self, probe: str, site: str | None = None) -> bool:
        """The majority-class rows are written once per task, pooling and seed: by the units of the first probe at
        the first site (``site`` None: any site)."""
        return probe == self.probes[0] and (site is None or site == self.sites[0])

    def control_seeds(self, probe: str) -> list[int] | None:
        """The seeds whose control tasks one unit's control numbers depend on: all configured seeds when the family
        fits them as one problem, else None (only the unit's own seed)."""
        return sorted(self.seeds) if self.control_tasks and self.family(probe).joint_controls else None


# ----------------------------------------------------------------------------------------------- planning

def vector_settings(cfg: ExperimentConfig) -> dict:
    """What changes the stored vectors besides the model files and the data: the precision that will run here, the
    weights dtype and the quantization (each only when not the default, so that fp32 units keep their keys)."""
    vectors = {"precision": resolve_precision(check_device(cfg.device), cfg.precision),
               "weights_dtype": cfg.weights_dtype}
    vectors = {k: v for k, v in vectors.items() if v not in ("fp32", "float32")}
    if cfg.quantization:
        vectors["quantization"] = cfg.quantization
    return vectors


def data_content(data_fp: dict) -> dict:
    """The data's part of a key: content, not location (the same treebank found through another directory keeps
    its results)."""
    return {role: {k: v for k, v in fp.items() if k != "file"} for role, fp in data_fp.items()}


def study_unit_key(cfg: ExperimentConfig, model_fp: dict, data_fp: dict, *, version: int, **what) -> str:
    """The key of one unit of a study section (structural, relations, scalar_mix, neurons): the study's unit version
    (bumped when its code changes its numbers), the
    model's and the data's content, everything of the config that decides the vectors the study reads (layers, store
    dtype, word pooling, precision, weights dtype, quantization), the experiment, and ``what`` (the study's own
    settings and the unit's task, seed...). A study unit is never reused for vectors it was not computed from."""
    spec = {"v": version, "model": model_fp, "data": data_content(data_fp), "layers": cfg.layers,
            "dtype": cfg.dtype, "word_pooling": cfg.word_pooling, "experiment": cfg.name, **vector_settings(cfg),
            **what}
    return content_key("unit", spec)


def plan_units(cfg: ExperimentConfig, model: str, model_fp: dict, data_fp: dict, kind_hint: str | None = None
               ) -> list[Unit]:
    """Every unit of work for one model (keys depend on everything that changes the rows)."""
    policy = ProbePolicy.from_config(cfg)
    kind = kind_hint or kind_of(model)
    vectors = vector_settings(cfg)
    data_key = data_content(data_fp)
    units = []
    for tname in cfg.tasks:
        task = get_task(tname)
        poolings = list(cfg.sentence_poolings) if task.level == "sentence" else [cfg.word_pooling or "default"]
        if task.level == "sentence" and kind == "decoder":
            poolings = [p for p in poolings if p != "cls"]  # a causal model has no [CLS] summary token
        for pooling in poolings:
            for probe in cfg.probes:
                for seed, site in ((seed, site) for site in cfg.sites for seed in cfg.seeds):
                    spec = {"v": UNIT_VERSION, "model": model_fp, "data": data_key, "task": task.name,
                            "task_version": task.version, "task_fp": task.fingerprint, "labels": task.labels, "pooling": pooling,
                            "probe": probe, "seed": seed, "layers": cfg.layers, "Cs": cfg.Cs,
                            "control": cfg.control_tasks, "mdl": policy.runs_mdl(probe, seed),
                            "mdl_max": cfg.mdl_max_examples, "max_train": cfg.max_train_items,
                            # named "mlp" for the first family that had settings; kept so that keys stay warm
                            "mlp": policy.family(probe).settings_key(policy.fit_settings),
                            "dtype": cfg.dtype, "experiment": cfg.name,
                            "control_seeds": policy.control_seeds(probe),
                            "majority": policy.writes_majority(probe, site), **vectors}
                    if site != "resid_post":  # only then, so that the units of block outputs keep their keys
                        spec["site"] = site
                    units.append(Unit(model, task.name, pooling, probe, seed, key=content_key("unit", spec),
                                      site=site))
    return units
