"""Run the notebooks headless with small-slice parameters and store them with their outputs.

``python notebooks/execute.py [NAME ...]`` (``make notebooks``) executes each notebook in a temporary folder with the
parameters of :data:`SMALL` injected after its ``parameters`` cell (papermill's convention: a cell tagged
``injected-parameters``), on the packaged models and the treebank in ``$PROBEKIT_DATA_DIR``, and writes it back in
place with its outputs, so that a reader on the web sees the tables and figures. The slices are small so that the
stored notebooks stay small and the run takes minutes; the numbers in them are those of the slices, not of the
quickstart. ``tests/test_notebooks.py`` runs them the same way (:func:`run_notebook`).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The parameters the stored outputs were made with (a reader sees them in the injected cell).
SMALL = {
    "01_quickstart": {"LIMIT": {"train": 300, "dev": 100, "test": 100}, "SEEDS": [0, 1]},
    "02_layerwise_analysis": {"LIMIT": {"train": 150, "dev": 50, "test": 50}, "SEEDS": [0],
                              "TASKS": ["aux_verb", "upos"]},
    "03_baselines": {"LIMIT": {"train": 60, "dev": 30, "test": 60}, "TRAIN_SENTENCES": 60, "EPOCHS": 1},
    "04_beyond_words": {"LIMIT": {"train": 300, "dev": 100, "test": 100}, "EPOCHS": 5},
    "05_does_the_model_use_it": {"LIMIT": {"train": 300, "dev": 100, "test": 100}, "LAYERS": [3, 5],
                                 "EFFECT_SENTENCES": 50, "MLP_EPOCHS": 10},
}


def kernel_spec(root: Path) -> str:
    """Write a kernelspec that runs this interpreter under ``root`` (found through JUPYTER_PATH); its name."""
    spec = root / "kernels" / "probekit-nb"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "probekit", "language": "python"}))
    os.environ["JUPYTER_PATH"] = str(root) + (os.pathsep + os.environ["JUPYTER_PATH"]
                                              if os.environ.get("JUPYTER_PATH") else "")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return "probekit-nb"


def run_notebook(path: Path, params: dict, cwd: Path, kernel: str, timeout: int = 1200):
    """Execute a notebook with ``params`` injected after its parameters cell; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]  # a stored run's
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("# Parameters injected by notebooks/execute.py (small slices)\n"
                                     + "\n".join(f"{k} = {v!r}" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(idx + 1, cell)
    NotebookClient(nb, kernel_name=kernel, timeout=timeout, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def main(names: list[str]) -> int:
    import nbformat

    names = names or list(SMALL)
    with tempfile.TemporaryDirectory() as tmp:
        kernel = kernel_spec(Path(tmp) / "jupyter")
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            nb = run_notebook(HERE / f"{name}.ipynb", SMALL[name], work, kernel)
            out = HERE / f"{name}.ipynb"
            tmp_out = out.with_suffix(".ipynb.tmp")
            nbformat.write(nb, tmp_out)
            tmp_out.replace(out)
            print(f"{name}: stored with outputs ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
