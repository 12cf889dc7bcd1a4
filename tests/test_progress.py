"""Progress bars: text with an ETA on stderr, silent when disabled, no ipywidgets warning in Jupyter without it."""
from __future__ import annotations

import sys
import types
import warnings

from probekit._progress import _tqdm_class, progress_bar, progress_iter


def test_text_bar_on_stderr_with_eta_and_silent_when_disabled(capsys):
    with progress_bar(4, "probe tiny", unit="group") as bar:
        for _ in range(4):
            bar.update(1)
        bar.refresh()  # updates this fast are drawn at most every 0.1 s
    err = capsys.readouterr().err
    assert "probe tiny" in err and "4/4" in err and "<" in err  # elapsed<remaining
    assert list(progress_iter(range(3), "quiet", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_jupyter_without_ipywidgets_falls_back_to_text_without_warning(monkeypatch):
    class Shell:
        config = {"IPKernelApp": {}}

    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: Shell()
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))  # a kernel
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed
    import importlib

    from tqdm.std import tqdm as text_tqdm

    def fresh_import(import_it) -> tuple[type, list[str]]:
        for name in ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            cls = import_it()
        return cls, [str(w.message) for w in seen]

    try:
        _, plain = fresh_import(lambda: importlib.import_module("tqdm.auto").tqdm)
        assert any("IProgress" in m for m in plain)  # what a bare tqdm.auto does here
        cls, ours = fresh_import(_tqdm_class)
        assert not any("IProgress" in m for m in ours), ours
        assert issubclass(cls, text_tqdm) and "notebook" not in cls.__module__
    finally:
        for name in ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook"):
            sys.modules.pop(name, None)  # the next import decides again in the real environment


def test_probing_in_python_shows_a_bar_with_eta_unless_told_not_to(tmp_path, tiny_bert_dir, mini_sents, capsys):
    import probekit as pk

    lm = pk.load_model(str(tiny_bert_dir), device="cpu")
    store = pk.extract_store(lm, mini_sents, split="all", store_root=tmp_path, progress=False)
    stores, sents = dict.fromkeys(("train", "dev", "test"), store), dict.fromkeys(("train", "dev", "test"), mini_sents)
    capsys.readouterr()
    pk.probe(lm, "aux_verb", stores, sents, control_tasks=False, progress=False)
    assert capsys.readouterr().err == ""
    pk.probe(lm, "aux_verb", stores, sents, control_tasks=False)  # on by default: notebooks show it
    err = capsys.readouterr().err
    # the bar over the 3 layers with its elapsed<left field (how far it is drawn depends on speed: tqdm redraws at
    # most every 0.1 s and clears the bar at the end)
    assert f"probe {lm.name} aux_verb" in err and "/3 [" in err and "layer/s" in err and "<" in err
