"""The notebooks in notebooks/: stored with the outputs of a small-slice run, public API only, and they run headless.

Execution (marked slow) goes through nbclient with a kernel on this interpreter, after injecting
small-slice parameters papermill-style (a cell tagged ``injected-parameters`` right after the
cell tagged ``parameters``): ``notebooks/execute.py``'s :func:`run_notebook`, which also made the stored outputs.
Each notebook runs in a temporary folder.
"""
from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import pytest

import tiny

_spec = importlib.util.spec_from_file_location("notebook_execute", tiny.repo_root() / "notebooks" / "execute.py")
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)
run_notebook = execute.run_notebook

NOTEBOOKS = sorted((tiny.repo_root() / "notebooks").glob("*.ipynb"))
NAMES = ["01_quickstart", "02_layerwise_analysis", "03_baselines", "04_beyond_words", "05_does_the_model_use_it"]


def _read(path: Path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4)


def test_notebooks_present():
    assert [p.stem for p in NOTEBOOKS] == NAMES


def _python(source: str) -> str:
    """A code cell without its IPython line magics (``%matplotlib inline``): the rest must be Python."""
    return "\n".join(line for line in source.splitlines() if not line.startswith("%"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_with_small_outputs(path: Path):
    """Stored with the outputs of notebooks/execute.py's small-slice run (no error, under 1.5 MB), one parameters
    cell, public probekit API only."""
    nb = _read(path)
    import nbformat

    nbformat.validate(nb)
    assert path.stat().st_size < 1.5e6, f"{path.name} is {path.stat().st_size} bytes"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs is not None for c in code) and any(c.outputs for c in code), "run notebooks/execute.py"
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0].cell_type == "code"
    assert nb.cells.index(params[0]) < 3, "the parameters cell comes first"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and nb.cells.index(injected[0]) == nb.cells.index(params[0]) + 1
    for k, v in execute.SMALL[path.stem].items():
        assert f"{k} = {v!r}" in injected[0].source, "the stored outputs come from notebooks/execute.py's SMALL"
    for c in code:
        src = c.source
        assert not re.search(r"from probekit[\w.]* import [^\n]*\b_\w", src), src
        assert not re.search(r"probekit(\.\w+)*\._\w", src), src
        assert not re.search(r"\b(pk|probekit)\._\w", src), src
        compile(_python(src), f"{path.name}", "exec")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_names_exist(path: Path):
    """Every probekit name a notebook uses exists (catches API renames without running the notebook)."""
    import ast
    import importlib

    import probekit

    for c in _read(path).cells:
        if c.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(_python(c.source))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("probekit"):
                mod = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(mod, alias.name), f"{path.name}: {node.module}.{alias.name} does not exist"
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pk":
                assert hasattr(probekit, node.attr), f"{path.name}: probekit.{node.attr} does not exist"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory) -> str:
    """A kernelspec running this interpreter (the venv), found through JUPYTER_PATH."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import os

    old = os.environ.get("JUPYTER_PATH")
    yield execute.kernel_spec(tmp_path_factory.mktemp("jupyter"))
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def _text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", ""))
            data = o.get("data", {})
            out.append(data.get("text/plain", ""))
            out.append(data.get("text/html", ""))
    return "\n".join(out)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def shared(tmp_path_factory, data_dir) -> dict:
    """Common parameters: the gold data and one store folder for all notebooks (stores are reused)."""
    return {"DATA_DIR": str(data_dir), "STORE_DIR": str(tmp_path_factory.mktemp("nb_stores"))}


@pytest.mark.slow
def test_quickstart_runs(kernel_name, shared, tmp_path):
    t0 = time.time()
    nb = run_notebook(tiny.repo_root() / "notebooks" / "01_quickstart.ipynb",
                      {**shared, "LIMIT": {"train": 120, "dev": 40, "test": 40}, "SEEDS": [0, 1],
                       "OUT_DIR": str(tmp_path / "out")}, tmp_path, kernel_name)
    text = _text(nb)
    assert "ActivationStore" in text and "best_layer" in text
    assert _images(nb) >= 1
    assert (tmp_path / "out" / "minilm_upos_by_layer.pdf").is_file()
    print(f"01_quickstart: {time.time() - t0:.0f} s")


@pytest.mark.slow
def test_layerwise_runs(kernel_name, shared, tmp_path, tiny_bert_dir, tiny_llama_dir):
    """On the tiny BERT and Llama (the notebook's MiniLM and SmolLM2-135M, each with its random-weights
    twin and MDL, take 6+ minutes on a shared 2-core CPU even on small slices; 01 and 03 run MiniLM)."""
    t0 = time.time()
    encoder, decoder = str(tiny_bert_dir), str(tiny_llama_dir)
    nb = run_notebook(tiny.repo_root() / "notebooks" / "02_layerwise_analysis.ipynb",
                      {**shared, "ENCODER": encoder, "DECODER": decoder, "TASKS": ["aux_verb", "upos"],
                       "LIMIT": {"train": 120, "dev": 40, "test": 40}, "SEEDS": [0, 1],
                       "RESULTS_DIR": str(tmp_path / "results")}, tmp_path, kernel_name)
    text = _text(nb)
    assert _images(nb) >= 3
    folder = tmp_path / "results" / "notebook_layerwise"
    assert (folder / "results.csv").is_file() and (folder / "figures" / "relative_depth.png").is_file()
    import pandas as pd

    df = pd.read_csv(folder / "results.csv")
    assert {encoder, decoder, f"{encoder}@random", f"{decoder}@random"} <= set(df["model"])
    assert set(df[df["model"] == decoder]["model_kind"]) == {"decoder"}
    assert (df["metric"] == "mdl_codelength_kbits").any()
    try:
        import probekit.bundle  # noqa: F401
        assert "predicted" in text and "probability" in text  # the probe labelled new sentences
    except ImportError:
        assert "not available" in text
    print(f"02_layerwise_analysis: {time.time() - t0:.0f} s")


@pytest.mark.slow
def test_baselines_runs(kernel_name, shared, tmp_path):
    t0 = time.time()
    nb = run_notebook(tiny.repo_root() / "notebooks" / "03_baselines.ipynb",
                      {**shared, "LIMIT": {"train": 30, "dev": 15, "test": 30}, "TRAIN_SENTENCES": 30,
                       "EPOCHS": 1, "RESULTS_DIR": str(tmp_path / "results")}, tmp_path, kernel_name)
    assert _images(nb) >= 1
    folder = tmp_path / "results" / "notebook_baselines"
    import pandas as pd

    df = pd.read_csv(folder / "results.csv")
    methods = set(df[(df["split"] == "test") & (df["metric"] == "accuracy")]["method"])
    assert methods == {"probe", "finetune", "prompt_tuning", "prefix_tuning", "adapter", "lora"}
    assert (folder / "figures" / "baselines_vs_params.pdf").is_file()
    assert r"\toprule" in (folder / "tables" / "best_layers.tex").read_text()
    print(f"03_baselines: {time.time() - t0:.0f} s")


@pytest.mark.slow
def test_beyond_words_runs(kernel_name, shared, tmp_path):
    t0 = time.time()
    nb = run_notebook(tiny.repo_root() / "notebooks" / "04_beyond_words.ipynb",
                      {**shared, "LIMIT": {"train": 60, "dev": 30, "test": 30}, "EPOCHS": 1,
                       "RESULTS_DIR": str(tmp_path / "results")}, tmp_path, kernel_name)
    import pandas as pd

    df = pd.read_csv(tmp_path / "results" / "notebook_beyond_words" / "results.csv")
    assert {"tree_distance", "dep_arc", "dep_label", "subject_span"} <= set(df["task"])
    assert (df["metric"] == "expected_layer").any() and _images(nb) >= 1
    print(f"04_beyond_words: {time.time() - t0:.0f} s")


@pytest.mark.slow
def test_erasure_notebook_runs(kernel_name, shared, tmp_path):
    pytest.importorskip("concept_erasure")
    t0 = time.time()
    nb = run_notebook(tiny.repo_root() / "notebooks" / "05_does_the_model_use_it.ipynb",
                      {**shared, "LIMIT": {"train": 60, "dev": 30, "test": 30}, "LAYERS": [3, 5],
                       "EFFECT_SENTENCES": 10, "MLP_EPOCHS": 2, "RESULTS_DIR": str(tmp_path / "results")},
                      tmp_path, kernel_name)
    import pandas as pd

    folder = tmp_path / "results" / "notebook_erasure"
    df = pd.read_csv(folder / "results.csv")
    assert {"erasure:leace", "intervention:leace"} <= set(df["method"]) and {"aux_verb", "upos"} <= set(df["task"])
    assert (folder / "figures" / "erasure_minilm_aux_verb.png").is_file()
    report = "".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))
    assert "| Linear erased (%) |" in report and "Δ acc. upos at l+2 (pts)" in report
    assert _images(nb) >= 2
    print(f"05_does_the_model_use_it: {time.time() - t0:.0f} s")
