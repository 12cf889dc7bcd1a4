"""The architecture matrix: a tiny random model of each family a researcher probes, with a tokenizer of its real family.

Every builder writes an HF folder (``config.json``, weights, tokenizer files) that
:func:`probekit.activations.models.load_model` loads like any local model. Tokenizers are trained here, offline, with
the ``tokenizers`` library in the layout of the family's real ``tokenizer.json``:

* WordPiece (BERT, ELECTRA): the packaged all-MiniLM-L6-v2 vocabulary;
* byte-level BPE, GPT-2 pre-tokenizer (GPT-2, RoBERTa, GPT-NeoX/Pythia, OPT), with each family's special tokens
  (RoBERTa ``<s> ... </s>``, OPT a ``</s>`` BOS);
* byte-level BPE with the Llama-3 / Qwen2 split regex (numbers in groups of 1-3 digits, contractions split off):
  Llama 3 adds ``<|begin_of_text|>``, Qwen2 adds nothing;
* SentencePiece unigram with the ``▁`` metaspace (XLM-R ``<s> ... </s>``, DeBERTa-v2 ``[CLS] ... [SEP]``);
* SentencePiece BPE with byte fallback and the ``▁`` metaspace (Mistral / Llama 2 ``<s>``, Gemma ``<bos>``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import tiny

VOCAB = 600
#: the Llama-3 / Qwen2 pre-tokenizer split (tiktoken cl100k style)
TIKTOKEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _texts() -> list[str]:
    return tiny.training_texts()


def _byte_bpe(specials: list[str], *, regex: str | None = None, trim_offsets: bool = True):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    if regex is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_texts(), trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=trim_offsets)
    return tok


def _template(tok, single: str, specials: list[str]):
    from tokenizers import processors

    template = processors.TemplateProcessing(single=single, special_tokens=[(s, tok.token_to_id(s)) for s in specials])
    tok.post_processor = template if tok.post_processor is None else processors.Sequence([tok.post_processor, template])
    return tok


def _metaspace(model: str, specials: list[str], unk: str):
    """A SentencePiece-style tokenizer (``▁`` marks a word start; unigram, or BPE with byte fallback)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if model == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=specials, unk_token=unk,
                                          show_progress=False)
    else:
        tok = Tokenizer(models.BPE(byte_fallback=True, unk_token=unk, fuse_unk=True))
        byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
        trainer = trainers.BpeTrainer(vocab_size=VOCAB + 256, special_tokens=specials + byte_tokens,
                                      show_progress=False)
    tok.normalizer = normalizers.NFKC() if model == "unigram" else None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(_texts(), trainer=trainer)
    return tok


# ------------------------------------------------------------------------------------------ tokenizers

def wordpiece(cls_name: str):
    import transformers

    tok = getattr(transformers, cls_name).from_pretrained(tiny.minilm_dir())
    tok.model_max_length = tiny.MAX_POS
    return tok


def roberta_bpe():
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    raw = _template(_byte_bpe(specials), "<s> $A </s>", ["<s>", "</s>"])
    return RobertaTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                model_max_length=tiny.MAX_POS)


def neox_bpe():
    from transformers import GPTNeoXTokenizerFast

    return GPTNeoXTokenizerFast(tokenizer_object=_byte_bpe(["<|endoftext|>", "<|padding|>"]),
                                bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                pad_token="<|padding|>", model_max_length=tiny.MAX_POS)


def opt_bpe():
    from transformers import GPT2TokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    raw = _template(_byte_bpe(specials), "</s> $A", ["</s>"])
    return GPT2TokenizerFast(tokenizer_object=raw, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                             pad_token="<pad>", model_max_length=tiny.MAX_POS)


def llama3_bpe():
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    raw = _template(_byte_bpe(specials, regex=TIKTOKEN_SPLIT, trim_offsets=False), "<|begin_of_text|> $A",
                    ["<|begin_of_text|>"])
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   model_max_length=tiny.MAX_POS)


def qwen2_bpe():
    from transformers import Qwen2TokenizerFast

    raw = _byte_bpe(["<|endoftext|>"], regex=TIKTOKEN_SPLIT, trim_offsets=False)
    return Qwen2TokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None, model_max_length=tiny.MAX_POS)


def xlmr_unigram():
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    raw = _template(_metaspace("unigram", specials, "<unk>"), "<s> $A </s>", ["<s>", "</s>"])
    return XLMRobertaTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=tiny.MAX_POS)


