"""A sweep's plan: every cell of the cross product, which are finished, and the time estimates.

Planning reads the data (to fingerprint it, as the runner does) and the models' weight hashes (memoised); it loads
no model. Printing the plan is the command's job (:mod:`probekit.runner.sweep.command`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from probekit.activations.extract import default_store_root
from probekit.activations.models import ModelName, fingerprint
from probekit.baselines.config import BaselineConfig
from probekit.baselines.records import data_identity, finished_run, run_identity, run_path
from probekit.config import ExperimentConfig
from probekit.results.table import load_unit
from probekit.runner.data import model_list
from probekit.runner.studies import present as present_studies
from probekit.runner.sweep.cells import Cell, CellSpec, ExtractionSpec, seeds_share_a_cell
from probekit.runner.sweep.estimate import estimate_cells
from probekit.runner.sweep.workers import load_data_cached
from probekit.runner.units import plan_units
from probekit.tasks import get_task


@dataclass
class SweepPlan:
    """Every cell of a sweep, which are finished, and a time estimate from earlier measurements."""

    config: ExperimentConfig  # with absolute paths (resolve_paths)
    folder: Path
    models: list[str]
    cells: list[Cell]
    data_fp: dict
    model_fps: dict[str, dict]
    #: model -> estimated extraction seconds (0.0 = stores found finished, None = nothing measured)
    extraction_s: dict[str, float | None] = field(default_factory=dict)

    @property
    def pending(self) -> list[Cell]:
        return [c for c in self.cells if not c.done]

    def pending_models(self) -> list[str]:
        """Models that still have probe cells to run (their stores are needed)."""
        need = {c.model for c in self.pending if c.kind == "probe"}
        return [m for m in self.models if m in need]

    def estimate_s(self) -> tuple[float, int]:
        """(sum of the known estimates in seconds, number of pending items with no estimate)."""
        known = [c.estimate_s for c in self.pending] + [self.extraction_s.get(m) for m in self.pending_models()]
        return sum(e for e in known if e is not None), sum(e is None for e in known)

    def extraction_spec(self, model: str) -> ExtractionSpec:
        return ExtractionSpec(model=model, config=self.config, data_fp=self.data_fp)

    def cell_spec(self, cell: Cell, config: ExperimentConfig | None = None) -> CellSpec:
        """What a worker needs for ``cell``; ``config`` replaces the plan's (e.g. another device)."""
        return cell.spec(config or self.config, self.data_fp,
                         self.model_fps[cell.model] if cell.kind == "probe" else None)


def baseline_methods(cfg: ExperimentConfig) -> list[str]:
    return list(BaselineConfig.from_dict(cfg.baselines).methods) if cfg.baselines else []


def resolve_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config with absolute ``results_dir``/``store_dir``/``data_dir``/``files`` so that worker
    processes (other working directories, other machines) see the same folders. None of these
    enters a unit key."""
    def absolute(p):
        return str(Path(p).expanduser().resolve()) if p is not None else None

    return cfg.replace(results_dir=absolute(cfg.results_dir),
                       store_dir=absolute(cfg.store_dir) or str(default_store_root().resolve()),
                       data_dir=absolute(cfg.data_dir),
                       files={k: absolute(v) for k, v in (cfg.files or {}).items()})


def plan_sweep(cfg: ExperimentConfig) -> SweepPlan:
    """Every cell of the sweep with its status (finished = all its unit / run files exist) and time estimate."""
    cfg = resolve_paths(cfg)
    folder = Path(cfg.results_dir) / cfg.name
    runs = folder / "runs"
    data, data_fp = load_data_cached(cfg)
    models = model_list(cfg)
    cells: list[Cell] = []
    fps = {}
    for m in models:
        fps[m] = fingerprint(m)
        by_cell: dict[tuple, list] = {}
        for u in plan_units(cfg, m, fps[m], data_fp):
            cell_seed = None if seeds_share_a_cell(cfg, u.probe) else u.seed
            by_cell.setdefault((u.task, u.probe, cell_seed), []).append(u)
        for (task, probe, _), units in by_cell.items():
            keys = [u.key for u in units]
            done = all(load_unit(runs / f"{k}.json") is not None for k in keys)
            cells.append(Cell("probe", m, task, probe, sorted({u.seed for u in units}), units=keys, done=done))
    if cfg.baselines:
        cells += _baseline_cells(cfg, folder, data)
    cells += _study_cells(cfg, data_fp)
    plan = SweepPlan(config=cfg, folder=folder, models=models, cells=cells, data_fp=data_fp, model_fps=fps)
    plan.extraction_s = estimate_cells(cfg, folder, cells, plan.pending_models(), data, data_fp)
    return plan


def _baseline_cells(cfg: ExperimentConfig, folder: Path, data: dict) -> list[Cell]:
    """Model × method × task × seed, as the runner's baseline step (run_config_baselines) runs them: word-level
    tasks, real models only. A cell is done when its run record was computed from the same inputs."""
    bcfg = BaselineConfig.from_dict(cfg.baselines)
    data_id = data_identity({role: data[role] for role in ("train", "dev", "test")})
    tasks = [t for t in (get_task(name) for name in cfg.tasks) if t.level == "word"]
    out = []
    for m in [m for m in cfg.models if not ModelName.parse(m).is_random]:
        model_id = fingerprint(m)
        for method in bcfg.methods:
            fp = bcfg.fingerprint(method)
            for task in tasks:
                identity = run_identity(fp, data_id, model_id, task)
                for seed in cfg.seeds:
                    path = run_path(folder / "baselines", model=m, method=method, task=task.name, seed=seed)
                    done = finished_run(path, identity) is not None
                    out.append(Cell("baseline", m, task.name, method, [seed], done=done))
    return out


def _study_cells(cfg: ExperimentConfig, data_fp: dict) -> list[Cell]:
    """Model × study section (:mod:`probekit.runner.studies`), on the models the section runs on; a cell is done
    when every unit of the study for that model is finished (then ``probekit run`` loads no model for it)."""
    return [Cell("study", m, "", study.section, list(cfg.seeds),
                 done=study.unfinished(cfg, settings, m, data_fp) == 0)
            for study, settings in present_studies(cfg) for m in study.models(cfg)]
