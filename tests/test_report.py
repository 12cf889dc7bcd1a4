"""Paper tables and figures (probekit.report) on a synthetic results table: fast, no model.

The table is built with :func:`probekit.results.table.row`: an encoder (6 blocks) and a decoder
(4 blocks), two tasks, three seeds, control tasks, majority rows, MDL rows (first seed) and
tuning-baseline rows. Accuracy peaks at a known layer per model × task, so the tables must
report that layer.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from probekit.results.table import row, write_csv

MODELS = {"enc": ("encoder", 6), "dec": ("decoder", 4)}
TASKS = {"aux_verb": 2, "upos": 17}
SEEDS = [0, 1, 2]
#: the layer where accuracy peaks, per model × task
PEAK = {("enc", "aux_verb"): 3, ("enc", "upos"): 2, ("dec", "aux_verb"): 4, ("dec", "upos"): 1}
TOTAL_PARAMS = {"enc": 22_000_000, "dec": 135_000_000}


def _acc(model: str, task: str, layer: int, seed: int) -> float:
    peak = PEAK[(model, task)]
    return 0.9 - 0.03 * abs(layer - peak) + 0.002 * seed + (0.02 if task == "aux_verb" else 0.0) - _dec(model)


def _dec(model: str) -> float:
    """The decoder is one point worse everywhere (so that the encoder's row is bold)."""
    return 0.01 if model == "dec" else 0.0


def synthetic_rows(with_baselines: bool = True) -> list[dict]:
    rows = []
    for model, (kind, n) in MODELS.items():
        for task, C in TASKS.items():
            common = dict(experiment="synth", model=model, model_kind=kind, model_hash="x", task=task, task_version=1,
                          level="word", pooling="first" if kind == "encoder" else "last", n_layers=n)
            for seed in SEEDS:
                rows.append(row(**common, method="probe", probe="majority", control=False, layer=None, seed=seed,
                                split="test", metric="accuracy", value=0.6, trainable_params=0, train_size=1000))
                for layer in range(n + 1):
                    a = _acc(model, task, layer, seed)
                    kw = dict(common, method="probe", probe="linear", layer=layer, seed=seed,
                              trainable_params=384 * C + C, train_size=1000, train_seconds=0.1)
                    rows.append(row(**kw, control=False, split="test", metric="accuracy", value=a))
                    rows.append(row(**kw, control=False, split="test", metric="macro_f1", value=a - 0.1))
                    rows.append(row(**kw, control=False, split="dev", metric="accuracy", value=a - 0.01))
                    rows.append(row(**kw, control=True, split="test", metric="accuracy", value=0.7 + 0.01 * layer))
                    if seed == SEEDS[0]:
                        # codelength smallest one layer below the accuracy peak
                        mdl = 50.0 + 5 * abs(layer - max(0, PEAK[(model, task)] - 1))
                        rows.append(row(**dict(kw, seed=seed), control=False, split="train",
                                        metric="mdl_codelength_kbits", value=mdl))
            if with_baselines:
                for method, params in (("finetune", TOTAL_PARAMS[model]), ("lora", TOTAL_PARAMS[model] // 200),
                                       ("prompt_tuning", 7680)):
                    for seed in SEEDS:
                        rows.append(row(**{**common, "pooling": common["pooling"]}, method=method, probe="",
                                        control=False, layer=-1, seed=seed, split="test", metric="accuracy",
                                        value=0.93 + 0.001 * seed, trainable_params=params,
                                        trainable_fraction=params / TOTAL_PARAMS[model], train_size=1000))
    return rows


@pytest.fixture()
def results_folder(tmp_path: Path) -> Path:
    from probekit.results.table import to_frames

    folder = tmp_path / "synth"
    folder.mkdir()
    df, _ = to_frames(synthetic_rows())
    write_csv(df, folder / "results.csv")
    return folder


def _parse_md(path: Path) -> list[dict]:
    lines = [l for l in path.read_text().splitlines() if l.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(header, [c.strip() for c in l.strip("|").split("|")])) for l in lines[2:]]


def test_report_tables_and_figures(results_folder: Path, capsys):
    """``probekit report FOLDER`` (the CLI over build_report) writes the tables and every figure."""
    from probekit.cli import main

    assert main(["-q", "report", str(results_folder), "--formats", "png"]) == 0
    paths = [Path(p) for p in capsys.readouterr().out.split()]
    names = {p.name for p in paths}
    assert {"best_layers.tex", "best_layers.md", "best_layers.csv", "layers.md"} <= names
    for stem in ("accuracy_by_layer", "heatmap", "relative_depth", "baselines_vs_params", "report_upos"):
        assert f"{stem}.png" in names, stem
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000

    md = _parse_md(results_folder / "tables" / "best_layers.md")
    assert len(md) == len(PEAK)
    for r in md:
        model, task = r["Model"], r["Task"]
        assert int(r["Best layer"]) == PEAK[(model, task)]
        # mean over seeds 0, 1, 2 at the peak: 0.9 + 0.002 + task bonus
        want = 100 * (0.902 + (0.02 if task == "aux_verb" else 0.0) - _dec(model))
        acc, ci = (float(x) for x in re.sub(r"\*", "", r["Acc. (%)"]).split(" ± "))
        assert acc == pytest.approx(want, abs=0.05)
        assert ci > 0  # three seeds give a CI
        assert float(r["Maj. (%)"]) == pytest.approx(60.0)
        control = 0.7 + 0.01 * PEAK[(model, task)]
        assert float(r["Sel. (pts)"]) == pytest.approx(100 * (want / 100 - control), abs=0.05)
        assert int(r["MDL layer"]) == max(0, PEAK[(model, task)] - 1)
    # best accuracy per task in bold: the encoder's
    assert {(r["Model"], r["Task"]) for r in md if "**" in r["Acc. (%)"]} == {("enc", t) for t in TASKS}

    tex = (results_folder / "tables" / "best_layers.tex").read_text()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\label{tab:synth-best-layers}"):
        assert cmd in tex
    assert r"aux\_verb" in tex and "aux_verb" not in tex.replace(r"aux\_verb", "")
    body = [l for l in tex.splitlines() if l.endswith(r"\\") and "$\\pm$" in l]
    assert len(body) == len(PEAK)  # one row per model x task, same as the Markdown table
    for r in md:  # the same numbers in both tables
        assert r["Acc. (%)"].replace("**", "").replace(" ± ", r" $\pm$ ") in tex


def test_pdf_embeds_truetype_fonts(results_folder: Path):
    from probekit.report.build import load_tables
    from probekit.report.figures import figure_paths, heatmap

    _, summary = load_tables(results_folder)
    heatmap(summary, results_folder / "figures" / "hm", formats=("pdf", "svg"))
    out = figure_paths(results_folder / "figures" / "hm", ("pdf", "svg"))
    pdf = out[0].read_bytes()
    assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf and b"/Type3" not in pdf
    assert out[1].read_text().lstrip().startswith("<?xml")
    heatmap(summary, results_folder / "figures" / "hm2", formats=("pdf",))
    assert (results_folder / "figures" / "hm2.pdf").read_bytes() == pdf  # no creation date: byte-reproducible


def test_baselines_vs_params_needs_tuning_rows(tmp_path: Path):
    from probekit.report.figures import baselines_vs_params
    from probekit.results.table import to_frames

    df, _ = to_frames(synthetic_rows(with_baselines=False))
    assert baselines_vs_params(df, tmp_path / "b", formats=("png",)) is None
    assert not list(tmp_path.iterdir())
    df2, _ = to_frames(synthetic_rows())
    baselines_vs_params(df2, tmp_path / "b", formats=("png",))
    assert [p.name for p in tmp_path.iterdir()] == ["b.png"] and (tmp_path / "b.png").stat().st_size > 5000


def test_derived_probe_fraction(tmp_path: Path, monkeypatch):
    """Probe rows without trainable_fraction get params / (model size derived from the tuning rows)."""
    import matplotlib.axes

    from probekit.report.figures import baselines_vs_params
    from probekit.results.table import to_frames

    seen = []
    orig = matplotlib.axes.Axes.scatter

    def spy(self, x, y, *a, **kw):
        seen.append((self, np.asarray(x, dtype=float)))
        return orig(self, x, y, *a, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
    df, _ = to_frames(synthetic_rows())
    baselines_vs_params(df, tmp_path / "b", formats=("png",))
    got = {ax.get_title(): x for ax, x in seen}  # titles are set after the points are drawn
    assert np.allclose(got["enc: upos"], (384 * 17 + 17) / TOTAL_PARAMS["enc"])
    assert np.allclose(got["dec: aux_verb"], (384 * 2 + 2) / TOTAL_PARAMS["dec"])
    assert len(got["dec: aux_verb"]) == MODELS["dec"][1] + 1  # every layer, connected


def test_report_errors(tmp_path: Path):
    from probekit.errors import ConfigError, DataError
    from probekit.report.build import build_report

    with pytest.raises(DataError, match="No results folder"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="results.csv"):
        build_report(tmp_path / "empty")
    with pytest.raises(ConfigError, match="Did you mean 'png'"):
        build_report(tmp_path / "empty", formats=["pgn"])


def test_latex_escape():
    from probekit.report.latex import latex_escape

    assert latex_escape("a_b & 50% #1 {x} $y$ ~ ^") == r"a\_b \& 50\% \#1 \{x\} \$y\$ \textasciitilde{} \textasciicircum{}"
    assert latex_escape("minilm@random") == "minilm@random"


def test_report_of_tuning_rows_only(tmp_path: Path):
    """A results table with tuning baselines only still gives (empty) tables, no crash."""
    from probekit.report.build import build_report
    from probekit.results.table import to_frames

    rows = [r for r in synthetic_rows() if r["method"] != "probe"]
    df, _ = to_frames(rows)
    folder = tmp_path / "tuning"
    folder.mkdir()
    write_csv(df, folder / "results.csv")
    paths = build_report(folder, figures=False)
    assert {p.name for p in paths} == {"best_layers.tex", "best_layers.md", "best_layers.csv"}
    assert r"\bottomrule" in (folder / "tables" / "best_layers.tex").read_text()



def test_sentence_task_layers_are_one_row_per_pooling(tmp_path: Path):
    """A sentence task is probed once per pooling; the layer table and the heatmap must not average them."""
    import pandas as pd

    from probekit.errors import DataError
    from probekit.report.figures import heatmap
    from probekit.report.tables import layer_table, summarize
    from probekit.results.table import to_frames

    rows = synthetic_rows(with_baselines=False)
    common = dict(experiment="synth", model="enc", model_kind="encoder", model_hash="x", task="tense", task_version=1,
                  level="sentence", n_layers=6, method="probe", probe="linear", control=False, split="test",
                  metric="accuracy", trainable_params=770, train_size=100)
    value = {"cls": 0.6, "mean": 0.8}
    for pooling, v in value.items():
        for layer in range(7):
            rows.append(row(**common, pooling=pooling, layer=layer, seed=0, value=v + 0.01 * layer))
    summary = summarize(to_frames(rows)[0])
    t = layer_table(summary, model="enc")
    assert t.loc[("enc", "tense (cls)"), 3] == pytest.approx(0.63)
    assert t.loc[("enc", "tense (mean)"), 3] == pytest.approx(0.83)
    assert t.loc[("enc", "upos"), PEAK[("enc", "upos")]] == pytest.approx(np.mean([_acc("enc", "upos", 2, s)
                                                                                   for s in SEEDS]))
    assert heatmap(summary, tmp_path / "hm", formats=("png",))
    # two experiments' rows for one cell are an error, not an average
    twice = pd.concat([summary, summary.assign(experiment="other")])
    with pytest.raises(DataError, match="one experiment"):
        layer_table(twice)


def test_best_layer_is_chosen_on_dev_and_scored_on_test():
    from probekit.report.tables import best_layer_table, summarize
    from probekit.results.table import to_frames

    common = dict(experiment="e", model="m", model_kind="encoder", model_hash="x", task="upos", task_version=1,
                  level="word", pooling="first", n_layers=3, method="probe", probe="linear", control=False,
                  trainable_params=10, train_size=100)
    test = {0: 0.70, 1: 0.80, 2: 0.81, 3: 0.60}  # layer 2 wins on test by a hair ...
    dev = {0: 0.71, 1: 0.82, 2: 0.79, 3: 0.61}   # ... layer 1 on dev
    rows = [row(**common, layer=k, seed=0, split=split, metric="accuracy", value=v)
            for split, vals in (("test", test), ("dev", dev)) for k, v in vals.items()]
    t = best_layer_table(summarize(to_frames(rows)[0]))
    assert (str(t.loc[0, "best_layer"]), t.loc[0, "chosen_on"]) == ("1", "dev")
    assert t.loc[0, "test_acc"] == pytest.approx(0.80)
    t = best_layer_table(summarize(to_frames([r for r in rows if r["split"] == "test"])[0]))
    assert (str(t.loc[0, "best_layer"]), t.loc[0, "chosen_on"], t.loc[0, "test_acc"]) == ("2", "test", 0.81)


@pytest.mark.parametrize("damage, needle", [
    (lambda b: b"", "is empty"),
    (lambda b: b[: len(b) * 2 // 3], "cut short"),
    (lambda b: b"\n".join(ln + (b",x,y" if i == 5 else b"") for i, ln in enumerate(b.split(b"\n"))),
     "not a readable results table"),
    (lambda b: b.replace(b",value,", b",valeur,", 1), "lacks the column(s) ['value']"),
])
def test_damaged_results_table_is_a_clear_error(results_folder: Path, tmp_path: Path, damage, needle):
    """A truncated or edited results.csv must not become a report of part of the rows (a partial copy did)."""
    from probekit.errors import DataError
    from probekit.results.table import load_results

    good = (results_folder / "results.csv").read_bytes()
    assert len(load_results(results_folder)) == good.count(b"\n") - 1
    bad = tmp_path / "results.csv"
    bad.write_bytes(damage(good))
    with pytest.raises(DataError, match=re.escape(needle)) as info:
        load_results(bad)
    assert str(bad) in str(info.value) and "probekit run" in str(info.value)


def test_large_counts_are_written_whole(tmp_path: Path):
    import pandas as pd

    from probekit.results.table import load_results, to_frames

    rows = [row(experiment="e", model="m", model_kind="encoder", model_hash="x", task="upos", task_version=1,
                level="word", method="finetune", probe="", control=False, pooling="first", layer=-1, n_layers=6,
                seed=0, split="test", metric="accuracy", value=0.97, trainable_params=22_566_146, train_size=50_331),
            row(experiment="e", model="m", model_kind="encoder", model_hash="x", task="upos", task_version=1,
                level="word", method="probe", probe="linear", control=False, pooling="first", layer=None, n_layers=6,
                seed=0, split="test", metric="left_out", value=3.0)]
    df, _ = to_frames(rows)
    write_csv(df, tmp_path / "results.csv")
    back = load_results(tmp_path)
    assert back["trainable_params"].dropna().tolist() == [22_566_146]
    assert "22566146" in (tmp_path / "results.csv").read_text()
    assert pd.isna(back["layer"]).sum() == 1


def test_tables_show_sentence_interval_and_f1_selectivity():
    """The sentence-bootstrap interval and the F1 selectivity reach the best-layer table, LaTeX and Markdown."""
    import pandas as pd

    from probekit.report.latex import best_layer_latex, best_layer_markdown
    from probekit.report.tables import best_layer_table, summarize

    rows = []
    for layer in range(3):
        for control in (False, True):
            for metric, v in (("accuracy", 0.9 + 0.01 * layer - 0.2 * control), ("pos_f1", 0.6 - 0.3 * control)):
                rows.append(row(experiment="e", model="enc", model_kind="encoder", task="aux_verb", level="word",
                                method="probe", probe="linear", control=control, pooling="first", layer=layer,
                                n_layers=2, seed=0, split="test", metric=metric, value=v))
        rows.append(row(experiment="e", model="enc", model_kind="encoder", task="aux_verb", level="word",
                        method="probe", probe="linear", control=False, pooling="first", layer=layer, n_layers=2,
                        seed=0, split="dev", metric="accuracy", value=0.5 + 0.1 * (layer == 1)))
    s = summarize(pd.DataFrame(rows))
    sel = s[s["metric"] == "selectivity_f1"]
    assert sel["mean"].to_numpy() == pytest.approx([0.3, 0.3, 0.3])
    test_acc = (s["metric"] == "accuracy") & (s["split"] == "test") & (s["control"].astype(str) == "False")
    s = s.assign(sent_lo=np.where(test_acc, s["mean"] - 0.004, np.nan), sent_hi=np.where(test_acc, s["mean"] + 0.006,
                                                                                         np.nan))
    t = best_layer_table(s)
    assert str(t["best_layer"].iloc[0]) == "1" and t["sent_lo"].iloc[0] == pytest.approx(0.906)
    md = best_layer_markdown(t)
    assert "95% CI (sent.)" in md and "[90.6, 91.6]" in md and "Sel. F1 (pts)" in md and "| 30.0 |" in md
    assert r"95\% CI (sent.)" in best_layer_latex(t)


# ------------------------------------------------------------------------------------------- figures as objects

def _summary():
    from probekit.report.tables import summarize
    from probekit.results.table import to_frames

    return summarize(to_frames(synthetic_rows(with_baselines=False))[0])


def test_figures_return_figures_and_save_only_when_asked(tmp_path: Path):
    from matplotlib.figure import Figure

    from probekit.report import figures as f

    summary = _summary()
    accuracy_by_layer = f.accuracy_by_layer
    for fig in (accuracy_by_layer(summary), f.heatmap(summary), f.relative_depth(summary),
                f.task_report(summary, "upos")):
        assert isinstance(fig, Figure)
    assert not list(tmp_path.iterdir())
    fig = accuracy_by_layer(summary, tmp_path / "acc", ("png",))
    assert isinstance(fig, Figure) and [p.name for p in tmp_path.iterdir()] == ["acc.png"]


def test_draw_into_your_own_axes():
    import matplotlib
    from matplotlib.figure import Figure

    from probekit.errors import ConfigError
    from probekit.report.figures import accuracy_by_layer, heatmap

    summary = _summary()
    mine = Figure(figsize=(6, 3))
    left, right = mine.subplots(1, 2)
    right.plot([0, 1], [0, 1], label="my line")
    assert accuracy_by_layer(summary, ax=left, model="enc") is mine
    assert {ln.get_label() for ln in left.get_lines()} >= set(TASKS)  # one line per task, in my axes
    assert [ln.get_label() for ln in right.get_lines()] == ["my line"]  # the other axes untouched
    assert not mine.legends  # the legend went into `left`, not over my figure
    assert left.get_legend() is not None
    with pytest.raises(ConfigError, match="model=NAME"):
        accuracy_by_layer(summary, ax=right)  # two models, one axes
    hm = Figure()
    ax = hm.subplots()
    assert heatmap(summary, models=["dec"], ax=ax) is hm
    assert isinstance(ax.images[0], matplotlib.image.AxesImage)


def test_legend_lists_only_what_is_drawn():
    from probekit.report.figures import accuracy_by_layer

    summary = _summary()
    texts = {t.get_text() for t in accuracy_by_layer(summary).legends[0].get_texts()}
    assert "majority class" in texts and "random weights" not in texts  # no @random model in this table
    no_majority = summary[summary["probe"] != "majority"]
    texts = {t.get_text() for t in accuracy_by_layer(no_majority).legends[0].get_texts()}
    assert texts == set(TASKS)


def test_heatmap_boxes_the_dev_chosen_layer():
    from matplotlib.patches import Rectangle

    from probekit.report.figures import heatmap

    summary = _summary()
    # dev says layer 5 for enc/upos, test peaks at layer 2
    dev = (summary["model"] == "enc") & (summary["task"] == "upos") & (summary["split"] == "dev") \
        & (summary["probe"] == "linear") & (summary["metric"] == "accuracy") & (summary["control"].astype(str) == "False")
    summary.loc[dev, "mean"] = 0.5
    summary.loc[dev & (summary["layer"].astype(str) == "5"), "mean"] = 0.99
    fig = heatmap(summary, models=["enc"])
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    boxes = {rows[round(r.get_y() + 0.5)]: round(r.get_x() + 0.5) for r in ax.patches if isinstance(r, Rectangle)}
    assert boxes == {"upos": 5, "aux_verb": PEAK[("enc", "aux_verb")]}


def test_one_column_figure_is_3_25_inches_wide(tmp_path: Path):
    from probekit.report.figures import accuracy_by_layer

    summary = _summary()
    one = summary[summary["model"] == "enc"]
    accuracy_by_layer(one, tmp_path / "acc", ("pdf",))
    box = re.search(rb"/MediaBox \[\s*([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", (tmp_path / "acc.pdf").read_bytes())
    width_in = (float(box.group(3)) - float(box.group(1))) / 72
    assert width_in == pytest.approx(3.25, abs=0.01)

