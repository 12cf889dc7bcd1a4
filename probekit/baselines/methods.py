"""Build a trainable token tagger for each tuning method.

Every method puts a linear head (dropout + ``Linear(d_model, n_labels)``) on the model's last
hidden state. What else is trained:

==============  ==============================================================================
finetune        every weight of the model (plain ``transformers`` + ``torch``)
prompt_tuning   soft-prompt vectors inserted after the first special token. BERT-family models
                use AdapterHub ``adapters`` (``PromptTuningConfig``); models for which
                ``adapters`` has no prompt tuning (Llama, GPT-2, ... in adapters 1.3.0) use
                :class:`SoftPrompt`, a small hand-written equivalent that feeds
                ``inputs_embeds``
prefix_tuning   ``adapters`` ``PrefixTuningConfig`` (key/value prefixes in every layer)
adapter         ``adapters`` ``DoubleSeqBnConfig`` (Houlsby: bottleneck adapters after the
                attention and the feed-forward sublayers)
lora            ``adapters`` ``LoRAConfig`` on the self-attention projections
==============  ==============================================================================

Soft-prompt methods return ``n_virtual`` extra positions; :class:`TokenTagger` reports where
they are (``virtual_at``) so that the loss gives them the ignore label and predictions drop them
(see :mod:`probekit.baselines.encode`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from probekit._extras import require
from probekit.baselines.config import BaselineConfig, check_method
from probekit.baselines.encode import insert_virtual
from probekit.errors import ModelError

log = logging.getLogger(__name__)

ADAPTER_NAME = "probekit"


class SoftPrompt(nn.Module):
    """Hand-written prompt tuning for models without ``adapters`` prompt-tuning support.

    Inserts ``n_virtual`` trainable vectors ``[n_virtual, d_model]`` into the word-embedding
    sequence at position ``at`` and calls the model with ``inputs_embeds``; the attention mask
    gets ones at those positions. Output: ``[batch, seq + n_virtual, d_model]``.
    """

    def __init__(self, model, n_virtual: int, at: int, init: str = "vocab"):
        super().__init__()
        self.model = model
        self.at = at
        emb = model.get_input_embeddings()
        d = emb.weight.shape[1]
        if init == "vocab":
            ids = torch.randint(0, emb.weight.shape[0], (n_virtual,))
            vecs = emb.weight[ids.to(emb.weight.device)].detach().clone()
        else:
            vecs = torch.empty(n_virtual, d, device=emb.weight.device).uniform_(-0.5, 0.5)
        self.prompt = torch.nn.Parameter(vecs)

    def forward(self, input_ids, attention_mask):
        embeds = self.model.get_input_embeddings()(input_ids)
        batch = embeds.shape[0]
        prompt = self.prompt.unsqueeze(0).expand(batch, -1, -1).to(embeds.dtype)
        embeds = _insert(embeds, prompt, self.at)
        mask = insert_virtual(attention_mask, self.prompt.shape[0], self.at, 1)
        return self.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state


def _insert(x, block, at: int):
    return torch.cat([x[:, :at], block, x[:, at:]], dim=1)


class TokenTagger(nn.Module):
    """A (partly) trainable model plus a linear head, for word-level token classification.

    ``forward(input_ids [batch, seq], attention_mask [batch, seq])`` returns logits
    ``[batch, seq + n_virtual, n_labels]`` — with the soft-prompt positions still in, at
    ``virtual_at .. virtual_at + n_virtual``.
    """

    def __init__(self, encoder, hidden_size: int, n_labels: int, *, dropout: float, soft_prompt: SoftPrompt | None,
                 n_virtual: int = 0, virtual_at: int = 0):
        super().__init__()
        self.encoder = encoder
        self.soft_prompt = soft_prompt
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, n_labels)
        self.n_virtual = n_virtual
        self.virtual_at = virtual_at

    def hidden(self, input_ids, attention_mask):
        """The model's last hidden state ``[batch, seq + n_virtual, d_model]``."""
        if self.soft_prompt is not None:
            return self.soft_prompt(input_ids, attention_mask)
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids, attention_mask):
        hidden = self.hidden(input_ids, attention_mask)
        expected = input_ids.shape[1] + self.n_virtual
        if hidden.shape[1] != expected:
            raise ModelError(f"The model returned {hidden.shape[1]} positions for {input_ids.shape[1]} input tokens; "
                             f"expected {expected} ({self.n_virtual} soft-prompt tokens). The soft-prompt bookkeeping "
                             "does not match this model type.")
        return self.head(self.dropout(hidden))


