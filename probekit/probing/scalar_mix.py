"""Tenney et al.'s scalar-mix probe and cumulative scoring, every prefix of layers trained as one batched problem.

Tenney, Das & Pavlick, "BERT Rediscovers the Classical NLP Pipeline" (ACL 2019), Eq. 1: a probe reads the scalar mix

    h_i = gamma * sum_l s^(l) h_i^(l),      s = softmax(a),

of the layers ``l = 0 .. L`` (layer 0 = embeddings), with ``a`` (one scalar per layer) and ``gamma`` learned with
the classifier. Cumulative scoring trains one such probe ``P^(l)`` per prefix: ``P^(l)`` mixes layers ``0 .. l`` only.
:func:`fit_mix` trains all prefixes (and every L2 strength of the grid) as ONE batched problem: a batch dimension
over (prefix, strength), the softmax of prefix ``l`` masked to layers ``0 .. l``. The problems share no parameter and
Adam is elementwise, so each is trained exactly as if alone (its own early stop included); one pass over the data
serves them all.

Each problem is ``mean_i CE(gamma * m_i W + b, y_i) + ||gamma W||^2 / (2 C N)`` on minibatches, ``m_i`` the mix of
the item's (standardised) layer vectors: the linear probe's objective (:mod:`probekit.probing.linear`, scikit-learn's
``C`` in the same units) on the mixed vector. The penalty is on ``gamma W``, the map the classifier applies: with a
linear head ``gamma`` and ``W`` are not identified apart (only their product is), so a penalty on ``W`` alone could be
escaped by growing ``gamma``. Initialisation is AllenNLP's ``ScalarMix`` (``a = 0``: uniform weights; ``gamma = 1``),
``W = 0`` and ``b`` the log class prior.

Training: Adam on shuffled minibatches (a private generator: the global torch RNG is not touched), the parameters of
the epoch with the lowest dev cross-entropy kept per problem, training stopped when no problem has improved (by more
than ``tol``) for ``patience`` epochs; then each prefix keeps the strength ``C`` with the best dev accuracy (ties: the
stronger penalty, as the linear probe). On the CPU two fits with the same seed and data are identical (the steps run
on one thread: :func:`probekit._device.probe_threads`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probekit._device import probe_threads, resolve_device
from probekit.errors import ConfigError, DataError
from probekit.probing.features import check_finite, standardise

#: ``probe`` of the full-mix rows (mixing weights, expected layer, centre of gravity) in the results table.
MIX_PROBE = "scalar_mix"
#: ``probe`` of the cumulative-scoring rows: at ``layer`` l, the probe on the mix of layers 0..l.
CUMULATIVE_PROBE = "scalar_mix_cumulative"
#: Items scored at once when evaluating (bounds the ``[problem, items, d_model]`` block of the mixed vectors).
EVAL_CHUNK = 2048


@dataclass(frozen=True)
class MixSettings:
    """How :func:`fit_mix` trains (the runner's ``scalar_mix:`` section maps onto it)."""

    Cs: tuple = (0.01, 0.1, 1.0)  # inverse L2 strengths (scikit-learn's units), chosen per prefix on dev accuracy
    lr: float = 0.01
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 3
    tol: float = 1e-4  # dev cross-entropy decrease that counts as an improvement
    standardize: bool = True  # standardise each layer (train mean and scale) before mixing
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if not self.Cs or any(isinstance(c, bool) or not isinstance(c, (int, float)) or c <= 0 for c in self.Cs):
            raise ConfigError(f"scalar mix: Cs must be positive numbers, got {list(self.Cs)!r}.")
        for name in ("batch_size", "max_epochs", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"scalar mix: {name} must be a positive integer, got {v!r}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"scalar mix: lr must be a positive number, got {self.lr!r}.")


@dataclass
class MixFit:
    """The probes of one fit. Index ``p`` is the prefix ending at ``layers[ends[p]]``; arrays are numpy."""

    layers: list  # the J layers mixed, in order (layer 0 = embeddings)
    ends: list  # [P] position (in ``layers``) of each prefix's last layer
    weights: np.ndarray  # [P, J] mixing weights s (0 past the prefix)
    gamma: np.ndarray  # [P]
    C: np.ndarray  # [P] the chosen inverse L2 strength
    epochs: np.ndarray  # [P] the epoch whose parameters were kept (1-based)
    dev_accuracy: np.ndarray  # [P]
    pred: dict = field(default_factory=dict)  # role -> [P, n] predicted class ids (every role but train)
    head_params: int = 0  # parameters of the classifier (W and b)

    @property
    def full(self) -> int:
        """Index of the prefix that mixes every layer (the full-mix probe)."""
        return int(np.argmax(self.ends))

    def n_params(self, p: int) -> int:
        """Trainable parameters of prefix ``p``'s probe: its mixing scalars, gamma and the classifier."""
        return int(self.ends[p] + 1 + 1 + self.head_params)


def _check(X: dict, y: dict, n_classes: int) -> tuple[int, int, int]:
    for role in ("train", "dev"):
        if role not in X or role not in y:
            raise DataError(f"scalar mix: the {role} split is missing (it trains on train and stops on dev).")
    J, N, d = X["train"].shape
    for role, x in X.items():
        if x.ndim != 3 or x.shape[0] != J or x.shape[2] != d:
            raise DataError(f"scalar mix: {role} features must be [layer, item, d_model] = [{J}, n, {d}], got "
                            f"{tuple(x.shape)}.")
        if role in y and len(y[role]) != x.shape[1]:
            raise DataError(f"scalar mix: {role} has {x.shape[1]} items but {len(y[role])} labels.")
        for j in range(J):
            check_finite(x[j], f"scalar mix, layer position {j} ({role})")
    yt = np.asarray(y["train"])
    if yt.size and (yt.min() < 0 or yt.max() >= n_classes):
        raise DataError(f"scalar mix: train labels must be class ids in 0..{n_classes - 1}.")
    return J, N, d


def fit_mix(X: dict, y: dict, *, n_classes: int, settings: MixSettings | None = None, layers: list | None = None,
            cumulative: bool = True) -> MixFit:
    """Train the scalar-mix probes on ``X = {role: [J, n, d_model]}`` with labels ``y = {role: [n]}``.

    ``cumulative``: one probe per prefix ``0..l`` of the J layers (Tenney's cumulative scoring; the last prefix is the
    full mix), else the full-mix probe only. Predictions are returned for every role of ``X`` but train. ``layers``
    names the J layers (default ``0 .. J-1``).
    """
    st = settings or MixSettings()
    J, N, d = _check(X, y, n_classes)
    dev = resolve_device(st.device)
    # the repository's thread policy, on the per-step block [J, batch, d]: one CPU thread for small steps (the
    # measurement behind it for this probe: docs/scalar_mix.md)
    with probe_threads(J * st.batch_size * d, dev):
        return _fit(X, y, n_classes, st, layers, cumulative, J, N, d, dev)


def _fit(X, y, n_classes, st, layers, cumulative, J, N, d, dev) -> MixFit:
    import torch

    layers = list(range(J)) if layers is None else list(layers)
    gen = torch.Generator().manual_seed(st.seed)
    if st.standardize:
        Xt, mean, scale = standardise(X["train"], dev)  # a copy: X is not modified
    else:
        Xt = torch.as_tensor(np.asarray(X["train"], dtype=np.float32), device=dev).clone()
        mean = scale = None

    def prepared(role):
        if role == "train":
            return Xt
        x = torch.tensor(np.asarray(X[role], dtype=np.float32), device=dev)
        return x.sub_(mean).div_(scale) if mean is not None else x

    ends = list(range(J)) if cumulative else [J - 1]
    Cs = sorted(float(c) for c in st.Cs)
    P, nC, K = len(ends), len(Cs), n_classes
    B = P * nC  # problem b = (prefix b // nC, strength b % nC)
    end_b = torch.tensor([ends[b // nC] for b in range(B)], device=dev)
    mask = torch.arange(J, device=dev).unsqueeze(0) <= end_b.unsqueeze(1)  # [B, J]
    l2 = torch.tensor([1.0 / (Cs[b % nC] * N) for b in range(B)], dtype=torch.float32, device=dev)
    yt = torch.as_tensor(np.asarray(y["train"]), dtype=torch.long, device=dev)
    prior = torch.bincount(yt, minlength=K).float() + 1e-3
    params = {"a": torch.zeros(B, J, device=dev), "gamma": torch.ones(B, device=dev),
              "W": torch.zeros(B, d, K, device=dev), "b": torch.log(prior / prior.sum()).repeat(B, 1)}
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(list(params.values()), lr=st.lr)

    def forward(x, prm):  # x [J, n, d] -> logits [B, n, K]
        s = torch.softmax(prm["a"].masked_fill(~mask, float("-inf")), dim=1)  # [B, J]
        m = (s @ x.reshape(J, -1)).view(B, x.shape[1], d)
        return torch.baddbmm(prm["b"].unsqueeze(1), m, prm["gamma"].view(B, 1, 1) * prm["W"])

    def evaluate(x, yv, prm):  # (mean dev cross-entropy [B], accuracy [B], predictions [B, n])
        ce = torch.zeros(B, device=dev)
        preds = []
        with torch.no_grad():
            for i in range(0, x.shape[1], EVAL_CHUNK):
                z = forward(x[:, i:i + EVAL_CHUNK], prm)
                if yv is not None:
                    yy = yv[i:i + EVAL_CHUNK]
                    ce += (torch.logsumexp(z, 2) - z.gather(2, yy.view(1, -1, 1).expand(B, -1, 1)).squeeze(2)).sum(1)
                preds.append(z.argmax(2))
        pred = torch.cat(preds, 1) if preds else torch.zeros(B, 0, dtype=torch.long, device=dev)
        n = max(x.shape[1], 1)
        acc = (pred == yv.unsqueeze(0)).float().mean(1) if yv is not None else None
        return ce / n, acc, pred

    Xd = prepared("dev")
    yd = torch.as_tensor(np.asarray(y["dev"]), dtype=torch.long, device=dev)
    best = {k: v.detach().clone() for k, v in params.items()}
    best_ce = torch.full((B,), float("inf"), device=dev)
    best_epoch = torch.zeros(B, dtype=torch.long, device=dev)
    stale = torch.zeros(B, dtype=torch.long, device=dev)
    for epoch in range(1, st.max_epochs + 1):
        order = torch.randperm(N, generator=gen).to(dev)
        for i in range(0, N, st.batch_size):
            idx = order[i:i + st.batch_size]
            z = forward(Xt[:, idx], params)  # [B, n, K]
            yb = yt[idx]
            ce = (torch.logsumexp(z, 2) - z.gather(2, yb.view(1, -1, 1).expand(B, -1, 1)).squeeze(2)).mean(1)
            gw = params["gamma"].view(B, 1, 1) * params["W"]
            loss = (ce + 0.5 * l2 * gw.square().sum((1, 2))).sum()  # problems independent: the sum's gradients
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        dce, _, _ = evaluate(Xd, yd, params)
        better = dce < best_ce - st.tol
        with torch.no_grad():
            for k, v in params.items():
                keep = better.view(B, *([1] * (v.dim() - 1)))
                best[k] = torch.where(keep, v.detach(), best[k])
        best_ce = torch.where(better, dce, best_ce)
        best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
        stale = torch.where(better, torch.zeros_like(stale), stale + 1)
        if bool((stale >= st.patience).all()):
            break
    _, dacc, _ = evaluate(Xd, yd, best)
    # per prefix, the strength with the best dev accuracy (Cs ascending: strongest first; ties keep the stronger)
    chosen = []
    for prefix in range(P):
        accs = dacc[prefix * nC:(prefix + 1) * nC].tolist()
        chosen.append(prefix * nC + max(range(nC), key=lambda c: (accs[c], -c)))
    sel = torch.tensor(chosen, device=dev)
    with torch.no_grad():
        s = torch.softmax(best["a"].masked_fill(~mask, float("-inf")), dim=1)[sel]
    pred = {}
    for role in (r for r in X if r != "train"):
        x = Xd if role == "dev" else prepared(role)
        pred[role] = evaluate(x, None, best)[2][sel].cpu().numpy()
    return MixFit(layers=layers, ends=ends, weights=s.cpu().numpy().astype(np.float64),
                  gamma=best["gamma"][sel].detach().cpu().numpy().astype(np.float64),
                  C=np.array([Cs[b % nC] for b in chosen]), epochs=best_epoch[sel].cpu().numpy(),
                  dev_accuracy=dacc[sel].cpu().numpy().astype(np.float64), pred=pred,
                  head_params=int(d * K + K))
