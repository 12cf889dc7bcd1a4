"""Sub-layer sites: where inside a transformer block a vector is read (names in TransformerLens's spirit).

``resid_post``   the block's output, the residual stream after the block (HF ``hidden_states``; layer 0 = embeddings)
``resid_mid``    the residual stream between attention and MLP (after the attention's residual add; in post-LN
                 encoders such as BERT, after the attention sub-layer's LayerNorm, which is what the MLP reads)
``attn_out``     what the attention sub-layer adds to the residual stream (after its output projection, before the
                 residual add and any post-LN)
``mlp_out``      what the MLP sub-layer adds to the residual stream (after its output projection, likewise)
``heads``        the heads' outputs before the output projection, concatenated: ``[..., n_heads * d_head]``
                 (head h is the slice ``h * d_head : (h + 1) * d_head``)

The sub-layer sites exist for blocks 1..L only; their layer l is block l, so that layer numbers agree with
``resid_post`` (layer 0 = embeddings, layer L = last block). All are read with forward hooks during the one forward
pass that also gives ``resid_post``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from probekit.errors import ConfigError, ModelError, unknown_name

SITES = ("resid_post", "resid_mid", "attn_out", "mlp_out", "heads")
SUBLAYER_SITES = SITES[1:]


@dataclass(frozen=True)
class BlockLayout:
    """Where the sites are in one family's HF base model (dotted module paths; block paths are relative to a block).

    A site is read from a module's output (``out``) or from its first positional input (``in``).
    """

    blocks: str
    attn_out: tuple[str, str]
    mlp_out: tuple[str, str]
    resid_mid: tuple[str, str]
    heads: tuple[str, str]


_BERT = BlockLayout(blocks="encoder.layer", attn_out=("attention.output.dense", "out"),
                    mlp_out=("output.dense", "out"), resid_mid=("attention", "out"),
                    heads=("attention.output.dense", "in"))
_PRE_LN = BlockLayout(blocks="layers", attn_out=("self_attn", "out"), mlp_out=("mlp", "out"),
                      resid_mid=("post_attention_layernorm", "in"), heads=("self_attn.o_proj", "in"))

#: model_type -> layout. GPT-NeoX with parallel residuals (Pythia's default) has no resid_mid: attention and MLP
#: read the same residual stream, so :func:`layout_for` refuses that site there.
LAYOUTS: dict[str, BlockLayout] = {
    **{t: _BERT for t in ("bert", "roberta", "xlm-roberta", "electra", "camembert", "deberta-v2")},
    **{t: _PRE_LN for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")},
    "gpt2": BlockLayout(blocks="h", attn_out=("attn", "out"), mlp_out=("mlp", "out"), resid_mid=("ln_2", "in"),
                        heads=("attn.c_proj", "in")),
    "gpt_neox": BlockLayout(blocks="layers", attn_out=("attention", "out"), mlp_out=("mlp", "out"),
                            resid_mid=("post_attention_layernorm", "in"), heads=("attention.dense", "in")),
    "opt": BlockLayout(blocks="decoder.layers", attn_out=("self_attn", "out"), mlp_out=("fc2", "out"),
                       resid_mid=("final_layer_norm", "in"), heads=("self_attn.out_proj", "in")),
}


def check_sites(sites) -> list[str]:
    """The sites, validated and in canonical order (``resid_post`` first); an unknown name is a ConfigError."""
    sites = list(sites)
    if not sites:
        raise ConfigError(f"'sites' is empty: give at least one of {', '.join(SITES)}.")
    for s in sites:
        if s not in SITES:
            raise unknown_name("site", s, SITES, ConfigError)
    return [s for s in SITES if s in sites]


def layout_for(model, sites) -> BlockLayout | None:
    """The layout of ``model`` (an HF base model) for the sub-layer ``sites`` asked for; None when none is asked."""
    if not [s for s in sites if s != "resid_post"]:
        return None
    mt = getattr(model.config, "model_type", "?")
    if mt not in LAYOUTS:
        raise ModelError(f"Sub-layer sites are not mapped for model type {mt!r} (mapped: {', '.join(sorted(LAYOUTS))}); "
                         "use sites: [resid_post], or add its layout to probekit.activations.sites.LAYOUTS.")
    if mt == "gpt_neox" and "resid_mid" in sites and getattr(model.config, "use_parallel_residual", False):
        raise ModelError("This GPT-NeoX model uses parallel residuals (attention and MLP read the same stream), so it "
                         "has no resid_mid site: leave resid_mid out of 'sites'.")
    return LAYOUTS[mt]


def site_width(config, site: str) -> int:
    """Width of one site's vectors: the model width, or ``n_heads * d_head`` for ``heads``."""
    d = int(config.hidden_size)
    if site != "heads":
        return d
    n = int(config.num_attention_heads)
    return n * int(getattr(config, "head_dim", None) or d // n)


def site_layers(site: str, n_layers: int, layers=None) -> list[int]:
    """The layers a site's store holds: ``layers`` (default all), less layer 0 for the sub-layer sites (the
    embeddings have no block). ``n_layers`` counts hidden states (blocks + 1); a layer out of range is a ConfigError."""
    chosen = list(range(n_layers)) if layers is None else sorted(set(int(x) for x in layers))
    bad = [x for x in chosen if not 0 <= x < n_layers]
    if bad:
        raise ConfigError(f"Config 'layers' = {list(layers or [])}: layer {bad[0]} is out of range; valid layers "
                          f"are 0..{n_layers - 1} (0 = embedding output).")
    return chosen if site == "resid_post" else [x for x in chosen if x > 0]


def _module(root, path: str):
    m = root
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


@contextmanager
def record_sites(model, sites):
    """Record the sub-layer ``sites`` of every block during the forward passes run inside the ``with``.

    Yields a dict ``{site: [per block: tensor [batch, seq, width]]}`` that the hooks fill (the latest forward pass
    replaces the previous one's entries). ``resid_post`` is not recorded here: it is the model's ``hidden_states``.
    """
    sites = check_sites(sites)
    layout = layout_for(model, sites)
    got: dict[str, list] = {s: [] for s in sites if s != "resid_post"}
    if layout is None:
        yield got
        return
    blocks = list(_module(model, layout.blocks))
    handles = []
    # (batch, seq) of each block's input: some blocks (OPT's) flatten tokens to [batch * seq, d] inside
    shapes: list = [None] * len(blocks)

    def block_in(i):
        def fn(_mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            shapes[i] = tuple(x.shape[:-1])
        return fn

    def keep(site, i, t):
        got[site][i] = t.reshape(*shapes[i], t.shape[-1]) if t.dim() == 2 else t

    def hook_out(site, i):
        def fn(_mod, _inp, out):
            keep(site, i, out[0] if isinstance(out, tuple) else out)
        return fn

    def hook_in(site, i):
        def fn(_mod, inp):
            keep(site, i, inp[0])
        return fn

    try:
        for i, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(block_in(i), with_kwargs=True))
        for site in got:
            got[site] = [None] * len(blocks)
            path, where = getattr(layout, site)
            for i, block in enumerate(blocks):
                mod = _module(block, path)
                if where == "out":
                    handles.append(mod.register_forward_hook(hook_out(site, i)))
                else:
                    handles.append(mod.register_forward_pre_hook(hook_in(site, i)))
        yield got
    finally:
        for h in handles:
            h.remove()
