"""Installable beside other tools (issue 19): distribution metadata, optional extras, shipped configs, the
resolved config written beside the results, --set with dotted keys, and model names."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from probekit.cli import main
from probekit.config import (
    ExperimentConfig,
    apply_overrides,
    find_config,
    resolve_config,
)
from probekit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_distribution_metadata_declares_what_is_imported():
    proj = _pyproject()["project"]
    assert proj["name"] == "probekit-nlp"  # "probekit" on the public index is another project
    deps = " ".join(proj["dependencies"])
    assert "transformers>=4.57,<6" in deps and "scipy" in deps
    for optional in ("adapters", "spacy", "gguf", "accelerate", "ray", "safetensors", "mlflow"):
        assert optional not in deps, optional
    extras = proj["optional-dependencies"]
    assert {"baselines", "annotate", "gguf", "ray", "track"} <= set(extras)
    assert all(extras.values()), "an empty extra"
    assert proj["license"] == "Apache-2.0" and "Apache License" in (REPO / "LICENSE").read_text()[:200]


def test_missing_extra_names_it(monkeypatch):
    from probekit._extras import MissingExtraError, require

    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ModuleNotFoundError
    with pytest.raises(MissingExtraError, match=r"pip install 'probekit-nlp\[annotate\]'"):
        require("spacy", extra="annotate", purpose="Annotating text")
    from probekit.data.annotate import load_spacy

    with pytest.raises(ConfigError, match=r"probekit-nlp\[annotate\]"):
        load_spacy()


def test_shipped_config_by_name_and_did_you_mean():
    assert find_config("quickstart") == find_config("quickstart.yaml")
    assert find_config("quickstart").name == "quickstart.yaml"
    with pytest.raises(ConfigError, match="Did you mean 'quickstart'"):
        find_config("quickstrat")
    assert resolve_config("smoke").name  # loads


def test_set_dotted_keys_and_mapping_merge(tmp_path):
    base = {"limit": {"train": 100, "dev": 20, "test": 30}, "mlp": {"lr": 0.1}}
    assert apply_overrides(base, {"limit.train": 50})["limit"] == {"train": 50, "dev": 20, "test": 30}
    # a mapping merges: dev and test limits are kept, not silently dropped
    assert apply_overrides(base, {"limit": {"train": 5}})["limit"] == {"train": 5, "dev": 20, "test": 30}
    assert apply_overrides(base, {"limit": None})["limit"] is None  # null resets to the default (no limits)
    assert base["limit"]["train"] == 100  # the input is not changed
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides(base, {"seeds.x": 1})
    with pytest.raises(ConfigError, match="Did you mean 'limit'"):
        apply_overrides(base, {"limt.train": 1})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nlimit: {train: 100, dev: 20, test: 30}\n")
    c = resolve_config(cfg, {"limit.train": 50, "mlp.lr": 0.01})
    assert c.limit == {"train": 50, "dev": 20, "test": 30} and c.mlp == {"lr": 0.01}
    assert resolve_config(cfg, {"limit": None}).limit == {}


def test_configs_round_trip_through_yaml():
    for name in ("quickstart", "smoke", "sweep", "baselines"):
        c = resolve_config(name)
        assert ExperimentConfig.from_dict(yaml.safe_load(c.to_yaml())) == c, name


def test_written_config_reproduces_results_byte_for_byte(tiny_bert_dir, data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(dict(
        name="repro", models=[str(tiny_bert_dir)], data_dir=str(data_dir), limit={"train": 40, "dev": 15, "test": 15},
        tasks=["aux_verb"], mdl=False, random_baseline=False, control_tasks=False, figures=["png"],
        store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "a"))))
    old = os.umask(0o022)
    try:
        assert main(["-q", "run", str(cfg)]) == 0
    finally:
        os.umask(old)
    first = tmp_path / "a" / "repro"
    # every file of the results folder is readable by collaborators (0644 under umask 022)
    modes = {f.relative_to(first).as_posix(): stat.S_IMODE(f.stat().st_mode) for f in first.rglob("*") if f.is_file()}
    assert modes and all(m == 0o644 for m in modes.values()), modes
    written = first / "config.yaml"
    assert written.is_file()
    # from the written config, into a fresh results folder: the probes are trained again
    assert main(["run", str(written), "--results-dir", str(tmp_path / "b"), "-q"]) == 0
    second = tmp_path / "b" / "repro"
    assert not (first / "runs").samefile(second / "runs")
    assert (second / "results.csv").read_bytes() == (first / "results.csv").read_bytes()


def test_bare_hub_ids_are_accepted_and_alias_typos_refused():
    from probekit.activations.models import resolve
    from probekit.errors import ModelError

    assert resolve("gpt2")[1] == "gpt2"
    assert resolve("bert-base-uncased")[1] == "bert-base-uncased"
    with pytest.raises(ModelError, match="Did you mean 'minilm'"):
        resolve("minilmm")


def test_probe_with_a_model_name_says_to_load_it():
    import probekit as pk

    with pytest.raises(ConfigError, match=r"pk.load_model\('minilm'\)"):
        pk.probe("minilm", "upos", {}, {})