@dataclass
class BuiltMethod:
    """A tagger and its parameter accounting.

    ``library_params`` is the number of method parameters (head excluded) reported by the library
    that implements the method (``adapters``' ``adapter_summary``), or ``None`` where the method is
    not implemented by a library (finetune, hand-written soft prompt).
    """

    tagger: object
    backend: str
    trainable_params: int
    total_params: int
    library_params: int | None = None
    notes: dict = field(default_factory=dict)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params


def adapters_config(method: str, cfg: BaselineConfig, *, combine: str = "prefix"):
    """The ``adapters`` config object for a lightweight method."""
    adapters = require("adapters", extra="baselines", purpose="Lightweight tuning baselines")

    if method == "adapter":
        return adapters.DoubleSeqBnConfig(reduction_factor=cfg.adapter_reduction_factor,
                                          non_linearity=cfg.adapter_non_linearity)
    if method == "lora":
        return adapters.LoRAConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                   attn_matrices=list(cfg.lora_matrices), selfattn_lora=True,
                                   intermediate_lora=False, output_lora=False)
    if method == "prefix_tuning":
        return adapters.PrefixTuningConfig(prefix_length=cfg.prefix_length, bottleneck_size=cfg.prefix_bottleneck,
                                           flat=cfg.prefix_flat)
    if method == "prompt_tuning":
        return adapters.PromptTuningConfig(prompt_length=cfg.prompt_length, combine=combine,
                                           prompt_init="random_uniform")
    raise ModelError(f"Method {method!r} is not implemented through adapters.")


def supports_adapters_prompt_tuning(model) -> bool:
    """Whether ``adapters`` 1.3.0 implements prompt tuning for this model's architecture.

    Asked on a throw-away ``adapters``-initialised model, so ``model`` itself is left untouched.
    """
    import copy

    adapters = require("adapters", extra="baselines", purpose="Lightweight tuning baselines")

    probe = copy.deepcopy(model)
    adapters.init(probe)
    return bool(probe.supports_adapter(adapters.PromptTuningConfig(prompt_length=1)))


