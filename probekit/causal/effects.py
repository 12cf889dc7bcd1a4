"""What erasing a concept at layer l does to the model: effects with 95% bootstrap intervals over sentences.

For every erased layer, two edited runs are compared with the clean run of the same sentences (same batches):
the concept's eraser, and the **control** (:func:`~probekit.causal.erasure.random_control`: a random subspace of the
same rank removed at the same positions, Elazar et al. 2021). An effect of the eraser that the control does not have
is the concept's; one that both have is the cost of editing that layer at all. Measured, per sentence then pooled:

* ``loss_change_all`` (decoders with an LM head): mean change of next-token loss (nats) over every content subword;
* ``loss_change_next``: the same at the subword right after a *focus* word (a word whose gold label is not the
  training majority: for ``aux_verb`` the token after an auxiliary, where the verb form is predicted);
* ``accuracy_change:<task>:layer<k>`` (any model): change in accuracy of a probe already trained on clean features of
  a later layer ``k`` for another task, scored on the vectors re-extracted under the edit (does ``subject`` still
  decode at layer l+2 once ``aux_verb`` is erased at l?);
* ``embedding_cosine``: cosine between the edited and the clean sentence embedding (mean of the last layer over the
  content subwords).

Intervals: percentile bootstrap over sentences (1,000 resamples; each resample recomputes the pooled ratio, e.g. total
loss change over total tokens: :func:`probekit.results.significance.bootstrap_ratio`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from probekit.causal.erasure import LayerEraser, random_control
from probekit.causal.intervene import forward
from probekit.results.significance import bootstrap_ratio
from probekit.results.table import row


@dataclass
class Effect:
    """One effect of one edit (``edit`` = the eraser's method, or ``random`` for the control) at one layer."""

    layer: int
    edit: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n_sentences: int

    def rows(self, **common) -> list[dict]:
        """Three result rows (value and the interval's ends); ``method`` = ``intervention:<eraser method>``,
        ``control`` = True for the random-subspace control."""
        base = dict(common, layer=self.layer, control=self.edit == "random", split=common.get("split", "test"),
                    train_size=common.get("train_size"))
        return [row(**{**base, "metric": m, "value": v}) for m, v in
                ((self.metric, self.value), (f"{self.metric}_ci_low", self.ci_low),
                 (f"{self.metric}_ci_high", self.ci_high))]


def _split(y: np.ndarray, sentences) -> list[np.ndarray]:
    cuts = np.cumsum([len(s) for s in sentences])[:-1]
    return np.split(np.asarray(y), cuts)


def intervention_effects(lm, sentences, y: np.ndarray, erasers: dict[int, LayerEraser], *, majority: int,
                         head=None, probes: dict | None = None, control_seed: int = 0, batch_tokens: int | None = None,
                         word_pooling: str | None = None, precision: str | None = "auto",
                         offsets: Sequence[int] | None = None, seed: int = 0) -> list[Effect]:
    """Effects of erasing each layer's concept (and of its random control) on ``sentences``.

    Args:
        lm: the :class:`~probekit.activations.models.LoadedModel` the erasers were fitted for.
        y: ``[word]`` class ids of the erased task on ``sentences`` in corpus order (-1 = unlabelled, not edited).
        erasers: layer -> eraser; every labelled word is edited at all its subwords.
        majority: the training majority class (focus words are the others).
        head: ``[vocab, d_model]`` (:func:`~probekit.causal.intervene.lm_head_weight`) for the loss effects.
        probes: ``{task name: (labels [word] like y, {layer: LayerFit})}`` trained on clean features, for the
            accuracy effects at the later layers they cover.
        offsets: the later layers scored after erasing layer l are ``l + k`` for ``k`` in ``offsets`` (None: every
            later layer the probes cover).
        batch_tokens, word_pooling, precision: the extraction's, so that the clean run gives the store's vectors.
    """
    probes = probes or {}
    run_kw = dict(batch_tokens=batch_tokens, word_pooling=word_pooling, precision=precision)
    ys = _split(y, sentences)
    edit_words = [np.flatnonzero(v >= 0) for v in ys]
    focus = [np.flatnonzero((v >= 0) & (v != majority)) for v in ys]
    probe_y = {t: _split(lab, sentences) for t, (lab, _) in probes.items()}
    keep = sorted({k for _, fits in probes.values() for k in fits})
    clean = {r.index: _summary(r, head, focus, probes, probe_y, keep) for r in
             forward(lm, sentences, head=head, keep_layers=keep, **run_kw)}
    order = sorted(clean)
    out: list[Effect] = []
    for layer, er in sorted(erasers.items()):
        later = [k for k in keep if k > layer and (offsets is None or k - layer in offsets)]
        for edit in (er, random_control(er, seed=control_seed)):
            runs = {r.index: _summary(r, head, focus, probes, probe_y, later, clean_emb=clean[r.index]["emb"])
                    for r in forward(lm, sentences, layer=layer, edit=edit.torch_apply, edit_words=edit_words,
                                     head=head, keep_layers=later, **run_kw)}

            def eff(metric, num, den=None, layer=layer, edit=edit):
                v, lo, hi = bootstrap_ratio(num, den, seed=seed)
                out.append(Effect(layer, edit.method, metric, v, lo, hi, len(order)))

            if head is not None:
                for part in ("all", "next"):
                    eff(f"loss_change_{part}", [runs[i][f"loss_{part}"] - clean[i][f"loss_{part}"] for i in order],
                        [clean[i][f"n_{part}"] for i in order])
            for t, (_, fits) in probes.items():
                for k in later:
                    if k in fits:
                        eff(f"accuracy_change:{t}:layer{k}",
                            [runs[i][f"correct:{t}:{k}"] - clean[i][f"correct:{t}:{k}"] for i in order],
                            [clean[i][f"n:{t}"] for i in order])
            eff("embedding_cosine", [runs[i]["cosine"] for i in order])
    if head is not None and erasers:  # the clean loss, to read the changes against
        for part in ("all", "next"):
            v, lo, hi = bootstrap_ratio([clean[i][f"loss_{part}"] for i in order], [clean[i][f"n_{part}"] for i in order],
                                        seed=seed)
            out.append(Effect(None, "none", f"loss_clean_{part}", v, lo, hi, len(order)))
    return out


def _summary(run, head, focus, probes, probe_y, layers, clean_emb=None) -> dict:
    """Per-sentence sums (loss, token counts, correct probe predictions, embedding cosine) of one run."""
    i = run.index
    out = {"emb": run.sent_mean}
    if head is not None:
        ok = np.isfinite(run.nll)
        out["loss_all"], out["n_all"] = float(run.nll[ok].sum()), int(ok.sum())
        nxt = [run.word_tokens[w][-1] + 1 for w in focus[i]]
        nxt = [t for t in nxt if t < len(run.nll) and np.isfinite(run.nll[t])]
        out["loss_next"], out["n_next"] = float(run.nll[nxt].sum()), len(nxt)
    for t, (_, fits) in probes.items():
        lab = probe_y[t][i]
        rows = np.flatnonzero(lab >= 0)
        out[f"n:{t}"] = len(rows)
        for k in layers:
            if k in fits:
                out[f"correct:{t}:{k}"] = int((fits[k].predict(run.words[k][rows]) == lab[rows]).sum()) if len(rows) else 0
    if clean_emb is not None:
        a, b = run.sent_mean, clean_emb
        out["cosine"] = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return out
