"""Any UD treebank by name: names -> release files, trust-on-first-use checksums, downloads from a loopback server."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import loopback
import pytest
from conftest import MINI_CONLLU

from probekit._io import cache_root, sha256_file
from probekit.config import ExperimentConfig
from probekit.data import datasets
from probekit.data.datasets import checksums_file, dataset_name, get_spec, load_split, locate
from probekit.data.ud_names import UD_RELEASE, UD_TREEBANKS
from probekit.errors import ConfigError, DataError
from probekit.runner.data import load_data

GSD = "UD_German-GSD"
TEMPLATE = "/{repo}/{tag}/{file}"


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment: cache in a tmp folder, no PROBEKIT_DATA_DIR or URL template, no memo of checked files."""
    monkeypatch.delenv("PROBEKIT_DATA_DIR", raising=False)
    monkeypatch.delenv("PROBEKIT_UD_URL_TEMPLATE", raising=False)
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "_checked", set())
    return monkeypatch


def _release(root: Path, text: str | None = None, splits=("train", "dev", "test")) -> Path:
    """A fake release of de_gsd laid out as the server's URL template expects: <root>/<repo>/<tag>/<file>."""
    folder = root / GSD / UD_RELEASE
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (folder / f"de_gsd-ud-{split}.conllu").write_text(text or MINI_CONLLU.read_text(encoding="utf-8"),
                                                         encoding="utf-8")
    return folder


def _cached(split: str = "dev") -> Path:
    return cache_root() / "data" / "ud" / GSD / f"de_gsd-ud-{split}.conllu"


# ------------------------------------------------------------------------------------------------ names

def test_a_treebank_by_code_or_folder_is_one_release():
    spec = get_spec("ud:de_gsd")
    assert get_spec(GSD) == get_spec("ud:UD_German-GSD") == get_spec("ud:ud_german-gsd") == spec
    assert (spec.name, spec.repo, spec.tag) == ("ud:de_gsd", GSD, UD_RELEASE)
    assert spec.files == {s: (f"de_gsd-ud-{s}.conllu", None) for s in ("train", "dev", "test")}
    # the download URL: the treebank's repository at the release tag
    assert datasets.DEFAULT_URL_TEMPLATE.format(repo=spec.repo, tag=spec.tag, file=spec.files["dev"][0]) == (
        "https://raw.githubusercontent.com/UniversalDependencies/UD_German-GSD/r2.16/de_gsd-ud-dev.conllu")


def test_the_pinned_treebanks_keep_their_names_and_checksums():
    assert dataset_name("ud:en_ewt") == dataset_name("UD_English-EWT") == "ud_ewt"
    assert get_spec("ud:en_pud") is datasets.DATASETS["ud_pud"]
    assert all(sha for _, sha in get_spec("ud:en_ewt").files.values())


def test_name_table_codes_are_the_file_prefixes_of_their_folders():
    """Every code is <language>_<treebank> with the treebank part the folder's name after the dash, in lower case
    (the UD file-naming rule the download relies on); no folder is listed twice."""
    for code, folder in UD_TREEBANKS.items():
        assert folder.startswith("UD_") and code.split("_", 1)[1] == folder.split("-", 1)[1].lower(), code
    assert len(set(UD_TREEBANKS.values())) == len(UD_TREEBANKS)


@pytest.mark.parametrize("name, needles", [
    ("ud:de_gds", ["Unknown UD treebank 'ud:de_gds'", "ud:de_gsd"]),
    ("UD_German-GDS", ["Unknown UD treebank", "ud:de_gsd"]),
    ("ud:de", ["names a language", "ud:de_gsd"]),
    ("ud:xx_none", ["Unknown UD treebank 'ud:xx_none'", "dataset: conllu"]),
    ("ud_ewtt", ["Unknown dataset 'ud_ewtt'", "'ud_ewt'", "ud:de_gsd"]),
])
def test_an_unknown_name_is_one_line_with_close_matches(name, needles):
    with pytest.raises(DataError) as info:
        get_spec(name)
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(dataset=name)
    assert "\n" not in str(info.value) and needles[-1] in str(info.value)


def test_config_takes_the_folder_name_and_records_the_one_name():
    assert ExperimentConfig(dataset=GSD).dataset == "ud:de_gsd"
    assert ExperimentConfig(dataset="ud:en_ewt").dataset == "ud_ewt"


# ------------------------------------------------------------------------------- download, trust on first use

