"""Sweeps: the cross product models × tasks × probes × seeds (× tuning baselines) as independent cells.

A sweep config is an ordinary experiment config (:class:`probekit.config.ExperimentConfig`);
``probekit run`` computes the same thing serially. ``probekit sweep`` cuts it into *cells* and
runs them in parallel, on local worker processes or on a Ray cluster:

* **extraction** (one per model, ``NAME@random`` counting as its own model): load the model once
  and write (or reuse) its activation stores for train / dev / test. On Ray these tasks ask for
  a GPU when the cluster has one.
* **probe cells** (model × task × probe × seed, every layer): read the finished stores and
  train the probes; no model is loaded. The seeds of a *linear* probe form one cell: its fit is a
  convex problem solved once per task and layer (seed-independent, see
  :func:`probekit.runner.experiment.probe_task`), and only the control task and MDL vary with the seed, so
  splitting them would repeat the fit per seed. MLP probes get one cell per seed. The rows are written as the
  runner's unit files (``results/<experiment>/runs/<key>.json``), with the same keys
  :func:`probekit.runner.experiment.run_experiment` uses, so finished cells are skipped on a rerun and
  ``probekit run`` on the same config recomputes nothing.
* **baseline cells** (model × tuning method × task × seed, when the config has ``baselines``):
  one :func:`probekit.baselines.train.run_baselines` run each, resumable through its run record.
* **study cells** (model × study section, for each study section of the config, ``config.STUDY_SECTIONS``;
  :mod:`probekit.runner.studies`): the study's own run function for that model, which loads the model, reuses (or
  writes) the stores it reads and writes the study's unit files, the ones ``probekit run`` reads.

When every cell is finished, the driver aggregates: it calls :func:`run_experiment`, which finds
every unit (baseline run, study unit) done, loads no model, and writes ``results.csv`` (probe, tuning and study
rows), ``summary.csv`` and the figures.

The package, by job: :mod:`.cells` (the plan's cells and the typed specs workers receive), :mod:`.plan`,
:mod:`.estimate` (time estimates from earlier measurements), :mod:`.workers` (what runs in a worker),
:mod:`.executors` (serial, process pool, Ray), :mod:`.run` (:func:`run_sweep`) and :mod:`.command` (``probekit
sweep``, the only part that prints).
"""
from __future__ import annotations

from probekit.runner.sweep.cells import Cell, CellDone, CellSpec, Extracted, ExtractionSpec
from probekit.runner.sweep.command import describe_plan, run_sweep_cli
from probekit.runner.sweep.executors import SWEEP_DIR, SweepError, import_ray
from probekit.runner.sweep.plan import SweepPlan, plan_sweep, resolve_paths
from probekit.runner.sweep.run import EXECUTORS, SweepResult, load_sweep_config, run_sweep
from probekit.runner.sweep.workers import extract_model, run_baseline_cell, run_probe_cell, run_study_cell

__all__ = ["Cell", "CellDone", "CellSpec", "EXECUTORS", "Extracted", "ExtractionSpec", "SWEEP_DIR", "SweepError",
           "SweepPlan", "SweepResult", "describe_plan", "extract_model", "import_ray", "load_sweep_config",
           "plan_sweep", "resolve_paths", "run_baseline_cell", "run_probe_cell", "run_study_cell", "run_sweep",
           "run_sweep_cli"]
