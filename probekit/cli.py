"""The ``probekit`` command line: a thin shell over the Python API.

Heavy libraries are imported inside the subcommands, so ``probekit --help`` answers at once.
Exit status: 0 done, 1 the command failed (a one-paragraph message on stderr), 2 the command line could not be
parsed (argparse's usage error), 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from pathlib import Path

from probekit._io import read_input_lines
from probekit.activations.models import WEIGHT_DTYPES
from probekit.activations.precision import PRECISIONS
from probekit.errors import ConfigError
from probekit.tracking import TRACKERS

log = logging.getLogger("probekit")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "urllib3", "filelock", "matplotlib", "httpx", "adapters"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _overrides(args) -> dict:
    from probekit.config import parse_override

    out = dict(parse_override(s) for s in (args.set or []))
    for k in ("device", "store_dir", "results_dir", "data_dir", "batch_tokens", "precision", "weights_dtype"):
        v = getattr(args, k, None)
        if v is not None:
            out[k] = v
    if getattr(args, "strict", False):
        out["strict"] = True
    if getattr(args, "name", None):
        out["name"] = args.name
    if getattr(args, "track", None):
        out["track"] = args.track
    return out


def cmd_run(args) -> int:
    from probekit.config import resolve_config
    from probekit.report.tables import best_layer_table
    from probekit.runner.experiment import run_experiment

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
        from probekit.errors import DataError, TaskError

        try:
            sents = load_split(args.dataset, args.split, data_dir=args.data_dir, download=False)
        except DataError as e:
            log.warning("Not counting task sizes: %s", e)
            sents = []
        for t in list_tasks() if sents else []:
            try:
                y = t.encode(sents)
            except TaskError:  # a task on columns this treebank lacks (label: extra.NAME, a tree): not counted
                continue
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


#: How `probekit extract` writes less, for the disk guard's refusal (it has no layers, sites or dtype options).
EXTRACT_SHRINK = "--limit N (first N sentences), or --store-dir on a bigger disk"


def cmd_extract(args) -> int:
    from probekit.activations.budget import check_disk, describe_stores, extraction_bytes
    from probekit.activations.extract import default_store_root, extract
    from probekit.activations.models import load_model
    from probekit.data.datasets import load_split

    lm = load_model(args.model, device=args.device, dtype=args.weights_dtype)
    sents = load_split(args.dataset, args.split, data_dir=args.data_dir, limit=args.limit)
    where = dict(dataset=args.dataset, split=args.split, store_root=args.store_dir, word_pooling=args.pooling,
                 precision=args.precision)
    # the disk guard of `probekit run`: say what will be written, refuse before writing when the disk has no room
    check_disk({args.split: extraction_bytes(lm, sents, **where)}, args.store_dir or default_store_root(),
               describe=describe_stores(lm, ["resid_post"], None, "float16"), shrink=EXTRACT_SHRINK)
    st = extract(lm, sents, **where, batch_tokens=args.batch_tokens, strict=args.strict, progress=not args.quiet)
    print(st)
    return 0


def cmd_annotate(args) -> int:
    from probekit.data.annotate import annotate_file

    sents = annotate_file(args.input, args.output, model=args.spacy_model, mode=args.mode)
    print(f"{len(sents)} sentences, {sum(len(s) for s in sents)} words" + (f" -> {args.output}" if args.output else ""))
    return 0


def cmd_train_probe(args) -> int:
    from probekit.bundle import train_probe_bundle
    from probekit.data.datasets import load_split

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
    from probekit import bundle as bundles

    bundle = bundles.load_probe_bundle(args.probe)
    sents = read_input_lines(args.input) if args.input else args.sentence
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
    if args.format == "csv":
        text = df.to_csv(index=False, lineterminator="\n")
    elif args.format == "jsonl":
        text = df.to_json(orient="records", lines=True, force_ascii=False)
        text = text if text.endswith("\n") else text + "\n"
    else:
        text = df.to_string(index=False) + "\n"
    if args.output:
        from probekit._io import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode("utf-8"))
        print(f"{len(df)} rows -> {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(args) -> int:
    from probekit.report.build import build_report

    paths = build_report(args.folder, formats=args.formats)
    for p in paths:
        print(p)
    return 0


def cmd_compare(args) -> int:
    from probekit.report.compare import compare
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

    args.overrides = _overrides(args)
    return run_sweep_cli(args)


def cmd_cache(args) -> int:
    from probekit.activations.cache import clean_stores, list_stores

    if args.action == "list":
        if args.older_than is not None or args.model or args.dry_run:
            raise ConfigError("--older-than, --model and --dry-run select what `probekit cache clean` deletes; "
                              "`cache list` lists every store.")
        entries = list_stores(args.store_dir)
    else:
        entries = clean_stores(args.store_dir, older_than_days=args.older_than, model=args.model,
                               dry_run=args.dry_run)
    print(f"{'size':>9}  {'age':>6}  {'model':28} {'split':16} store")
    for e in entries:
        print(f"{_fmt_size(e.size):>9}  {e.age_days:5.1f}d  {e.model:28} {e.dataset + ' ' + e.split:16} {e.path}")
    total = _fmt_size(sum(e.size for e in entries))
    if args.action == "list":
        print(f"{len(entries)} store(s), {total}")
    else:
        print(f"{'would delete' if args.dry_run else 'deleted'} {len(entries)} store(s), {total}")
    return 0


def _fmt_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


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


SET_HELP = ("Override a config key with a YAML value; repeatable. Dotted keys set one entry of a mapping "
            "(limit.train=50); a mapping value merges into the file's (limit={train: 50} keeps dev and test).")
STORE_HELP = "Where activation stores live (default $PROBEKIT_STORE_DIR or the user cache)."
DATA_HELP = "Folder holding the treebanks (default $PROBEKIT_DATA_DIR, then the cache, then download)."
DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: CUDA when available)."
BATCH_HELP = "Token budget of one forward batch (default 4096 on CPU, 16384 on GPU)."
POOLING_HELP = "Subword pooling into words (default: first for encoders, last for decoders)."
MODEL_HELP = "A model alias (see `probekit models`), local HF folder, .gguf file or HF hub id."


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from probekit._extras import DISTRIBUTION

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed; a source tree)"


def _with_parents(*parents: argparse.ArgumentParser):
    """A subparser class that adds ``parents``' options to every subcommand."""
    class Sub(argparse.ArgumentParser):
        def __init__(self, *a, **kw):
            super().__init__(*a, parents=list(parents), **kw)

    return Sub


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probekit", description="Layer-wise probing of pretrained language models.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("-v", "--verbose", action="count", default=1, help="More log lines (-vv: debug, tracebacks).")
    p.add_argument("-q", "--quiet", action="store_true", help="Only warnings and results; no progress bars.")
    # the same two options after the subcommand (`probekit run c.yaml -q`), added to the ones given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", dest="verbose_after", action="count", default=0,
                        help="More log lines (-vv: debug, tracebacks).")
    common.add_argument("-q", "--quiet", dest="quiet_after", action="store_true",
                        help="Only warnings and results; no progress bars.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_with_parents(common))

    r = sub.add_parser("run", help="Run an experiment config end to end (resumes, reuses stores).")
    r.add_argument("config", help="A YAML config file, results/<name>/config.yaml of an earlier run, or the name of a "
                   "shipped config (quickstart, smoke, ...).")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    r.add_argument("--name", help="Experiment name (results go to <results-dir>/<name>/).")
    r.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    r.add_argument("--store-dir", dest="store_dir", help=STORE_HELP)
    r.add_argument("--results-dir", dest="results_dir", help="Folder holding one sub-folder per experiment.")
    r.add_argument("--data-dir", dest="data_dir", help=DATA_HELP)
    r.add_argument("--batch-tokens", dest="batch_tokens", type=_count(1), help=BATCH_HELP)
    r.add_argument("--precision", choices=PRECISIONS, help="Extraction precision (autocast); auto = fp32, see the "
                   "README's speed section (config key precision).")
    r.add_argument("--weights-dtype", dest="weights_dtype", choices=WEIGHT_DTYPES,
                   help="dtype the model weights are loaded in (GGUF de-quantised to it) (config key weights_dtype).")
    r.add_argument("--strict", action="store_true", help="Stop on a damaged or foreign store file, parse-cache entry "
                   "or result unit instead of recomputing it.")
    r.add_argument("--track", action="append", choices=TRACKERS,
                   help="Log the run to this tracker (repeatable; replaces the config's track list).")
    r.add_argument("--dry-run", action="store_true", help="Print the resolved config and stop.")
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser("tasks", help="List the tasks with their label sets and sizes on a split (--no-sizes: without sizes).")
    t.add_argument("--no-sizes", dest="sizes", action="store_false",
                   help="Do not count labelled items on a split (which reads the data).")
    t.add_argument("--dataset", default="ud_ewt", help="Treebank to count on: ud_ewt (default), ud_pud or a UD "
                   "treebank by name such as ud:de_gsd.")
    t.add_argument("--split", default="train", help="Split to count on (default train).")
    t.add_argument("--data-dir", dest="data_dir", help=DATA_HELP)
    t.set_defaults(fn=cmd_tasks)

    m = sub.add_parser("models", help="List the model aliases.")
    m.set_defaults(fn=cmd_models)

    e = sub.add_parser("extract", help="Extract (or reuse) the activation store of one model and split.")
    e.add_argument("model", help=MODEL_HELP)
    e.add_argument("--dataset", default="ud_ewt", help="Treebank: ud_ewt (default), ud_pud or a UD treebank by name "
                   "such as ud:de_gsd.")
    e.add_argument("--split", default="dev", help="Split (default dev).")
    e.add_argument("--limit", type=_count(1), help="First N sentences only (default all).")
    e.add_argument("--pooling", choices=["first", "last", "mean"], help=POOLING_HELP)
    e.add_argument("--device", help=DEVICE_HELP)
    e.add_argument("--store-dir", dest="store_dir", help=STORE_HELP)
    e.add_argument("--data-dir", dest="data_dir", help=DATA_HELP)
    e.add_argument("--batch-tokens", dest="batch_tokens", type=_count(1), help=BATCH_HELP)
    e.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="Extraction precision (autocast); auto = fp32, see the README's speed section.")
    e.add_argument("--weights-dtype", dest="weights_dtype", choices=WEIGHT_DTYPES, default="float32",
                   help="dtype the model weights are loaded in (GGUF de-quantised to it); default float32.")
    e.add_argument("--strict", action="store_true", help="Stop on a damaged store file instead of recomputing it.")
    e.set_defaults(fn=cmd_extract)

    a = sub.add_parser("annotate", help="Raw text -> CoNLL-U with spaCy (silver labels for every task).")
    a.add_argument("input", help="A UTF-8 text file.")
    a.add_argument("-o", "--output", help="CoNLL-U file to write (default: only count).")
    a.add_argument("--mode", default="lines", choices=["lines", "paragraphs"],
                   help="lines: one sentence per line (default); paragraphs: spaCy splits sentences.")
    a.add_argument("--spacy-model", dest="spacy_model", help="spaCy pipeline (default: the first installed English "
                   "one).")
    a.set_defaults(fn=cmd_annotate)

    pr = sub.add_parser("predict", help="Apply a saved probe to new sentences.")
    pr.add_argument("probe", help="A saved probe file (.probe) made with ProbeBundle.save / `probekit train-probe`.")
    pr.add_argument("sentence", nargs="*", help="Sentences to label (or --input FILE).")
    pr.add_argument("--input", help="A UTF-8 text file, one sentence per line.")
    pr.add_argument("--layer", default="best", help="'best' (best dev layer, default), 'all', or layer numbers "
                    "(3 or 2,4).")
    pr.add_argument("--whitespace", action="store_true", help="Split sentences on whitespace (default: spaCy words).")
    pr.add_argument("--format", default="table", choices=["table", "csv", "jsonl"],
                    help="Output: an aligned table (default), CSV, or JSON lines (one object per word).")
    pr.add_argument("-o", "--output", help="Write to this file (default: standard output).")
    pr.add_argument("--device", help=DEVICE_HELP)
    pr.set_defaults(fn=cmd_predict)

    tp = sub.add_parser("train-probe", help="Train linear probes on every layer for one model and task on a "
                        "treebank; save them to one .probe file for `probekit predict`.")
    tp.add_argument("model", help=MODEL_HELP)
    tp.add_argument("task", help="A task name (see `probekit tasks`).")
    tp.add_argument("-o", "--output", help="Where to save (default <model>-<task>.probe).")
    tp.add_argument("--dataset", default="ud_ewt", help="Treebank: ud_ewt (default), ud_pud or a UD treebank by name "
                    "such as ud:de_gsd.")
    tp.add_argument("--limit", type=_count(1), help="Train sentences (default all).")
    tp.add_argument("--dev-limit", dest="dev_limit", type=_count(1), default=500, help="Dev sentences (default 500).")
    tp.add_argument("--layers", type=int, nargs="+", help="Layers to probe (default all; 0 = embeddings).")
    tp.add_argument("--pooling", choices=["first", "last", "mean"], help=POOLING_HELP)
    tp.add_argument("--device", help=DEVICE_HELP)
    tp.add_argument("--store-dir", dest="store_dir", help=STORE_HELP)
    tp.add_argument("--data-dir", dest="data_dir", help=DATA_HELP)
    tp.set_defaults(fn=cmd_train_probe)

    rep = sub.add_parser("report", help="Tables (LaTeX, Markdown) and figures from a results folder.")
    rep.add_argument("folder", help="A results folder (results/<name>).")
    rep.add_argument("--formats", nargs="+", default=["pdf", "png"], help="Figure formats (default pdf png).")
    rep.set_defaults(fn=cmd_report)

    cp = sub.add_parser("compare", help="Paired significance tests of the models of two experiments on the same "
                        "test words (refuses two experiments with different test sets).")
    cp.add_argument("a", help="results/<experiment A>")
    cp.add_argument("b", help="results/<experiment B>")
    cp.add_argument("--resamples", type=int, default=1000, help="Permutation and bootstrap resamples (>= 100).")
    cp.add_argument("--csv", help="Also write every test to this CSV file.")
    cp.set_defaults(fn=cmd_compare)

    sw = sub.add_parser("sweep", help="Run the cross product of a sweep config (local processes or Ray).")
    sw.add_argument("config", help="A sweep config (an experiment config) or a shipped config name.")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    sw.add_argument("--name", help="Experiment name (results go to <results-dir>/<name>/).")
    sw.add_argument("--results-dir", dest="results_dir", help="Folder holding one sub-folder per experiment.")
    sw.add_argument("--executor", default="local", choices=["local", "ray"], help="local processes (default) or Ray.")
    sw.add_argument("--address", help="Ray cluster address (default: start a local Ray instance).")
    sw.add_argument("--workers", type=_count(1), help="Local worker processes (default: 1).")
    sw.add_argument("--dry-run", action="store_true", help="Print the plan and stop.")
    sw.set_defaults(fn=cmd_sweep)

    ch = sub.add_parser("config-help", help="Every config key with its default and meaning.")
    ch.set_defaults(fn=cmd_config_help)

    ca = sub.add_parser("cache", help="List or clean the activation stores in the cache.")
    ca.add_argument("action", choices=["list", "clean"], help="list: every store with its size, model and split; "
                    "clean: delete the stores selected by --older-than / --model.")
    ca.add_argument("--store-dir", dest="store_dir", help=STORE_HELP)
    ca.add_argument("--older-than", dest="older_than", type=float, metavar="DAYS",
                    help="clean: stores not written for more than DAYS days.")
    ca.add_argument("--model", help="clean: stores of this model name (as listed).")
    ca.add_argument("--dry-run", action="store_true", help="clean: list what would be deleted, delete nothing.")
    ca.set_defaults(fn=cmd_cache)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)
    args.quiet = args.quiet or getattr(args, "quiet_after", False)
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
        return 1
    except RuntimeError as e:
        if "out of memory" not in str(e).lower() or args.verbose > 1:
            raise
        _print_error(f"Out of memory: {str(e).splitlines()[0]} Lower --batch-tokens, probe fewer layers at once, or "
                     "use a smaller model. (-v shows the traceback.)")
        return 1


def _print_error(text: str) -> None:
    """One paragraph on stderr, broken only at spaces so that paths and URLs stay whole."""
    msg = textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)
    print(f"probekit: error: {msg}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