def deberta_unigram():
    from transformers import DebertaV2TokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    raw = _template(_metaspace("unigram", specials, "[UNK]"), "[CLS] $A [SEP]", ["[CLS]", "[SEP]"])
    return DebertaV2TokenizerFast(tokenizer_object=raw, bos_token="[CLS]", eos_token="[SEP]", sep_token="[SEP]",
                                  cls_token="[CLS]", unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]",
                                  model_max_length=tiny.MAX_POS)


def sp_bpe(bos: str, eos: str, cls_name: str):
    import transformers

    specials = ["<unk>", bos, eos, "<pad>"]
    raw = _template(_metaspace("bpe", specials, "<unk>"), f"{bos} $A", [bos])
    return getattr(transformers, cls_name)(tokenizer_object=raw, bos_token=bos, eos_token=eos, unk_token="<unk>",
                                           pad_token="<pad>", model_max_length=tiny.MAX_POS)


# ------------------------------------------------------------------------------------------ the matrix

@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "encoder" | "decoder"
    tokenizer_family: str
    make_tokenizer: Callable
    config_class: str
    model_class: str
    config: dict

    def build(self, folder: Path, *, seed: int = 0) -> Path:
        """Write the tiny model and its tokenizer to ``folder``."""
        import torch
        import transformers

        tok = self.make_tokenizer()
        ids = {k: getattr(tok, f"{k}_token_id", None) for k in ("pad", "bos", "eos")}
        cfg = getattr(transformers, self.config_class)(
            vocab_size=len(tok), pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
            architectures=[self.model_class], **self.config)
        torch.manual_seed(seed)
        getattr(transformers, self.model_class)(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
        return Path(folder)


H, L, P = tiny.HIDDEN, tiny.LAYERS, tiny.MAX_POS
_ENC = dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=2, intermediate_size=37)
_DEC = dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=P)

FAMILIES = [
    Family("bert", "encoder", "WordPiece", lambda: wordpiece("BertTokenizerFast"), "BertConfig", "BertModel",
           dict(_ENC, max_position_embeddings=P)),
    Family("electra", "encoder", "WordPiece", lambda: wordpiece("ElectraTokenizerFast"), "ElectraConfig",
           "ElectraModel", dict(_ENC, embedding_size=16, max_position_embeddings=P)),
    Family("roberta", "encoder", "byte-level BPE (prefix space)", roberta_bpe, "RobertaConfig", "RobertaModel",
           dict(_ENC, max_position_embeddings=P + 2)),
    Family("xlm-roberta", "encoder", "SentencePiece unigram", xlmr_unigram, "XLMRobertaConfig", "XLMRobertaModel",
           dict(_ENC, max_position_embeddings=P + 2)),
    Family("deberta-v2", "encoder", "SentencePiece unigram", deberta_unigram, "DebertaV2Config", "DebertaV2Model",
           dict(_ENC, max_position_embeddings=P, relative_attention=True, position_buckets=16,
                pos_att_type=["p2c", "c2p"])),
    Family("gpt2", "decoder", "byte-level BPE", lambda: tiny.gpt2_tokenizer(), "GPT2Config", "GPT2Model",
           dict(n_embd=H, n_layer=L, n_head=2, n_positions=P)),
    Family("gpt-neox", "decoder", "byte-level BPE", neox_bpe, "GPTNeoXConfig", "GPTNeoXModel",
           dict(_DEC, rotary_pct=0.25)),
    Family("opt", "decoder", "byte-level BPE (</s> BOS)", opt_bpe, "OPTConfig", "OPTModel",
           dict(hidden_size=H, num_hidden_layers=L, num_attention_heads=2, ffn_dim=64, max_position_embeddings=P,
                word_embed_proj_dim=H)),
    Family("llama", "decoder", "byte-level BPE, tiktoken split (Llama 3)", llama3_bpe, "LlamaConfig", "LlamaModel",
           dict(_DEC, num_key_value_heads=1)),
    Family("mistral", "decoder", "SentencePiece BPE, byte fallback", lambda: sp_bpe("<s>", "</s>",
           "LlamaTokenizerFast"), "MistralConfig", "MistralModel", dict(_DEC, num_key_value_heads=1)),
    Family("qwen2", "decoder", "byte-level BPE, tiktoken split", qwen2_bpe, "Qwen2Config", "Qwen2Model",
           dict(_DEC, num_key_value_heads=1)),
    Family("gemma", "decoder", "SentencePiece BPE, byte fallback", lambda: sp_bpe("<bos>", "<eos>",
           "GemmaTokenizerFast"), "GemmaConfig", "GemmaModel", dict(_DEC, num_key_value_heads=1, head_dim=16)),
]
