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
    assert main(["run", str(cfg)]) == 2
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
    assert rc == 2 and "--address auto is for --executor ray" in capsys.readouterr().err
