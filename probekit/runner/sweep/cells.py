"""What a sweep is cut into: the plan's cells, and the typed specs the workers receive.

A :class:`Cell` is the driver's record of one piece of work (with its status and time estimate). A worker gets a
:class:`CellSpec` or an :class:`ExtractionSpec` instead: frozen, picklable (for the process pool and Ray), carrying
the experiment's config as an object (never rebuilt from a dict in the worker) and the driver's fingerprints, so
that the worker plans exactly the unit keys the driver planned. Workers answer with :class:`Extracted` and
:class:`CellDone`, which the driver writes to its JSON-lines log.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from probekit.config import ExperimentConfig
from probekit.runner.units import ProbePolicy

# ------------------------------------------------------------------------------------------ the runner's rules, restated
# Two rules of the runner that the sweep needs before any unit runs, read from the one policy object
# (probekit.runner.units.ProbePolicy) that plan_units and probe_task use.

def seeds_share_a_cell(cfg: ExperimentConfig, probe: str) -> bool:
    """RULE: the seeds of ``probe`` form one cell when they share work that a cell per seed would repeat: one fit
    (a family whose fit takes no seed) or one control problem over every seed (the linear probe's joint control
    heads). Called from :func:`plan.plan_sweep`."""
    return ProbePolicy.from_config(cfg).seeds_share_a_cell(probe)


def seeds_share_a_fit(cfg: ExperimentConfig, probe: str) -> bool:
    """RULE: whether the seeds of ``probe`` share one fit (a family whose fit takes no seed). Called from
    :func:`estimate.probe_cell_estimate`."""
    return ProbePolicy.from_config(cfg).shares_fit(probe)


def mdl_seed(cfg: ExperimentConfig, probe: str) -> int | None:
    """RULE: MDL is measured for the linear probe on the first configured seed only (None: no MDL for ``probe``).
    Single call site: :func:`estimate.probe_cell_estimate`."""
    return cfg.seeds[0] if ProbePolicy.from_config(cfg).runs_mdl(probe, cfg.seeds[0]) else None


def seeds_text(seeds) -> str:
    seeds = list(seeds)
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ",".join(map(str, seeds))


@dataclass
class Cell:
    """One independent piece of a sweep, as the plan lists it.

    ``kind`` is ``"probe"`` (``method`` = probe type, all layers, every pooling of the task),
    ``"baseline"`` (``method`` = tuning method) or ``"study"`` (``method`` = a study section of the config, e.g.
    ``structural``, run for one model; ``task`` empty: the section says which tasks). ``seeds`` holds one seed, or
    every seed of a probe whose seeds share work (:func:`seeds_share_a_cell`), or the config's seeds for a study.
    ``units`` are the runner's unit keys of a probe cell.
    """

    kind: str
    model: str
    task: str
    method: str
    seeds: list[int]
    units: list[str] = field(default_factory=list)
    done: bool = False
    estimate_s: float | None = None

    @property
    def label(self) -> str:
        if self.kind == "study":
            return f"study {self.model} / {self.method}"
        return f"{self.kind} {self.model} / {self.task} / {self.method} / {seeds_text(self.seeds)}"

    def spec(self, config: ExperimentConfig, data_fp: dict, model_fp: dict | None = None) -> "CellSpec":
        """What a worker needs to run this cell."""
        return CellSpec(kind=self.kind, model=self.model, task=self.task, method=self.method, seeds=tuple(self.seeds),
                        units=tuple(self.units), config=config, data_fp=data_fp, model_fp=model_fp)


@dataclass(frozen=True)
class CellSpec:
    """A cell as a worker receives it.

    ``config`` is the experiment's config with absolute paths (and, on Ray, the device of a CPU task): the runner's
    ``plan_units`` and ``probe_task`` read their settings from it. ``data_fp`` and ``model_fp`` are the driver's
    fingerprints: the worker checks that it reads the same data, and plans its unit keys from them.
    """

    kind: str  # "probe", "baseline" or "study"
    model: str
    task: str
    method: str  # probe type, tuning method or study section
    seeds: tuple[int, ...]
    units: tuple[str, ...]
    config: ExperimentConfig
    data_fp: dict
    model_fp: dict | None = None  # probe cells only

    def done(self, computed_units: int, seconds: float, host: str) -> "CellDone":
        return CellDone(kind=self.kind, model=self.model, task=self.task, method=self.method, seeds=list(self.seeds),
                        units=list(self.units), computed_units=computed_units, seconds=seconds, host=host)


@dataclass(frozen=True)
class CellDone:
    """A worker's answer for one cell: how many units (or baseline runs) it computed, in how many seconds, where."""

    kind: str
    model: str
    task: str
    method: str
    seeds: list[int]
    units: list[str]
    computed_units: int
    seconds: float
    host: str

    def record(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExtractionSpec:
    """One model's extraction step as a worker receives it (``config`` and ``data_fp`` as in :class:`CellSpec`)."""

    model: str
    config: ExperimentConfig
    data_fp: dict


@dataclass(frozen=True)
class Extracted:
    """A finished extraction: what the model's probe cells need (the store folders and the model's name, kind and
    weights hash), and what the driver logs."""

    model: str
    lm_info: dict  # {"name", "kind", "hash"}
    num_layers: int
    stores: dict[str, dict[str, str]]  # site -> role -> store folder
    computed_shards: int
    seconds: float
    data: dict
    host: str

    def record(self) -> dict:
        return asdict(self)
