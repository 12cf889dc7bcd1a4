"""Run the frozen model with one layer's hidden state edited at chosen words, and read what comes out.

The edit replaces the hidden state of layer ``l`` (0 = embedding output, ``L`` = the last block's, as everywhere in
probekit) by ``edit(h)`` at **every subword** of the chosen words, and the rest of the forward pass runs on the edited
state. The eraser was fitted on one vector per word (the store's word pooling: the first subword for encoders, the
last for decoders) and is applied to all of the word's subwords, so that no copy of the concept survives in a
sibling subword.

The edit is a PyTorch forward hook on the HF module whose output *is* that hidden state (a test checks, for BERT,
GPT-2 and Llama, that the hooked tensor equals ``output_hidden_states[l]``):

* layer 0: a pre-hook on the first block (its input is the embedding output, whatever module made it; GPT-2 has
  none of its own);
* layer ``0 < l < L``: the output of block ``l - 1``;
* layer ``L``: the final norm's output where the model puts one after the last block (Llama's ``norm``, GPT-2's
  ``ln_f``: HF reports that normed state as the last hidden state), else the last block's output (BERT).

Why hooks and not nnsight or pyvene: the edit is one tensor write at known positions of one module's output; a hook
does that in a few lines, runs wherever the model runs (CPU, GPU, autocast), and adds no dependency whose version must
follow transformers'. Those libraries pay off for interventions across many sites, training interventions or remote
models, none of which this needs.

Tokenization, alignment, special tokens, padding and batching are the extractor's (:class:`~probekit.activations.
extract.Extractor`'s settings, :func:`~probekit.activations.align.align_batch` and
:func:`~probekit.activations.align.pool_words`, :mod:`probekit.activations.batching`'s batches), so that the vectors
the eraser was fitted on are the vectors it edits: an edit-free run gives the store's vectors (a test checks it to
1e-5 in fp32). Sentences longer
than one window of the model are skipped (and counted): an edit cannot cross the windows that extraction stitches.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from probekit.activations.align import align_batch, pool_words
from probekit.activations.extract import Extractor
from probekit.activations.precision import forward_context
from probekit.activations.sites import LAYOUTS
from probekit.data.conllu_io import Sentence
from probekit.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: Names of a final norm that HF applies to the last block's output before reporting it as the last hidden state.
FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


def _blocks(model):
    """The ModuleList of transformer blocks: where :data:`probekit.activations.sites.LAYOUTS` maps the model type,
    there; else the model's one ModuleList as long as its number of layers."""
    from torch import nn

    layout = LAYOUTS.get(getattr(model.config, "model_type", ""))
    if layout is not None:
        m = model
        for part in layout.blocks.split("."):
            m = getattr(m, part)
        return m
    n = model.config.num_hidden_layers
    for _, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) == n:
            return m
    raise ModelError(f"Cannot find the {n} transformer blocks of {type(model).__name__} to hook (no ModuleList of "
                     f"that length).")


def check_layer(lm, layer: int) -> int:
    """``layer`` in ``0..L`` (negative counts from the last); ConfigError otherwise."""
    n = lm.num_layers + 1
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -n <= layer < n:
        raise ConfigError(f"Layer {layer!r} is out of range for {lm.name}: valid layers are 0..{n - 1} (0 = embedding "
                          f"output), or -{n}..-1 counting from the last.")
    return int(layer) % n


def _edited(h, index, fn):
    """``h [batch, token, d]`` with the flat rows ``index`` replaced by ``fn`` of them (a copy)."""
    flat = h.reshape(-1, h.shape[-1])
    out = flat.clone()
    out[index] = fn(flat[index]).to(h.dtype)
    return out.view_as(h)


class LayerEdit:
    """A hook on one layer's hidden state; ``index`` (flat ``row * width + position`` of the batch) and ``fn`` say
    where and what to write. Use as a context manager (the hook is removed on exit)."""

    def __init__(self, lm, layer: int, fn: Callable | None = None):
        self.layer = check_layer(lm, layer)
        self.fn, self.index = fn, None
        model = lm.model
        blocks = _blocks(model)
        L = lm.num_layers
        self._handle = None
        if self.layer == 0:
            self._module, self._pre = blocks[0], True
        elif self.layer < L:
            self._module, self._pre = blocks[self.layer - 1], False
        else:
            norm = next((getattr(model, k) for k in FINAL_NORMS if hasattr(model, k)), None)
            self._module, self._pre = (norm if norm is not None else blocks[L - 1]), False

    def _apply(self, h):
        return h if self.fn is None or self.index is None or not len(self.index) else _edited(h, self.index, self.fn)

    def _post(self, module, args, output):
        if isinstance(output, tuple):
            return (self._apply(output[0]),) + tuple(output[1:])
        return self._apply(output)

    def _pre_hook(self, module, args, kwargs):
        if args:
            return (self._apply(args[0]),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self._apply(kwargs["hidden_states"])}

    def __enter__(self):
        if self._pre:
            self._handle = self._module.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        else:
            self._handle = self._module.register_forward_hook(self._post)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


@dataclass
class SentenceRun:
    """What one sentence's forward pass gave.

    Attributes:
        index: the sentence's position in the input list.
        words: layer -> ``[word, d_model]`` word vectors (the extractor's word pooling) of the layers asked for.
        sent_mean: ``[d_model]`` mean of the last layer over the content subwords (the sentence embedding).
        nll: ``[token]`` next-token loss of each content subword given what precedes it (decoders with an LM head;
            NaN for the first subword when nothing precedes it).
        word_tokens: the aligned sentence's subwords of each word (indices into the content subwords).
    """

    index: int
    sent_mean: np.ndarray
    word_tokens: list[list[int]]
    words: dict[int, np.ndarray] = field(default_factory=dict)
    nll: np.ndarray | None = None