def test_first_download_is_recorded_and_the_cached_copy_is_used(env, tmp_path):
    _release(tmp_path / "www")
    server = loopback.serve(tmp_path / "www")
    with server as base:
        env.setenv("PROBEKIT_UD_URL_TEMPLATE", base + TEMPLATE)
        path = locate("ud:de_gsd", "dev")
    assert server.requests == [f"/{GSD}/{UD_RELEASE}/de_gsd-ud-dev.conllu"]
    assert path == _cached() and path.read_bytes() == MINI_CONLLU.read_bytes()
    assert json.loads(checksums_file().read_text()) == {f"{GSD}/{UD_RELEASE}/de_gsd-ud-dev.conllu": sha256_file(path)}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary files left
    env.delenv("PROBEKIT_UD_URL_TEMPLATE")
    sents = load_split(GSD, "dev", download=False)  # found in the cache, no server
    assert len(sents) == 16 and sents[0].words


def test_a_later_download_that_differs_from_the_first_is_refused(env, tmp_path):
    www = tmp_path / "www"
    _release(www)
    with loopback.serve(www) as base:
        first = locate("ud:de_gsd", "dev", url_template=base + TEMPLATE)
    recorded = sha256_file(first)
    first.unlink()  # cache cleared, record kept
    _release(www, MINI_CONLLU.read_text(encoding="utf-8").replace("# sent_id", "# sent_id_changed", 1))
    with loopback.serve(www) as base:
        with pytest.raises(DataError) as info:
            locate("ud:de_gsd", "dev", url_template=base + TEMPLATE)
    msg = str(info.value)
    assert "\n" not in msg and recorded in msg and str(checksums_file()) in msg and "discarded" in msg
    assert list(first.parent.iterdir()) == []  # nothing kept
    with loopback.serve(www, loopback.CorruptHandler) as base:  # one flipped bit is caught too
        with pytest.raises(DataError, match=recorded):
            locate("ud:de_gsd", "dev", url_template=base + TEMPLATE)
    _release(www)  # the release as first seen
    with loopback.serve(www) as base:
        assert sha256_file(locate("ud:de_gsd", "dev", url_template=base + TEMPLATE)) == recorded


def test_a_cached_copy_changed_after_its_download_is_an_error(env, tmp_path):
    _release(tmp_path / "www")
    with loopback.serve(tmp_path / "www") as base:
        path = locate("ud:de_gsd", "test", url_template=base + TEMPLATE)
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="changed after its download. Delete it"):
        locate("ud:de_gsd", "test", download=False)


def test_a_missing_split_names_the_url_and_says_why(env, tmp_path):
    _release(tmp_path / "www", splits=("test",))
    with loopback.serve(tmp_path / "www") as base:
        with pytest.raises(DataError) as info:
            locate("ud:de_gsd", "dev", url_template=base + TEMPLATE)
    msg = str(info.value)
    assert f"{base}/{GSD}/{UD_RELEASE}/de_gsd-ud-dev.conllu" in msg and "HTTP 404" in msg
    assert "Not every UD treebank has train, dev and test" in msg and not checksums_file().exists()


def test_a_local_copy_that_differs_from_the_record_is_used_with_a_warning(env, tmp_path, caplog):
    _release(tmp_path / "www")
    with loopback.serve(tmp_path / "www") as base:
        locate("ud:de_gsd", "dev", url_template=base + TEMPLATE)
    mine = tmp_path / "mine" / GSD
    mine.mkdir(parents=True)
    (mine / "de_gsd-ud-dev.conllu").write_text(MINI_CONLLU.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert locate("ud:de_gsd", "dev", data_dir=tmp_path / "mine") == mine / "de_gsd-ud-dev.conllu"
    assert "is not the de_gsd-ud-dev.conllu file of UD_German-GSD r2.16" in caplog.text


def test_an_experiment_reads_a_named_treebank_from_a_data_folder(env, tmp_path):
    folder = tmp_path / "data" / "ud" / GSD
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        shutil.copy(MINI_CONLLU, folder / f"de_gsd-ud-{split}.conllu")
    cfg = ExperimentConfig(dataset=GSD, data_dir=str(tmp_path / "data"), limit={"dev": 5})
    data, fp = load_data(cfg)
    assert [len(data[r]) for r in ("train", "dev", "test")] == [16, 5, 16]
    assert fp["dev"]["sha256"] == sha256_file(MINI_CONLLU) and fp["dev"]["file"] == str(folder / "de_gsd-ud-dev.conllu")
