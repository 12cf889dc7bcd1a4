"""The optional study sections of an experiment (``config.STUDY_SECTIONS``), each one registration.

A :class:`Study` says how its section is read (``settings``: parse and check, so that a bad section fails before any
work), how it runs for some models (``run``: rows, and the object its figures draw), how the parts of one run are
put together (``combine``), which figures it draws, and how many of a model's units are unfinished (``unfinished``,
the sweep's status of a study cell). :func:`probekit.runner.experiment.run_experiment` parses every present section
up front and runs them all in one loop, model by model, each with the run's one loaded model
(:class:`probekit.runner.data.RunModels`); the sweep plans one cell per model × section
(:mod:`probekit.runner.sweep.plan`). A new study is one more entry of :data:`STUDIES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from probekit.activations.models import ModelName
from probekit.config import ExperimentConfig
from probekit.errors import unknown_name
from probekit.report.erasure_figures import erasure_figures
from probekit.report.neuron_figures import neuron_figures
from probekit.report.relations_figures import relations_by_layer
from probekit.report.structural_figures import structural_figures
from probekit.report.style import figure_paths
from probekit.runner import erasure, head_probes, neurons, relations, scalar_mix, structural
from probekit.runner.data import model_list


@dataclass(frozen=True)
class StudyOutput:
    """What one run of a study gives: its rows of the results table and what its figures draw (None: nothing)."""

    rows: list
    result: Any = None


def _concat(cfg: ExperimentConfig, settings, parts: list[StudyOutput]) -> StudyOutput:
    return StudyOutput([r for p in parts for r in p.rows])


@dataclass(frozen=True)
class Study:
    """One study section.

    * ``settings(cfg)``: the section parsed and checked (ConfigError naming the key);
    * ``run(cfg, settings, data=, data_fp=, models=, load=, progress=)``: a :class:`StudyOutput` for ``models``;
      ``load(model, site="resid_post") -> (lm, stores, info)`` (site None: no stores) is called only for a model
      with work left;
    * ``combine(cfg, settings, parts)``: one output of the parts (one per model) of a run;
    * ``figures(cfg, output, table, folder)``: the figure files written into ``folder``;
    * ``models(cfg)``: the models it runs on (default: the config's and their random-weights twins);
    * ``unfinished(cfg, settings, model, data_fp)``: how many of the model's units are still to compute.
    """

    section: str
    settings: Callable[[ExperimentConfig], Any]
    run: Callable[..., StudyOutput]
    unfinished: Callable[[ExperimentConfig, Any, str, dict], int]
    combine: Callable[[ExperimentConfig, Any, list[StudyOutput]], StudyOutput] = _concat
    figures: Callable[[ExperimentConfig, StudyOutput, Any, Path], list[Path]] | None = None
    models: Callable[[ExperimentConfig], list[str]] = model_list


def study_named(section: str) -> Study:
    """The registration of the study section ``section``."""
    for s in STUDIES:
        if s.section == section:
            return s
    raise unknown_name("study section", section, [s.section for s in STUDIES])


def present(cfg: ExperimentConfig) -> list[tuple[Study, Any]]:
    """The config's study sections, in :data:`STUDIES` order, with their parsed settings (errors now)."""
    return [(s, s.settings(cfg)) for s in STUDIES if getattr(cfg, s.section) is not None]


# ----------------------------------------------------------------------------------------------- registrations

def _run_by(run_fn: Callable) -> Callable[..., StudyOutput]:
    """A study runner (``run_structural`` etc.: rows, or a result with ``.rows``) as a registration's ``run``."""
    def run(cfg, settings, **kw) -> StudyOutput:
        res = run_fn(cfg, settings, **kw)
        return StudyOutput(res) if isinstance(res, list) else StudyOutput(res.rows, res)
    return run


def _merged(result_cls) -> Callable[..., StudyOutput]:
    """``combine`` by the result class's ``merge`` (rows and what the figures draw, e.g. structural's records)."""
    def combine(cfg, settings, parts: list[StudyOutput]) -> StudyOutput:
        res = result_cls.merge([p.result for p in parts])
        return StudyOutput(res.rows, res)
    return combine


def _drawn(figures_fn) -> Callable[..., list[Path]]:
    """``figures`` by a figure function of the study's result (``structural_figures(result, folder, formats=)``)."""
    def figures(cfg, out: StudyOutput, table, folder: Path) -> list[Path]:
        return figures_fn(out.result, folder, formats=cfg.figures)
    return figures


def _erasure_run(cfg, settings, *, data, data_fp, models, load, progress) -> StudyOutput:
    return StudyOutput(erasure.erasure_rows(cfg, settings, data=data, fp=data_fp, progress=progress, models=models,
                                            load=load))


def _erasure_combine(cfg, settings, parts) -> StudyOutput:
    out = _concat(cfg, settings, parts)
    erasure.write_erasure_table(cfg, out.rows)
    return out


def _erasure_figures(cfg, out: StudyOutput, table, folder: Path) -> list[Path]:
    """One figure per model x task, from the whole results table (the probes' accuracy, selectivity and MDL beside
    the erasure rows)."""
    return erasure_figures(table, folder, formats=cfg.figures)


def _scalar_mix_settings(cfg: ExperimentConfig) -> scalar_mix.ScalarMixConfig:
    out = scalar_mix.ScalarMixConfig.from_dict(cfg.scalar_mix)
    out.task_names(cfg)  # its task errors too
    return out


def _head_probes_settings(cfg: ExperimentConfig) -> head_probes.HeadProbesConfig:
    out = head_probes.HeadProbesConfig.from_dict(cfg.head_probes)
    out.task_objects(cfg)  # its task errors too
    return out


def _relations_figures(cfg, out: StudyOutput, table, folder: Path) -> list[Path]:
    """One figure per real model, from the whole results table."""
    paths: list[Path] = []
    for m in (m for m in cfg.models if not ModelName.parse(m).is_random):
        stem = folder / f"relations_by_layer_{m.replace('/', '_')}"
        relations_by_layer(table, stem, formats=cfg.figures, model=m)
        paths += figure_paths(stem, cfg.figures)
    return paths


STUDIES: tuple[Study, ...] = (
    Study("erasure", lambda cfg: erasure.ErasureSettings.from_dict(cfg.erasure), _erasure_run,
          erasure.unfinished_units, combine=_erasure_combine, figures=_erasure_figures,
          models=lambda cfg: list(cfg.models)),
    Study("structural", lambda cfg: structural.StructuralConfig.from_dict(cfg.structural),
          _run_by(structural.run_structural), structural.unfinished_units,
          combine=_merged(structural.StructuralResult), figures=_drawn(structural_figures)),
    Study("scalar_mix", _scalar_mix_settings, _run_by(scalar_mix.run_scalar_mix), scalar_mix.unfinished_units),
    Study("neurons", lambda cfg: neurons.NeuronsConfig.from_dict(cfg.neurons), _run_by(neurons.run_neurons),
          neurons.unfinished_units, combine=_merged(neurons.NeuronsResult), figures=_drawn(neuron_figures)),
    Study("relations", lambda cfg: relations.RelationsConfig.from_dict(cfg.relations),
          _run_by(relations.run_relations), relations.unfinished_units, figures=_relations_figures),
    Study("head_probes", _head_probes_settings, _run_by(head_probes.run_head_probes), head_probes.unfinished_units,
          combine=_merged(head_probes.HeadsResult), figures=_drawn(head_probes.head_figures)),
)