def lm_head_weight(lm):
    """``[vocab, d_model]`` output embedding of a decoder: the input embedding when tied, else the LM head read from
    the model folder. ModelError when there is none (an encoder; a random-weights model with an untied head)."""
    cfg = lm.model.config
    if lm.kind != "decoder":
        raise ModelError(f"{lm.name} is an encoder: it has no next-token loss (use the probe and embedding effects).")
    if getattr(cfg, "tie_word_embeddings", False):
        return lm.model.get_input_embeddings().weight
    if lm.random_seed is not None:
        raise ModelError(f"{lm.name} has random weights and an untied LM head: there is no head to score with.")
    from transformers import AutoModelForCausalLM

    try:
        head = AutoModelForCausalLM.from_pretrained(lm.path).get_output_embeddings()
    except (OSError, ValueError) as e:
        raise ModelError(f"Cannot load the LM head of {lm.name} from {lm.path}: {e}") from None
    return head.weight.to(next(lm.model.parameters()).device)


def forward(lm, sentences: Sequence[Sentence], *, layer: int | None = None, edit: Callable | None = None,
            edit_words: Sequence[np.ndarray] | None = None, keep_layers: Sequence[int] = (), head=None,
            batch_tokens: int | None = None, word_pooling: str | None = None, precision: str | None = "auto"
            ) -> Iterator[SentenceRun]:
    """Forward ``sentences`` through ``lm`` (optionally editing ``layer`` at ``edit_words``), one result per sentence.

    Args:
        lm: a :class:`~probekit.activations.models.LoadedModel`.
        layer, edit: the hidden-state layer and the map applied to its ``[n, d_model]`` vectors (a torch function,
            e.g. :meth:`~probekit.causal.erasure.LayerEraser.torch_apply`); None = the clean run.
        edit_words: per sentence, the word indices to edit (all their subwords are edited).
        keep_layers: layers whose word vectors are returned.
        head: ``[vocab, d_model]`` output embedding (:func:`lm_head_weight`) to compute the next-token loss.
        batch_tokens, word_pooling, precision: the extraction's (:class:`~probekit.activations.extract.Extractor`),
            so that the clean run gives the store's vectors.
    Yields :class:`SentenceRun` in input order, skipping sentences longer than one window (logged).
    """
    import torch

    ex = Extractor(lm, word_pooling=word_pooling, batch_tokens=batch_tokens, precision=precision)
    keep = [check_layer(lm, k) for k in keep_layers]
    aligned = align_batch(lm.tokenizer, sentences)
    fits = [i for i, a in enumerate(aligned) if 0 < a.n_tokens <= ex.max_content]
    if len(fits) < len(aligned):
        log.warning("%d of %d sentences are longer than %s's window (%d subwords) and are skipped", len(aligned) -
                    len(fits), len(aligned), lm.name, ex.max_content)
    p = len(ex.prefix)
    # one piece per sentence, the whole of it: the rows and batches extraction makes for these sentences
    pieces = [(p + aligned[si].n_tokens + len(ex.suffix), si, 0, 0, aligned[si].n_tokens) for si in fits]
    hook = LayerEdit(lm, layer, edit) if edit is not None else None
    results: dict[int, SentenceRun] = {}
    batches = ex.batches(pieces, aligned)  # before the context and the hook (Extractor.batches)
    with forward_context(lm.model, ex.device, ex.precision), (hook or _Nothing()):
        for batch in batches:
            if hook is not None and edit_words is not None:
                where = [start + p + t for start, (_, si, _, _, _) in zip(batch.starts, batch.pieces)
                         for w in np.asarray(edit_words[si], dtype=np.int64) for t in aligned[si].word_tokens[w]]
                hook.index = torch.as_tensor(np.asarray(where, dtype=np.int64), device=ex.device)
            out = lm.model(**batch.model_inputs(ex.device), output_hidden_states=bool(keep))
            d = out.last_hidden_state.shape[-1]
            last = out.last_hidden_state.reshape(-1, d).float()
            flat_ids = batch.ids.reshape(-1)
            for start, (ln, si, _, _, _) in zip(batch.starts, batch.pieces):
                a = aligned[si]
                content = last[start + p:start + p + a.n_tokens]
                run = SentenceRun(si, content.mean(0).cpu().numpy(), a.word_tokens)
                if keep:
                    hs = torch.stack([out.hidden_states[k].reshape(-1, d)[start + p:start + p + a.n_tokens].float()
                                      for k in keep]).cpu().numpy()
                    pooled = pool_words(hs, a.word_tokens, ex.word_pooling, a.heads)
                    run.words = {k: pooled[n] for n, k in enumerate(keep)}
                if head is not None:
                    run.nll = _next_token_nll(last[start:start + ln], head, flat_ids[start:start + ln], p, a.n_tokens)
                results[si] = run
    for si in fits:
        yield results.pop(si)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _next_token_nll(h, head, ids: np.ndarray, p: int, n: int) -> np.ndarray:
    """``[n]`` loss of each content subword ``t`` predicted at position ``p + t - 1`` (NaN when ``p + t == 0``)."""
    import torch

    out = np.full(n, np.nan, dtype=np.float64)
    start = max(p - 1, 0)
    pos = torch.arange(start, p + n - 1, device=h.device)
    if not len(pos):
        return out
    logits = h[pos] @ head.float().T
    target = torch.as_tensor(ids[start + 1:p + n], device=h.device)
    nll = torch.nn.functional.cross_entropy(logits, target, reduction="none").double().cpu().numpy()
    out[n - len(nll):] = nll
    return out
