"""Unit tests of probekit.activations.align: word/subword alignment, windows, special tokens, pooling."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.activations.align import (
    align_batch,
    align_sentence,
    check_fast_tokenizer,
    check_pooling,
    plan_windows,
    pool_words,
    special_layout,
)
from probekit.data.conllu_io import Sentence, read_conllu
from probekit.errors import ConfigError, ModelError, ProbekitError

import tiny

# ------------------------------------------------------------------------------ gold sentences (mini; EWT dev: slow)


@pytest.mark.parametrize("tok_name", ["minilm_tokenizer", "gpt2_tokenizer", "llama_tokenizer"])
def test_gold_alignment_invariants(tok_name, gold_sents, request):
    """Every word >= 1 subword, no subword in two words, text kept, ids = tokenizer's."""
    tok = request.getfixturevalue(tok_name)
    aligned = align_batch(tok, gold_sents)
    assert len(aligned) == len(gold_sents)
    n_repaired = 0
    for s, a in zip(gold_sents, aligned):
        tiny.check_alignment(tok, s, a)
        plain = tok(s.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        # a repair happens exactly when the plain tokenization would swallow a word
        assert (a.repaired > 0) == tiny.needs_repair(s.text, s.spans, plain["offset_mapping"]), s.sent_id
        if not a.repaired:
            assert a.text == s.text and a.token_ids == plain["input_ids"]
        n_repaired += a.repaired > 0
    # UD gold words are real text: nothing is dropped by these tokenizers, and repairs are rare
    assert sum(a.borrowed for a in aligned) == 0
    if len(gold_sents) > 1000:  # a rate on real text (the fixture is made of hard cases on purpose)
        assert n_repaired < 0.05 * len(gold_sents)


def test_gold_multiword_tokens_with_minilm(gold_sents, minilm_tokenizer):
    """Every word of every multiword token ('don't', 'cannot', 'gonna', ...) gets its own subwords."""
    with_mwt = [s for s in gold_sents if s.mwts]
    assert len(with_mwt) >= 0.02 * len(gold_sents)  # EWT dev has 50+, the fixture several
    for s, a in zip(with_mwt, align_batch(minilm_tokenizer, with_mwt)):
        for first, last, _surface in s.mwts:
            toks = [set(a.word_tokens[w]) for w in range(first, last + 1)]
            for i in range(len(toks)):
                for j in range(i + 1, len(toks)):
                    assert not toks[i] & toks[j], (s.sent_id, s.words[first:last + 1])


def _conllu(tmp_path, text: str, rows: list[tuple[str, str]], name: str = "s.conllu") -> Sentence:
    """A one-sentence CoNLL-U file (ID, FORM pairs; other columns filled in), read back with read_conllu."""
    lines = ["# sent_id = t1", f"# text = {text}"]
    head = 0
    for tid, form in rows:
        if "-" in tid:
            lines.append("\t".join([tid, form] + ["_"] * 8))
        else:
            lines.append("\t".join([tid, form, form, "X", "_", "_", str(head), "root" if head == 0 else "dep", "_", "_"]))
            head = 1
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    (s,) = read_conllu(path)
    return s


def test_cannot_and_gonna_are_repaired_with_wordpiece(tmp_path, minilm_tokenizer):
    tok = minilm_tokenizer
    # preconditions taken from the tokenizer itself: its vocabulary holds the whole forms
    assert tok.tokenize("cannot") == ["cannot"] and tok.tokenize("gonna") == ["gonna"]
    s = _conllu(tmp_path, "I cannot go, gonna stay.",
                [("1", "I"), ("2-3", "cannot"), ("2", "can"), ("3", "not"), ("4", "go"), ("5", ","),
                 ("6-7", "gonna"), ("6", "gon"), ("7", "na"), ("8", "stay"), ("9", ".")])
    assert s.words == ["I", "can", "not", "go", ",", "gon", "na", "stay", "."]
    (a,) = align_batch(tok, [s])
    tiny.check_alignment(tok, s, a)
    assert a.repaired == 2
    assert a.text == "I can not go, gon na stay."
    pieces = [tok.convert_ids_to_tokens([a.token_ids[t] for t in ts]) for ts in a.word_tokens]
    assert pieces[1] == ["can"] and pieces[2] == ["not"]
    assert "".join(p.removeprefix("##") for p in pieces[5]) == "gon" and pieces[6][0].removeprefix("##") == "na"


def test_dont_needs_no_repair(tmp_path, minilm_tokenizer, gpt2_tokenizer):
    s = _conllu(tmp_path, "I don't know.",
                [("1", "I"), ("2-3", "don't"), ("2", "do"), ("3", "n't"), ("4", "know"), ("5", ".")])
    for tok in (minilm_tokenizer, gpt2_tokenizer):
        (a,) = align_batch(tok, [s])
        tiny.check_alignment(tok, s, a)
        # "don" + "'t" (or "'", "t"): both words start a subword, so the text is kept as it is
        assert a.repaired == 0 and a.text == "I don't know."
        assert a.word_tokens[1] and a.word_tokens[2] and not set(a.word_tokens[1]) & set(a.word_tokens[2])


def test_bpe_merge_across_words_is_repaired(gpt2_tokenizer, llama_tokenizer):
    """Two words written together that the BPE holds in one subword are split by an inserted space."""
    for tok in (gpt2_tokenizer, llama_tokenizer):
        vocab = tok.get_vocab()
        whole = sorted(t for t in vocab if t.isascii() and t.isalpha() and len(t) >= 4 and tok.tokenize(t) == [t])
        assert whole, "the tiny BPE should have learned some whole-word merges"
        form = whole[0]
        s = Sentence.from_words([form[:2], form[2:], "x"], space_after=[False, True, True])
        assert s.text == f"{form} x"
        (a,) = align_batch(tok, [s])
        tiny.check_alignment(tok, s, a)
        assert a.repaired >= 1
        assert a.text.startswith(f"{form[:2]} {form[2:]}")


@pytest.mark.parametrize("dropped", ["\u200b", "\u0301"])
def test_dropped_word_borrows_a_neighbour(minilm_tokenizer, dropped):
    tok = minilm_tokenizer
    assert tok(dropped, add_special_tokens=False)["input_ids"] == []  # the tokenizer drops it entirely
    s = Sentence.from_words(["a", dropped, "b"])
    (a,) = align_batch(tok, [s])
    assert a.borrowed == 1 and a.repaired == 0
    assert a.word_tokens[1] == a.word_tokens[0]  # nearest subword to the left
    tiny.check_alignment(tok, s, a)
    # at the start of a sentence there is no left neighbour: it borrows from the right
    s = Sentence.from_words([dropped, "dog", "barks"])
    (a,) = align_batch(tok, [s])
    assert a.borrowed == 1 and a.word_tokens[0] == a.word_tokens[1] == [0]
    tiny.check_alignment(tok, s, a)


def test_sentence_with_no_subwords_at_all_is_a_model_error(minilm_tokenizer):
    s = Sentence.from_words(["\u200b", "\u0301"], sent_id="empty-1")
    with pytest.raises(ModelError, match="empty-1"):
        align_batch(minilm_tokenizer, [s])


def test_align_sentence_equals_align_batch(mini_sents, gpt2_tokenizer):
    batch = align_batch(gpt2_tokenizer, mini_sents, chunk=7)
    for s, a in zip(mini_sents, batch):
        b = align_sentence(gpt2_tokenizer, s)
        assert (a.token_ids, a.word_tokens, a.offsets, a.text) == (b.token_ids, b.word_tokens, b.offsets, b.text)


# ------------------------------------------------------------------------------------- slow tokenizer


def test_slow_tokenizer_is_a_model_error(mini_sents):
    from transformers import BertTokenizer

    slow = BertTokenizer.from_pretrained(tiny.minilm_dir())
    if slow.is_fast:
        pytest.skip("transformers 5: BertTokenizer is backed by `tokenizers`; there is no slow one to refuse")
    with pytest.raises(ModelError, match="slow"):
        check_fast_tokenizer(slow)
    with pytest.raises(ModelError, match="fast"):
        align_batch(slow, mini_sents[:2])


# ------------------------------------------------------------------------------------------- windows


def _check_windows(n: int, m: int, causal: bool) -> None:
    windows, owner = plan_windows(n, m, causal=causal)
    assert owner.shape == (n,) and owner.dtype.kind == "i"
    assert windows[0][0] == 0 and windows[-1][1] == n
    for (a, b), (c, d) in zip(windows, windows[1:]):
        assert a < c and c <= b, "windows must advance and leave no gap"
    assert all(b - a <= m for a, b in windows)
    assert all(b > a for a, b in windows) or n == 0
    # no wasteful plans: about two windows per max_content tokens
    assert len(windows) <= max(1, -(-2 * n // m)) + 1
    half = m // 2
    for t in range(n):
        a, b = windows[owner[t]]
        assert a <= t < b, f"token {t} read from window {(a, b)} that does not hold it"
        holding = [(x, y) for x, y in windows if x <= t < y]
        if causal:
            left = t - a
            assert left == max(t - x for x, _ in holding), f"token {t}: not the most left context"
            assert left >= min(t, half), f"token {t}: only {left} tokens of left context"
        else:
            ctx = min(t - a, b - 1 - t)
            assert ctx == max(min(t - x, y - 1 - t) for x, y in holding), f"token {t}: not the most central window"
            # context on both sides, as much as the sequence ends allow
            assert ctx >= min((half - 1) // 2, t, n - 1 - t), f"token {t}: only {ctx} tokens of context"


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,m", [(3000, 62), (3000, 510), (3000, 63), (63, 62), (64, 62), (200, 2), (10, 10), (1, 5),
                                 (0, 5)])
def test_plan_windows(n, m, causal):
    _check_windows(n, m, causal)


def test_plan_windows_short_sequence_is_one_window():
    windows, owner = plan_windows(40, 62)
    assert windows == [(0, 40)] and owner.tolist() == [0] * 40


def test_plan_windows_rejects_tiny_max_content():
    with pytest.raises(ValueError):
        plan_windows(10, 1)


# ----------------------------------------------------------------------------------- special layout


def test_special_layout_bert(bert_tokenizer):
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    assert special_layout(bert_tokenizer) == ([cls], [sep])
    assert special_layout(bert_tokenizer, prepend_bos=True) == ([cls], [sep])  # BERT has no BOS token
    assert bert_tokenizer("a dog")["input_ids"][0] == cls and bert_tokenizer("a dog")["input_ids"][-1] == sep


def test_special_layout_gpt2(gpt2_tokenizer):
    eot = gpt2_tokenizer.convert_tokens_to_ids(tiny.ENDOFTEXT)
    assert gpt2_tokenizer.bos_token_id == eot
    assert special_layout(gpt2_tokenizer) == ([], [])
    assert special_layout(gpt2_tokenizer, prepend_bos=True) == ([eot], [])


def test_special_layout_llama_bos_from_post_processor(llama_tokenizer):
    bos = llama_tokenizer.bos_token_id
    ids = llama_tokenizer("a dog")["input_ids"]
    assert ids[0] == bos  # the tokenizer itself adds BOS
    assert special_layout(llama_tokenizer) == ([bos], [])
    assert special_layout(llama_tokenizer, prepend_bos=True) == ([bos], [])  # and not twice


# ------------------------------------------------------------------------------------------- pooling


def test_pool_words_shapes_and_values():
    # hidden [layer=2, token=5, d_model=3]; token t of layer l holds (100*l + 10*t + d)
    hidden = np.array([[[100 * l + 10 * t + d for d in range(3)] for t in range(5)] for l in range(2)], dtype=float)
    word_tokens = [[0], [1, 2, 3], [4]]
    first = pool_words(hidden, word_tokens, "first")
    last = pool_words(hidden, word_tokens, "last")
    mean = pool_words(hidden, word_tokens, "mean")
    for out in (first, last, mean):
        assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(first[1, 1], [110, 111, 112])
    np.testing.assert_array_equal(last[1, 1], [130, 131, 132])
    np.testing.assert_allclose(mean[1, 1], [120, 121, 122])
    np.testing.assert_allclose(mean[0, 0], hidden[0, 0])
    np.testing.assert_array_equal(first[:, 2], last[:, 2])
    # a borrowed (shared) subword is fine for pooling
    shared = pool_words(hidden, [[0], [0], [1, 2]], "mean")
    np.testing.assert_array_equal(shared[:, 0], shared[:, 1])


def test_unknown_pooling_is_a_config_error():
    with pytest.raises(ConfigError, match="fisrt.*Did you mean 'first'"):
        pool_words(np.zeros((1, 2, 3)), [[0], [1]], "fisrt")
    with pytest.raises(ProbekitError):
        check_pooling("cls")
    assert check_pooling("cls", sentence=True) == "cls"
    assert check_pooling("mean") == "mean"


# ------------------------------------------------------------------------------ pooling that respects the word

def test_contractions_read_a_subword_with_their_letters(minilm_tokenizer):
    """`first` pooling of n't / 's reads the subword with their letters, not the apostrophe; `didn` goes to `did`."""
    s = Sentence.from_words(["I", "did", "n't", "see", "it", "'s", "end", "--"],
                            space_after=[True, False, True, True, False, True, True, False])
    a = align_sentence(minilm_tokenizer, s)
    piece = {w: [a.text[slice(*a.offsets[t])] for t in a.word_tokens[w]] for w in range(len(s))}
    head = [a.text[slice(*a.offsets[h])] for h in a.heads]
    assert piece[1] == ["didn"] and piece[2] == ["'", "t"]  # straddling `didn`: 3 of 4 characters in `did`
    assert head[2] == "t" and piece[5][0] == "'" and head[5] == "s"
    assert head[7] == piece[7][0]  # no letter at all: the first subword
    hidden = np.arange(a.n_tokens, dtype=np.float32)[None, :, None]
    first = pool_words(hidden, a.word_tokens, "first", a.heads)[0, :, 0]
    assert first.tolist() == [float(h) for h in a.heads]


def test_straddling_subword_moves_to_the_word_it_overlaps_most():
    from probekit.activations.align import _by_overlap

    word_tokens = [[0, 1], [2]]
    _by_overlap("abcde", [(0, 2), (2, 5)], [(0, 1), (1, 4), (4, 5)], word_tokens)
    assert word_tokens == [[0], [1, 2]]  # "bcd": 1 character in word 0, 2 in word 1
    word_tokens = [[0], [1]]
    _by_overlap("abcde", [(0, 2), (2, 5)], [(0, 4), (4, 5)], word_tokens)
    assert word_tokens == [[0], [1]]  # moving it would leave word 0 without a subword
