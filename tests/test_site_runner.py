"""Sites through the runner (issue 20): one forward pass stores every site, each site is probed, results.csv and
the summary carry the site, the report plots accuracy by layer per site, and the disk guard runs first."""
from __future__ import annotations

import pandas as pd
import pytest
from conftest import MINI_CONLLU

from probekit.config import ExperimentConfig
from probekit.errors import ConfigError, StoreError
from probekit.report.figures import accuracy_by_site
from probekit.report.tables import best_layer_table
from probekit.runner.experiment import run_experiment
from probekit.runner.units import plan_units

pytestmark = pytest.mark.usefixtures("one_thread")

SITES = ["resid_post", "attn_out", "mlp_out"]


def _cfg(tmp_path, model_dir, **kw):
    base = dict(name="sites", models=[str(model_dir)], dataset="conllu",
                files={r: str(MINI_CONLLU) for r in ("train", "dev", "test")}, tasks=["upos"], Cs=[1.0],
                mdl=False, random_baseline=False, device="cpu", store_dir=str(tmp_path / "stores"),
                results_dir=str(tmp_path / "results"), figures=["png"], sites=SITES)
    base.update(kw)
    return ExperimentConfig(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert_dir):
    tmp = tmp_path_factory.mktemp("site_runner")
    cfg = _cfg(tmp, tiny_bert_dir)
    return cfg, run_experiment(cfg, progress=False)


def test_every_site_is_stored_and_probed(run):
    cfg, res = run
    df = pd.read_csv(res.folder / "results.csv")
    acc = df[(df.probe == "linear") & (df.split == "test") & (df.metric == "accuracy") & (df.control == False)]  # noqa: E712
    layers = {s: sorted(acc[acc.site == s].layer.astype(int)) for s in SITES}
    assert layers == {"resid_post": [0, 1, 2], "attn_out": [1, 2], "mlp_out": [1, 2]}
    assert acc.value.between(0, 1).all()
    # the control task rows carry the site too; majority rows are written once (by the first site's unit)
    assert set(df[df.control == True].site) == set(SITES)  # noqa: E712
    assert len(df[(df.probe == "majority") & (df.metric == "accuracy")]) == 1
    stores = res.folder / "provenance.json"
    assert "site_stores" in stores.read_text()
    # one forward pass over each split fills all three sites' stores
    assert res.forward_passes == 3


def test_resid_post_units_keep_their_keys(run, tiny_bert_dir, tmp_path):
    from probekit.activations.models import fingerprint
    from probekit.runner.data import load_data

    cfg, _ = run
    _, fp = load_data(cfg)
    model = str(tiny_bert_dir)
    with_sites = plan_units(cfg, model, fingerprint(model), fp)
    plain = plan_units(cfg.replace(sites=["resid_post"]), model, fingerprint(model), fp)
    assert [u.key for u in with_sites if u.site == "resid_post"] == [u.key for u in plain]
    assert len({u.key for u in with_sites}) == len(with_sites) == 3


def test_summary_figure_and_best_layer_table_by_site(run, tmp_path):
    import matplotlib.figure

    cfg, res = run
    best = best_layer_table(res.summary)
    assert sorted(best.site) == sorted(SITES) and set(best[best.site != "resid_post"].best_layer.astype(int)) <= {1, 2}
    assert (res.folder / "figures" / "accuracy_by_site.png").is_file()
    fig = accuracy_by_site(res.summary)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert {line.get_label() for line in fig.axes[0].get_lines()} >= set(SITES)
    other = matplotlib.figure.Figure()
    ax = other.add_subplot()
    assert accuracy_by_site(res.summary, ax=ax) is other
    # the per-layer figures and the sentence analyses read the block outputs only
    pred = pd.read_csv(res.folder / "predictions.csv.gz")
    assert sorted(pred.layer.unique()) == [0, 1, 2] and len(pred) == pred.drop_duplicates().shape[0]
    assert accuracy_by_site(res.summary[res.summary.site.isin(["resid_post", ""])]) is None


def test_every_site_gets_sentence_intervals(run):
    from probekit.results import analysis

    _, res = run
    s = res.summary
    acc = s[(s.probe == "linear") & (s.split == "test") & (s.metric == "accuracy") & (s.control.astype(str) == "False")
            & (s.layer.astype(str) != "")]
    assert set(acc.site) == set(SITES) and acc.sent_lo.notna().all()
    assert ((acc.sent_lo <= acc["mean"] + 1e-9) & (acc["mean"] <= acc.sent_hi + 1e-9)).all()
    assert (acc.sent_hi - acc.sent_lo > 0).all()
    # `probekit report` redoes them from the finished folder: the sites' from runs/, the block outputs' from the table
    again = analysis.from_folder(res.folder, s.drop(columns=["sent_lo", "sent_hi"]))
    pd.testing.assert_series_equal(again.loc[acc.index, "sent_lo"], acc.sent_lo)


def test_warm_rerun_reuses_all_sites(run):
    cfg, res = run
    again = run_experiment(cfg, progress=False)
    assert again.forward_passes == 0
    assert (again.folder / "results.csv").read_bytes() == (res.folder / "results.csv").read_bytes()


def test_disk_guard_refuses_before_writing(tmp_path, tiny_bert_dir, monkeypatch):
    import probekit.activations.budget as budget

    monkeypatch.setattr(budget, "free_bytes", lambda path: 10**6)  # a fake free-space figure
    cfg = _cfg(tmp_path, tiny_bert_dir, layers=[1, 2])
    with pytest.raises(StoreError, match="Not enough disk.*layers, sites, train_sentences"):
        run_experiment(cfg, progress=False)
    assert not list((tmp_path / "stores").glob("*/manifest.json"))  # nothing written


def test_sites_config_is_checked():
    with pytest.raises(ConfigError, match="Unknown site 'attn'"):
        ExperimentConfig(sites=["attn"])
    assert ExperimentConfig(sites=["mlp_out", "resid_post"]).sites == ["resid_post", "mlp_out"]
    with pytest.raises(ConfigError, match="store dtype"):
        ExperimentConfig(dtype="int8")
    assert ExperimentConfig(dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ConfigError, match="quantization"):
        ExperimentConfig(quantization="3bit")


def test_ray_extraction_takes_a_whole_node_with_device_map_auto():
    from probekit.runner.sweep.executors import extraction_gpus

    class FakeRay:
        def __init__(self, nodes):
            self._nodes = nodes

        def cluster_resources(self):
            return {"CPU": 64, "GPU": sum(n["Resources"].get("GPU", 0) for n in self._nodes)}

        def nodes(self):
            return self._nodes

    cluster = FakeRay([{"Alive": True, "Resources": {"GPU": 4}}, {"Alive": True, "Resources": {"GPU": 8}},
                       {"Alive": False, "Resources": {"GPU": 16}}])
    assert extraction_gpus(cluster, ExperimentConfig()) == 1
    assert extraction_gpus(cluster, ExperimentConfig(device_map="auto")) == 8
    assert extraction_gpus(FakeRay([{"Alive": True, "Resources": {}}]), ExperimentConfig(device_map="auto")) == 0
