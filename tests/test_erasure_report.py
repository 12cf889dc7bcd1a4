"""The erasure study's report: `probekit run` draws a figure per model x task, `probekit report` writes a row per
layer (probe accuracy, selectivity, MDL, the sanity probes, every effect with its control) in LaTeX and Markdown, and
only the columns the results hold; on tiny models and tests/data/mini.conllu."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import MINI_CONLLU

from probekit.report.erasure_tables import effect_name, erasure_latex, erasure_markdown, erasure_table

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tmp_path, model_dir, **kw):
    from probekit.config import ExperimentConfig

    base = dict(name="e", models=[str(model_dir)], dataset="conllu", seeds=[0],
                files={r: str(MINI_CONLLU) for r in ("train", "dev", "test")}, tasks=["aux_verb", "subject"],
                dtype="float32", random_baseline=False, store_dir=str(tmp_path / "stores"),
                results_dir=str(tmp_path / "results"), device="cpu", mlp={"max_epochs": 2}, figures=["png"])
    base.update(kw)
    return ExperimentConfig(**base)


def _summary(rows):
    import pandas as pd

    from probekit.report.tables import summarize
    from probekit.results.table import row

    return summarize(pd.DataFrame([row(experiment="x", model="m", model_kind="encoder", task="t", level="word",
                                       seed=0, **r) for r in rows]))


def test_table_pairs_each_effect_with_its_control_and_names_later_layers_by_offset():
    """A hand-made summary: the effect at the later layer l+k becomes the column `+k`, the control sits beside the
    eraser's value, and what is absent (selectivity, MDL, MLP, loss) is not a column."""
    rows = [dict(method="probe", probe="linear", pooling="first", site="resid_post", layer=k, split="test",
                 control=False, metric="accuracy", value=0.9 + k / 100) for k in (0, 1)]
    for k in (0, 1):
        rows += [dict(method="erasure:leace", probe=p, layer=k, split="test", control=False, metric="accuracy",
                      value=v) for p, v in (("linear", 0.70), ("majority", 0.70))]
        rows += [dict(method="intervention:leace", layer=k, split="test", control=c, metric=m, value=v)
                 for c, base in ((False, -0.20), (True, -0.01))
                 for m, v in ((f"accuracy_change:u:layer{k + 1}", base), (f"accuracy_change:u:layer{k + 1}_ci_low",
                                                                          base - 0.05),
                              (f"accuracy_change:u:layer{k + 1}_ci_high", base + 0.05))]
    t = erasure_table(_summary(rows))
    assert list(t["layer"]) == [0, 1]
    assert t["accuracy"].tolist() == pytest.approx([0.90, 0.91])
    assert t["accuracy_change:u:+1"].tolist() == pytest.approx([-0.2, -0.2])
    assert t["accuracy_change:u:+1_control_lo"].tolist() == pytest.approx([-0.06, -0.06])
    assert not {"selectivity", "mdl_kbits", "mlp_after", "loss_change_next"} & set(t.columns)
    md = erasure_markdown(t)
    assert "| Layer | Rank |" not in md  # no rank rows were given: no rank column
    assert "| 0 | 90.0 | 70.0 | 70.0 | -20.0 [-25.0, -15.0] | -1.0 [-6.0, +4.0] |" in md
    assert "Sel." not in md and "MDL" not in md and "MLP" not in md
    assert r"-20.0 [-25.0, -15.0] & -1.0 [-6.0, +4.0] \\" in erasure_latex(t)
    assert effect_name("accuracy_change:subject:layer5", 3) == "accuracy_change:subject:+2"
    assert erasure_table(_summary(rows[:2])).empty  # probe rows only: no erasure table


