"""The ``probekit`` command line: a thin shell over the Python API.

Heavy libraries are imported inside the subcommands, so ``probekit --help`` answers at once.
Every probekit error ends the process with exit status 2 and a one-paragraph message on stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from pathlib import Path

log = logging.getLogger("probekit")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "urllib3", "filelock", "matplotlib", "httpx", "adapters"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _overrides(args) -> dict:
    from probekit.config import parse_override

    out = dict(parse_override(s) for s in (args.set or []))
    for k in ("device", "store_dir", "results_dir", "data_dir", "batch_tokens"):
        v = getattr(args, k, None)
        if v is not None:
            out[k] = v
    if getattr(args, "strict", False):
        out["strict"] = True
    if getattr(args, "name", None):
        out["name"] = args.name
    return out


def cmd_run(args) -> int:
    from probekit.config import resolve_config
    from probekit.runner.experiment import run_experiment
    from probekit.report.tables import best_layer_table

    cfg = resolve_config(args.config, _overrides(args))
    if args.dry_run:
        print(cfg.to_yaml())
        return 0
    res = run_experiment(cfg, progress=not args.quiet)
    table = best_layer_table(res.summary)
    print(f"\nResults: {res.folder}/results.csv ({len(res.table)} rows); figures in {res.folder}/figures")
    print(f"Forward passes this run: {res.forward_passes} shard(s) computed"
          + (" (all activations reused from the store)" if res.forward_passes == 0 else ""))
    if len(table):
        import pandas as pd
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(table.round(3).to_string(index=False))
    return 0


def cmd_tasks(args) -> int:
    from probekit.tasks import list_tasks

    sizes = {}
    if args.sizes:
        from probekit.data.datasets import load_split
        from probekit.errors import DataError

        try:
            sents = load_split(args.dataset, args.split, data_dir=args.data_dir, download=False)
        except DataError as e:
            log.warning("Not counting task sizes: %s", e)
            sents = []
        for t in list_tasks() if sents else []:
            y = t.encode(sents)
            sizes[t.name] = (int((y >= 0).sum()), int((y < 0).sum()))
    print(f"{'task':16} {'level':9} {'labels':>6}  label set" + ("   [labelled / left out on "
                                                                 f"{args.dataset} {args.split}]" if sizes else ""))
    for t in list_tasks():
        labels = ", ".join(t.labels)
        extra = f"   [{sizes[t.name][0]:,} / {sizes[t.name][1]:,}]" if t.name in sizes else ""
        print(f"{t.name:16} {t.level:9} {len(t.labels):>6}  {textwrap.shorten(labels, 70)}{extra}")
    return 0


def cmd_models(args) -> int:
    from probekit.activations.models import list_aliases

    print(f"{'alias':14} {'kind':8} description")
    for a in list_aliases():
        print(f"{a.name:14} {a.kind:8} {a.description}")
    print("\nAlso accepted: a local HF model folder, a .gguf file, an HF hub id (org/name), and NAME@random[:SEED] "
          "for the same architecture with re-initialised weights.")
    return 0


def cmd_extract(args) -> int:
    from probekit.data.datasets import load_split
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model

    lm = load_model(args.model, device=args.device)
    sents = load_split(args.dataset, args.split, data_dir=args.data_dir, limit=args.limit)
    st = extract(lm, sents, dataset=args.dataset, split=args.split, store_root=args.store_dir,
                 word_pooling=args.pooling, batch_tokens=args.batch_tokens, strict=args.strict,
                 progress=not args.quiet)
    print(st)
    return 0


def cmd_annotate(args) -> int:
    from probekit.data.annotate import annotate_file

    sents = annotate_file(args.input, args.output, model=args.spacy_model, mode=args.mode)
    print(f"{len(sents)} sentences, {sum(len(s) for s in sents)} words" + (f" -> {args.output}" if args.output else ""))
    return 0


def cmd_train_probe(args) -> int:
    from probekit.data.datasets import load_split
    from probekit.bundle import train_probe_bundle

    train = load_split(args.dataset, "train", data_dir=args.data_dir, limit=args.limit)
    dev = load_split(args.dataset, "dev", data_dir=args.data_dir, limit=args.dev_limit)
    bundle = train_probe_bundle(args.model, args.task, train=train, dev=dev, layers=args.layers,
                                word_pooling=args.pooling, store_root=args.store_dir, device=args.device,
                                progress=not args.quiet)
    path = bundle.save(args.output or f"{Path(args.model).name.replace('@', '_')}-{args.task}.probe")
    print(bundle)
    print("dev accuracy by layer: " + ", ".join(f"{k}: {v:.3f}" for k, v in bundle.dev_accuracy().items()))
    print(path)
    return 0


def cmd_predict(args) -> int:
    from probekit.errors import ConfigError
    from probekit.bundle import load_probe_bundle

    bundle = load_probe_bundle(args.probe)
    sents = [line.strip() for line in Path(args.input).read_text(encoding="utf-8").splitlines() if line.strip()] \
        if args.input else args.sentence
    if not sents:
        raise ConfigError("Give sentences as arguments or --input FILE (one sentence per line).")
    if args.layer in ("best", "all"):
        layers = "best" if args.layer == "best" else None
    else:
        try:
            layers = [int(x) for x in args.layer.split(",")]
        except ValueError:
            raise ConfigError(f"--layer {args.layer!r}: give 'best', 'all' or layer numbers like 3 or 2,4.") from None
    df = bundle.predict(sents, device=args.device, layers=layers,
                        tokenize="whitespace" if args.whitespace else "spacy")
    print(df.to_string(index=False))
    return 0


def cmd_report(args) -> int:
    from probekit.report.build import build_report

    paths = build_report(args.folder, formats=args.formats)
    for p in paths:
        print(p)
    return 0


def cmd_compare(args) -> int:
    from probekit.results.analysis import compare
    from probekit.results.sentence_stats import describe

    tests = compare(args.a, args.b, n_resamples=args.resamples)
    if tests.empty:
        print("No model of the one experiment was probed on a task of the other: nothing to compare.")
        return 0
    for line in describe(tests):
        print(line)
    if args.csv:
        from probekit.results.table import write_csv

        write_csv(tests, args.csv)
        print(args.csv)
    return 0


def cmd_sweep(args) -> int:
    from probekit.runner.sweep import run_sweep_cli

    return run_sweep_cli(args)


def cmd_config_help(args) -> int:
    from probekit.config import help_table

    for name, default, text in help_table():
        print(f"{name:18} {default:40} {text}")
    return 0


def _count(minimum: int):
    """argparse type: a whole number >= ``minimum`` (argparse then says which option got what)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{v} is below {minimum}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probekit", description="Layer-wise probing of pretrained language models.")
    p.add_argument("-v", "--verbose", action="count", default=1)
    p.add_argument("-q", "--quiet", action="store_true", help="Only warnings and results.")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="Run an experiment config end to end (resumes, reuses stores).")
    r.add_argument("config")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="Override a config key (YAML value).")
    r.add_argument("--name")
    r.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    r.add_argument("--store-dir", dest="store_dir")
    r.add_argument("--results-dir", dest="results_dir")
    r.add_argument("--data-dir", dest="data_dir")
    r.add_argument("--batch-tokens", dest="batch_tokens", type=_count(1))
    r.add_argument("--strict", action="store_true", help="Stop on a damaged store file instead of recomputing it.")
    r.add_argument("--dry-run", action="store_true", help="Print the resolved config and stop.")
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser("tasks", help="List the tasks with their label sets and sizes on a split (--no-sizes: without sizes).")
    t.add_argument("--no-sizes", dest="sizes", action="store_false",
                   help="Do not count labelled items on a split (which reads the data).")
    t.add_argument("--dataset", default="ud_ewt")
    t.add_argument("--split", default="train")
    t.add_argument("--data-dir", dest="data_dir")
    t.set_defaults(fn=cmd_tasks)

    m = sub.add_parser("models", help="List the model aliases.")
    m.set_defaults(fn=cmd_models)

    e = sub.add_parser("extract", help="Extract (or reuse) the activation store of one model and split.")
    e.add_argument("model")
    e.add_argument("--dataset", default="ud_ewt")
    e.add_argument("--split", default="dev")
    e.add_argument("--limit", type=_count(1))
    e.add_argument("--pooling", choices=["first", "last", "mean"])
    e.add_argument("--device")
    e.add_argument("--store-dir", dest="store_dir")
    e.add_argument("--data-dir", dest="data_dir")
    e.add_argument("--batch-tokens", dest="batch_tokens", type=_count(1))
    e.add_argument("--strict", action="store_true")
    e.set_defaults(fn=cmd_extract)

    a = sub.add_parser("annotate", help="Raw text -> CoNLL-U with spaCy (silver labels for every task).")
    a.add_argument("input")
    a.add_argument("-o", "--output")
    a.add_argument("--mode", default="lines", choices=["lines", "paragraphs"])
    a.add_argument("--spacy-model", dest="spacy_model")
    a.set_defaults(fn=cmd_annotate)

    pr = sub.add_parser("predict", help="Apply a saved probe to new sentences.")
    pr.add_argument("probe", help="A saved probe file (.probe) made with ProbeBundle.save / `probekit train-probe`.")
    pr.add_argument("sentence", nargs="*")
    pr.add_argument("--input", help="A UTF-8 text file, one sentence per line.")
    pr.add_argument("--layer", default="best", help="'best' (best dev layer, default), 'all', or layer numbers "
                    "(3 or 2,4).")
    pr.add_argument("--whitespace", action="store_true", help="Split sentences on whitespace (default: spaCy words).")
    pr.add_argument("--device")
    pr.set_defaults(fn=cmd_predict)

    tp = sub.add_parser("train-probe", help="Train linear probes on every layer for one model and task on a "
                        "treebank; save them to one .probe file for `probekit predict`.")
    tp.add_argument("model")
    tp.add_argument("task")
    tp.add_argument("-o", "--output", help="Where to save (default <model>-<task>.probe).")
    tp.add_argument("--dataset", default="ud_ewt")
    tp.add_argument("--limit", type=_count(1), help="Train sentences (default all).")
    tp.add_argument("--dev-limit", dest="dev_limit", type=_count(1), default=500, help="Dev sentences (default 500).")
    tp.add_argument("--layers", type=int, nargs="+", help="Layers to probe (default all; 0 = embeddings).")
    tp.add_argument("--pooling", choices=["first", "last", "mean"])
    tp.add_argument("--device")
    tp.add_argument("--store-dir", dest="store_dir")
    tp.add_argument("--data-dir", dest="data_dir")
    tp.set_defaults(fn=cmd_train_probe)

    rep = sub.add_parser("report", help="Tables (LaTeX, Markdown) and figures from a results folder.")
    rep.add_argument("folder")
    rep.add_argument("--formats", nargs="+", default=["pdf", "png"])
    rep.set_defaults(fn=cmd_report)

    cp = sub.add_parser("compare", help="Paired significance tests of the models of two experiments on the same "
                        "test words (refuses two experiments with different test sets).")
    cp.add_argument("a", help="results/<experiment A>")
    cp.add_argument("b", help="results/<experiment B>")
    cp.add_argument("--resamples", type=int, default=1000, help="Permutation and bootstrap resamples (>= 100).")
    cp.add_argument("--csv", help="Also write every test to this CSV file.")
    cp.set_defaults(fn=cmd_compare)

    sw = sub.add_parser("sweep", help="Run the cross product of a sweep config (local processes or Ray).")
    sw.add_argument("config")
    sw.add_argument("--executor", default="local", choices=["local", "ray"])
    sw.add_argument("--address", help="Ray cluster address (default: start a local Ray instance).")
    sw.add_argument("--workers", type=_count(1), help="Local worker processes (default: 1).")
    sw.add_argument("--dry-run", action="store_true", help="Print the plan and stop.")
    sw.set_defaults(fn=cmd_sweep)

    ch = sub.add_parser("config-help", help="Every config key with its default and meaning.")
    ch.set_defaults(fn=cmd_config_help)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from probekit.errors import ProbekitError

    try:
        return args.fn(args)
    except ProbekitError as e:
        _print_error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        print("probekit: interrupted; finished shards and result units are kept, rerun to resume.", file=sys.stderr)
        return 130
    except (OSError, UnicodeError, MemoryError) as e:
        # the environment (a path, permissions, a full disk, memory), not a probekit bug: one paragraph too;
        # -v shows the traceback
        if args.verbose > 1:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        what = getattr(e, "strerror", None) or str(e) or type(e).__name__
        _print_error(f"{where}{what} ({type(e).__name__}). Check the path, its permissions and the free disk space "
                     "or memory, then rerun: finished shards and result units are kept. (-v shows the traceback.)")
        return 2
    except RuntimeError as e:
        if "out of memory" not in str(e).lower() or args.verbose > 1:
            raise
        _print_error(f"Out of memory: {str(e).splitlines()[0]} Lower --batch-tokens, probe fewer layers at once, or "
                     "use a smaller model. (-v shows the traceback.)")
        return 2


def _print_error(text: str) -> None:
    """One paragraph on stderr, broken only at spaces so that paths and URLs stay whole."""
    msg = textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)
    print(f"probekit: error: {msg}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