def build_method(method: str, model, *, hidden_size: int, n_labels: int, cfg: BaselineConfig,
                 n_prefix_specials: int) -> BuiltMethod:
    """Make ``model`` (a plain ``AutoModel``, modified in place) trainable for ``method`` and add a head.

    Args:
        method: a name from :data:`probekit.baselines.config.METHODS`.
        model: the base model; the caller must pass a private copy.
        hidden_size: the model's output width.
        n_labels: number of task classes.
        cfg: the method's resolved config (:meth:`BaselineConfig.resolved`).
        n_prefix_specials: special tokens before the content (e.g. 1 for [CLS] or BOS); soft prompts
            go right after them.
    """
    check_method(method)
    model.requires_grad_(False)
    soft_prompt = None
    n_virtual = at = 0
    library_params = None
    notes: dict = {}
    if method == "finetune":
        model.requires_grad_(True)
        if getattr(model, "pooler", None) is not None:
            # BERT's pooler (a [CLS] dense layer) is not on the head's path (it reads the last hidden state): it
            # gets no gradient and is not counted as trained
            model.pooler.requires_grad_(False)
        backend = "transformers"
    elif method == "prompt_tuning" and not supports_adapters_prompt_tuning(model):
        backend = "hand-written soft prompt"
        n_virtual, at = cfg.prompt_length, n_prefix_specials
        soft_prompt = SoftPrompt(model, cfg.prompt_length, at, cfg.prompt_init)
        notes["why"] = (f"adapters 1.3.0 has no prompt tuning for model type "
                        f"{getattr(model.config, 'model_type', '?')!r}")
    else:
        adapters = require("adapters", extra="baselines", purpose="Lightweight tuning baselines")
        backend = f"adapters {adapters.__version__}"
        combine = "prefix"
        if method == "prompt_tuning":
            # adapters inserts after the first token ("prefix_after_bos") or before everything ("prefix")
            combine = "prefix_after_bos" if n_prefix_specials >= 1 else "prefix"
            n_virtual, at = cfg.prompt_length, (1 if combine == "prefix_after_bos" else 0)
        if method == "prefix_tuning" and _uses_attention_interface(model):
            # adapters 1.3.0 + transformers 4.57: with SDPA the mask is boolean (True = attend) but adapters'
            # prefix tuning inverts its prefix mask as if it were additive, so the prefixes are masked out and
            # never trained (Llama, GPT-2). Eager attention gets an additive mask, which adapters handles.
            model.set_attn_implementation("eager")
            notes["attention"] = "eager (adapters prefix tuning is masked out under SDPA)"
        adapters.init(model)
        a_cfg = adapters_config(method, cfg, combine=combine)
        if not model.supports_adapter(a_cfg):
            raise ModelError(f"adapters {adapters.__version__} does not support {method} for model type "
                             f"{getattr(model.config, 'model_type', '?')!r}. Use another method or model.")
        quiet = logging.getLogger("adapters.model_mixin")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "adapters available but none are activated": train_adapter activates it
        try:
            model.add_adapter(ADAPTER_NAME, config=a_cfg)
            model.train_adapter(ADAPTER_NAME)
        finally:
            quiet.setLevel(level)
        if method == "prompt_tuning" and cfg.prompt_init == "vocab":
            _vocab_init_adapters_prompt(model, cfg.prompt_length)
        summary = model.adapter_summary(as_dict=True)
        library_params = int(next(r["#param"] for r in summary if r["name"] == ADAPTER_NAME))
    tagger = TokenTagger(model, hidden_size, n_labels, dropout=cfg.head_dropout, soft_prompt=soft_prompt,
                         n_virtual=n_virtual, virtual_at=at)
    tagger.to(next(model.parameters()).device)
    if method != "finetune":
        check_reaches_output(tagger, method)
    trainable = sum(p.numel() for p in tagger.parameters() if p.requires_grad)
    total = sum(p.numel() for p in tagger.parameters())
    if trainable == 0:
        raise ModelError(f"Method {method}: no trainable parameters were found; this is a bug.")
    return BuiltMethod(tagger=tagger, backend=backend, trainable_params=trainable, total_params=total,
                       library_params=library_params, notes=notes)


def _uses_attention_interface(model) -> bool:
    """Whether the model picks its attention kernel through transformers' AttentionInterface (sdpa/eager...)."""
    impl = getattr(model.config, "_attn_implementation", None)
    return impl not in (None, "eager") and getattr(model, "_supports_attention_backend", False)


def check_reaches_output(tagger: TokenTagger, method: str) -> None:
    """Raise ModelError unless the method's parameters influence the model output.

    One forward/backward pass on a two-sentence batch (one of them padded); the gradient of the
    output with respect to the method's own (non-head) parameters must not be all zero. This
    catches library/model combinations where a method is silently inactive.
    """
    params = [p for n, p in tagger.named_parameters() if p.requires_grad and not n.startswith("head.")]
    device = params[0].device
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 0]], device=device) % tagger.encoder.get_input_embeddings().num_embeddings
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], device=device)
    was_training = tagger.training
    tagger.eval()
    try:
        hidden = tagger.hidden(ids, mask)
        if hidden.requires_grad:
            grads = torch.autograd.grad(hidden.float().pow(2).sum(), params, allow_unused=True)
        else:  # no trainable parameter is on the path to the output at all
            grads = [None] * len(params)
    finally:
        tagger.train(was_training)
    if all(g is None or not bool(g.abs().sum() > 0) for g in grads):
        raise ModelError(f"Method {method}: its parameters have no effect on the output of this "
                         f"{getattr(tagger.encoder.config, 'model_type', '?')} model (all gradients are zero), so "
                         "training would silently do nothing. This is a library bug for this model type; use "
                         "another method.")


def _vocab_init_adapters_prompt(model, n: int) -> None:
    """Initialise adapters' prompt embedding with the word embeddings of random vocabulary tokens."""
    layer = model.base_model.prompt_tuning.prompt_tunings[ADAPTER_NAME]
    emb = model.get_input_embeddings().weight
    ids = torch.randint(0, emb.shape[0], (n,))
    with torch.no_grad():
        layer.prompt_embedding.weight.copy_(emb[ids.to(emb.device)])