def test_run_draws_erasure_figures_and_report_writes_a_row_per_layer(tmp_path, tiny_bert_dir):
    pytest.importorskip("concept_erasure")
    import pandas as pd

    from probekit.report.build import build_report
    from probekit.runner.experiment import run_experiment

    cfg = _cfg(tmp_path, tiny_bert_dir, control_tasks=True, mdl=True,
               erasure={"effect_sentences": 8, "later": [1], "sanity_mlp": True})
    res = run_experiment(cfg, progress=False)
    name = str(tiny_bert_dir).replace("/", "_")
    for task in ("aux_verb", "subject"):
        assert res.folder / "figures" / f"erasure_{name}_{task}.png" in res.figures
        assert (res.folder / "figures" / f"erasure_{name}_{task}.png").stat().st_size > 10_000
    out = build_report(res.folder, formats=["png"])
    tables = res.folder / "tables"
    assert {tables / "erasure.md", tables / "erasure.tex", tables / "layers.md"} <= set(out)
    md = (tables / "erasure.md").read_text()
    for header in ("Acc. (%)", "Sel. (pts)", "MDL (kbits)", "Maj. (%)", "Linear erased (%)", "MLP erased (%)",
                   "Δ acc. subject at l+1 (pts)", "Δ acc. aux_verb at l+1 (pts)", "control", "Emb. cosine"):
        assert header in md, header
    assert "Δ loss" not in md  # an encoder: no LM head, no loss columns
    tex = (tables / "erasure.tex").read_text()
    assert tex.count(r"\begin{table}") == 2 and r"\toprule" in tex
    # the numbers are the results table's: one row per layer, the sanity probe and the effect with its interval
    df = pd.read_csv(res.folder / "results.csv")
    t = pd.read_csv(tables / "erasure.csv")
    aux = t[t.task == "aux_verb"].sort_values("layer")
    assert aux["layer"].tolist() == [0, 1, 2]
    er = df[(df.method == "erasure:leace") & (df.task == "aux_verb") & (df.metric == "accuracy")]
    for probe, col in (("linear", "linear_after"), ("mlp1", "mlp_after"), ("majority", "majority")):
        want = er[er.probe == probe].sort_values("layer")["value"].to_numpy()
        assert np.allclose(aux[col].to_numpy(), want, atol=1e-6), col
    eff = df[(df.method == "intervention:leace") & (df.task == "aux_verb") & (df.layer == 1)]
    for metric, col in (("embedding_cosine", "embedding_cosine"), ("embedding_cosine_ci_low", "embedding_cosine_lo")):
        for control, suffix in ((False, ""), (True, "_control")):
            want = float(eff[(eff.metric == metric) & (eff.control.astype(str) == str(control))]["value"].iloc[0])
            got = float(aux[aux.layer == 1][col.replace("embedding_cosine", "embedding_cosine" + suffix, 1)].iloc[0])
            assert math.isclose(got, want, abs_tol=1e-6), (metric, control)
    acc = df[(df.method == "probe") & (df.probe == "linear") & (df.task == "aux_verb") & (df.split == "test")
             & (df.metric == "accuracy") & (df.control.astype(str) == "False")].sort_values("layer")
    assert np.allclose(aux["accuracy"].to_numpy(), acc["value"].to_numpy(), atol=1e-6)
    # the probe figures and tables read the probes only, not the erasure study's probes of the same name
    best = (tables / "best_layers.csv").read_text()
    assert "aux_verb" in best
    layers = (tables / "layers.md").read_text()
    assert layers.count("| aux_verb |") == 1


def test_decoder_report_has_loss_columns_and_leaves_out_what_was_not_run(tmp_path, tiny_llama_dir):
    pytest.importorskip("concept_erasure")
    from probekit.report.build import build_report
    from probekit.runner.experiment import run_experiment

    cfg = _cfg(tmp_path, tiny_llama_dir, tasks=["aux_verb"], control_tasks=False, mdl=False,
               erasure={"effect_sentences": 8, "later": [1], "sanity_mlp": False})
    res = run_experiment(cfg, progress=False)
    build_report(res.folder, formats=["png"], figures=False)
    md = (res.folder / "tables" / "erasure.md").read_text()
    assert "Δ loss next (nats)" in md and "Δ loss all (nats)" in md and "Clean next-token loss" in md
    for absent in ("Sel.", "MDL", "MLP erased", "Δ acc."):  # no control task, MDL, MLP sanity probe, other task
        assert absent not in md, absent
    name = str(tiny_llama_dir).replace("/", "_")
    assert (res.folder / "figures" / f"erasure_{name}_aux_verb.png").is_file()


def test_layer_subset_scores_only_the_configured_offsets_the_store_holds(tmp_path, tiny_bert_dir):
    """`layers: [0, 2]` with `later: [1, 2]`: erasing layer 0 is scored at layer 2 only (layer 1 is not stored;
    it used to stop the run), erasing layer 2 at none; the report's column is the offset +2."""
    pytest.importorskip("concept_erasure")
    from probekit.report.tables import summarize
    from probekit.runner.experiment import run_experiment

    cfg = _cfg(tmp_path, tiny_bert_dir, layers=[0, 2], control_tasks=False, mdl=False,
               erasure={"effect_sentences": 4, "later": [1, 2], "sanity_mlp": False})
    df = run_experiment(cfg, progress=False).table
    eff = df[(df.method == "intervention:leace") & df.metric.str.startswith("accuracy_change")
             & ~df.metric.str.contains("_ci_")]
    assert set(zip(eff.task, eff.layer.astype(int), eff.metric)) == {
        ("aux_verb", 0, "accuracy_change:subject:layer2"), ("subject", 0, "accuracy_change:aux_verb:layer2")}
    t = erasure_table(summarize(df))
    assert sorted(c for c in t if c.startswith("accuracy_change") and not c.endswith(("_lo", "_hi", "_control"))) == [
        "accuracy_change:aux_verb:+2", "accuracy_change:subject:+2"]
