"""``probekit sweep``: print the plan, run it, print what was done. The only part of the sweep that prints."""
from __future__ import annotations

import math

from probekit.config import resolve_config
from probekit.errors import ConfigError
from probekit.runner.sweep.plan import SweepPlan, baseline_methods, plan_sweep
from probekit.runner.sweep.run import run_sweep


def fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "unknown"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def describe_plan(plan: SweepPlan, *, workers: int = 1) -> str:
    """The plan as text: cell counts per kind and model, and the time estimate."""
    cfg = plan.config
    lines = [f"Sweep {cfg.name!r} -> {plan.folder}"]
    methods = baseline_methods(cfg)
    lines.append(f"  {len(plan.models)} model(s) × {len(cfg.tasks)} task(s) × {len(cfg.probes)} probe(s) × "
                 f"{len(cfg.seeds)} seed(s)" + (f" + baselines ({', '.join(methods)})" if methods else ""))
    for kind in ("probe", "baseline", "study"):
        cells = [c for c in plan.cells if c.kind == kind]
        if not cells:
            continue
        done = sum(c.done for c in cells)
        lines.append(f"  {kind} cells: {len(cells)} total, {done} finished (skipped), {len(cells) - done} to run")
        if kind == "probe":
            n_units = sum(len(c.units) for c in cells)
            lines.append(f"    ({n_units} result units; the seeds of a linear probe share one cell, as its "
                         "control heads are one problem over the seeds)")
        if kind == "study":
            lines.append(f"    (one per model × section: {', '.join(dict.fromkeys(c.method for c in cells))}; each "
                         "loads its model)")
        for m in plan.models:
            mc = [c for c in cells if c.model == m]
            if mc:
                lines.append(f"    {m:28} {len(mc):4} cells, {sum(not c.done for c in mc):4} to run")
    pm = plan.pending_models()
    if pm:
        parts = []
        for m in pm:
            e = plan.extraction_s.get(m)
            parts.append(f"{m} ({'stores already extracted' if e == 0.0 else fmt_s(e)})")
        lines.append(f"  extraction: {len(pm)} model(s): " + ", ".join(parts))
    total, unknown = plan.estimate_s()
    if not plan.pending:
        lines.append("  nothing to run: every cell is finished (the tables will be re-aggregated)")
    elif unknown and total == 0:
        lines.append("  time estimate: unknown (nothing measured yet for these models/tasks; "
                     "run a small slice first to get one)")
    else:
        est = f"~{fmt_s(total)} of compute"
        if workers > 1:
            est += f", ~{fmt_s(total / workers)} wall with {workers} workers"
        if unknown:
            est += f"; plus {unknown} item(s) with no measurement (unknown)"
        lines.append("  time estimate: " + est + " (from earlier measured runs, scaled by training size; "
                     "model loading not included)")
    return "\n".join(lines)


def run_sweep_cli(args) -> int:
    """``probekit sweep CONFIG [--set K=V] [--name N] [--results-dir D] [--executor local|ray] [--address A]
    [--workers N] [--dry-run]``; ``args.overrides`` holds the --set, --name and --results-dir overrides."""
    cfg = resolve_config(args.config, getattr(args, "overrides", None))
    if args.address and args.executor != "ray":
        raise ConfigError(f"--address {args.address} is for --executor ray; the {args.executor} executor has no "
                          "address.")
    workers = args.workers if args.workers is not None else 1
    plan = plan_sweep(cfg)
    print(describe_plan(plan, workers=workers if args.executor == "local" else 1), flush=True)
    if args.dry_run:
        return 0
    res = run_sweep(cfg, executor=args.executor, workers=workers, address=args.address,
                    progress=not getattr(args, "quiet", False), plan=plan)
    print(f"\n{res.computed_cells} cell(s) ({res.computed_units} unit(s)) computed in {fmt_s(res.seconds)}; results: "
          f"{res.folder}/results.csv ({len(res.result.table)} rows), figures in {res.folder}/figures", flush=True)
    # tuning-baseline rows by their method (study sections write other non-probe rows: majority, erasure, neurons)
    tuning = int(res.result.table["method"].isin(baseline_methods(cfg)).sum())
    if tuning:
        print(f"tuning baselines: {tuning} rows in results.csv")
    print(f"tables: probekit report {res.folder}")
    return 0
