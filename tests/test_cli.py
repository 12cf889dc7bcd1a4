"""The CLI is a thin, fast shell over the API."""
from __future__ import annotations

import subprocess
import sys

import pytest

from probekit.cli import main


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; import probekit.cli as c; p = c.build_parser(); "
            "heavy = [m for m in ('torch', 'transformers', 'pandas', 'sklearn', 'matplotlib') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_tasks_lists_label_sets_and_sizes(capsys, data_dir, monkeypatch):
    monkeypatch.setenv("PROBEKIT_DATA_DIR", str(data_dir))
    assert main(["tasks", "--split", "dev"]) == 0
    out = capsys.readouterr().out
    for name in ("aux_verb", "subject", "syntactic_role", "upos", "tense"):
        assert name in out
    assert "main_verb" in out and "labelled / left out" in out
    # EWT dev has 25,147 words; every word task labels all of them
    assert "25,147 / 0" in out


def test_models_lists_aliases(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "smollm2-135m" in out and "@random" in out


def test_unknown_config_key_exits_2_with_suggestion(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nmodels: [minilm]\nseedz: [0]\n")
    assert main(["run", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "seedz" in err and "Did you mean 'seeds'" in err and "Traceback" not in err


def test_dry_run_prints_resolved_config_with_overrides(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nmodels: [minilm]\n")
    assert main(["run", str(cfg), "--set", "seeds=[3,4]", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "- 3\n- 4" in out and "name: x" in out


def test_config_yaml_round_trip():
    import yaml

    from probekit.config import ExperimentConfig

    c = ExperimentConfig(models=["minilm", "smollm2-135m"], seeds=[0, 1, 2], limit={"train": 10})
    assert ExperimentConfig.from_dict(yaml.safe_load(c.to_yaml())) == c


@pytest.mark.parametrize("bad", [{"probes": ["lineer"]}, {"word_pooling": "frist"}, {"dtype": "float8"}])
def test_config_values_validated_with_did_you_mean(bad):
    from probekit.config import ExperimentConfig
    from probekit.errors import ConfigError

    with pytest.raises(ConfigError, match="Valid"):
        ExperimentConfig(**bad)


@pytest.mark.parametrize("argv, needle", [
    (["extract", "minilm", "--limit", "-3"], "--limit: -3 is below 1"),
    (["extract", "minilm", "--batch-tokens", "0"], "--batch-tokens: 0 is below 1"),
    (["train-probe", "minilm", "upos", "--dev-limit", "0"], "--dev-limit: 0 is below 1"),
    (["sweep", "configs/sweep.yaml", "--workers", "0"], "--workers: 0 is below 1"),
    (["sweep", "configs/sweep.yaml", "--workers", "two"], "--workers: 'two' is not a whole number"),
])
def test_cli_counts_below_their_minimum_are_refused(argv, needle, capsys):
    """A negative --limit sliced off the last sentences (Python's negative index) and --workers 0 ran one worker."""
    from probekit.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and needle in capsys.readouterr().err


def test_sweep_address_without_ray_is_refused(capsys):
    from probekit.cli import main

    rc = main(["-q", "sweep", "configs/sweep.yaml", "--address", "auto", "--dry-run"])
    assert rc == 1 and "--address auto is for --executor ray" in capsys.readouterr().err


def test_version_and_python_dash_m():
    from probekit._extras import DISTRIBUTION

    out = subprocess.run([sys.executable, "-m", "probekit", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("probekit ")
    assert DISTRIBUTION == "probekit-nlp"


def test_quiet_and_verbose_after_the_subcommand(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nmodels: [minilm]\n")
    assert main(["run", str(cfg), "--dry-run", "-q"]) == 0
    assert main(["run", str(cfg), "-v", "--dry-run"]) == 0
    assert main(["-q", "run", str(cfg), "--dry-run"]) == 0


def test_usage_errors_exit_2_runtime_errors_exit_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run"])  # no config: the command line itself is wrong
    assert info.value.code == 2
    assert main(["run", str(tmp_path / "missing.yaml")]) == 1


def test_every_option_has_help():
    import argparse

    from probekit.cli import build_parser

    def check(parser, where):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    check(sp, f"{where} {name}")
            elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                assert a.help, f"{where}: {a.option_strings or a.dest} has no help text"

    check(build_parser(), "probekit")


def test_predict_writes_csv_and_jsonl(tiny_bert_dir, ewt_dev, tmp_path, capsys):
    import json

    import pandas as pd

    from probekit.bundle import train_probe_bundle

    bundle = train_probe_bundle(str(tiny_bert_dir), "aux_verb", train=ewt_dev[:30], dev=ewt_dev[30:40],
                                store_root=tmp_path / "stores", device="cpu", progress=False)
    path = bundle.save(tmp_path / "b.probe")
    args = ["predict", str(path), "It has been raining .", "--whitespace", "--layer", "1"]
    assert main(args + ["--format", "csv", "-o", str(tmp_path / "p.csv")]) == 0
    df = pd.read_csv(tmp_path / "p.csv")
    assert len(df) == 5 and "word" in df.columns
    assert main(args + ["--format", "jsonl"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["word"] for r in lines] == ["It", "has", "been", "raining", "."]


def test_cache_list_and_clean_stay_inside_the_root(tmp_path, capsys):
    import json
    import os
    import time

    root = tmp_path / "stores"
    for name, model, age in (("a-dev-1", "minilm", 10), ("b-dev-2", "gpt2", 0)):
        d = root / name
        (d / "shard-00000").mkdir(parents=True)
        (d / "shard-00000" / "words.npy").write_bytes(b"x" * 2048)
        (d / "manifest.json").write_text(json.dumps({"model": {"name": model},
                                                    "data": {"dataset": "ud_ewt", "split": "dev"}}))
        t = time.time() - age * 86400
        os.utime(d / "manifest.json", (t, t))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "not-a-store").mkdir()
    assert main(["cache", "list", "--store-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "gpt2" in out and "2 store(s)" in out and "link" not in out
    assert main(["cache", "clean", "--store-dir", str(root), "--older-than", "5", "--dry-run"]) == 0
    assert "would delete 1 store(s)" in capsys.readouterr().out and (root / "a-dev-1").is_dir()
    assert main(["cache", "clean", "--store-dir", str(root), "--older-than", "5"]) == 0
    assert not (root / "a-dev-1").exists() and (root / "b-dev-2").is_dir()
    assert main(["cache", "clean", "--store-dir", str(root), "--model", "gpt2"]) == 0
    assert not (root / "b-dev-2").exists()
    assert main(["cache", "clean", "--store-dir", str(root)]) == 0
    assert (outside / "manifest.json").is_file() and (root / "not-a-store").is_dir()


def test_extract_goes_through_the_disk_guard(tiny_bert_dir, mini_sents, tmp_path, monkeypatch, capsys, caplog):
    import logging

    import probekit.activations.budget as budget
    import probekit.data.datasets as datasets

    monkeypatch.setattr(datasets, "load_split", lambda *a, **kw: mini_sents)  # no treebank needed
    argv = ["extract", str(tiny_bert_dir), "--store-dir", str(tmp_path / "stores"), "--device", "cpu"]
    monkeypatch.setattr(budget, "free_bytes", lambda path: 10**6)  # a fake free-space figure
    assert main(["-q", *argv]) == 1
    err = " ".join(capsys.readouterr().err.split())  # the message is wrapped at spaces, where the path ends
    assert "Not enough disk" in err and "dev 0.00 GB" in err and "--limit N" in err and "Traceback" not in err
    assert not list((tmp_path / "stores").glob("*/manifest.json"))  # refused before writing
    monkeypatch.setattr(budget, "free_bytes", lambda path: 10**12)
    with caplog.at_level(logging.INFO, logger="probekit.activations.budget"):
        assert main(argv) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "probekit.activations.budget"]
    assert len(said) == 1 and "Activation stores to write" in said[0] and "dev " in said[0]
    assert len(list((tmp_path / "stores").glob("*/manifest.json"))) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="probekit.activations.budget"):
        assert main(argv) == 0  # the store is reused: nothing to write
    assert "nothing to write" in caplog.records[-1].getMessage()
