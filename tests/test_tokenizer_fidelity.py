"""Issue 3: the model must see exactly the subwords its tokenizer gives for the plain sentence.

For BERT WordPiece and GPT-2 / Llama byte-level BPE (tiny test models loaded with
``probekit.activations.models.load_model``, the real packaged minilm tokenizer, and — marked slow — the real
SmolLM2 tokenizer), the ids probekit feeds a model for one sentence, ``prefix + token_ids +
suffix`` (``special_layout`` + ``align_batch``), must equal ``tokenizer(text)["input_ids"]`` for
the plain sentence string. And words are never tokenized one by one: in byte-level BPE a word's
first subword carries the leading-space marker ``Ġ`` exactly when the word follows a space.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probekit.activations.align import align_batch, special_layout
from probekit.data.conllu_io import Sentence

SPACE_MARK = "Ġ"

#: Sentences with odd Unicode, punctuation runs and words written together (space_after False).
ODD = [
    (["Café", "naïve", "cafe\u0301", "—", "Straße", "!"], [True, True, False, True, False, False]),
    (["I", "❤\ufe0f", "NY", "👩\u200d💻", "👍🏽", "🇺🇸", "..."], [True, True, False, True, True, False, False]),
    (["東京", "は", "大きい", "。"], [False, False, False, False]),
    (["مرحبا", "بالعالم", "،", "שָׁלוֹם", "\u200f", "עולם"], [True, False, True, True, True, False]),
    (["\"", "Well", "...", "\"", "he", "said", "--", "(", "sigh", ")", "!!!"],
     [False, False, True, True, True, True, True, False, False, True, False]),
    (["can", "not", "gon", "na", "do", "n't", "wan", "na"], [False, True, False, True, False, True, False, False]),
    (["a", "\u0301", "b", "\u200b", "c", "e", "-", "mail", "4.5", "%"], [False, True, False, True, True, False, False,
                                                                        True, False, False]),
    (["http://example.com/a?b=1", "x@y.org", "$", "5", "€", "10", "™"], [True, True, False, True, False, True, False]),
]


def odd_sentences() -> list[Sentence]:
    return [Sentence.from_words(w, space_after=sp, sent_id=f"odd-{i}") for i, (w, sp) in enumerate(ODD)]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_models(tiny_bert_dir, tiny_gpt2_dir, tiny_llama_dir):
    """The tiny test models as the pipeline loads them (local HF folders through load_model)."""
    from probekit.activations.models import load_model

    return {"bert": load_model(str(tiny_bert_dir), device="cpu"),
            "gpt2": load_model(str(tiny_gpt2_dir), device="cpu"),
            "llama": load_model(str(tiny_llama_dir), device="cpu")}


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from probekit.activations.models import load_model

    return load_model("smollm2-135m", device="cpu").tokenizer


TOKENIZERS = [
    pytest.param("tiny-bert", id="tiny-bert"),
    pytest.param("tiny-gpt2", id="tiny-gpt2"),
    pytest.param("tiny-llama", id="tiny-llama"),
    pytest.param("minilm", id="minilm"),
    pytest.param("smollm2", id="smollm2", marks=pytest.mark.slow),
]
BYTE_LEVEL = ["tiny-gpt2", "tiny-llama", pytest.param("smollm2", marks=pytest.mark.slow)]


@pytest.fixture
def tok(request):
    name = request.param
    if name.startswith("tiny-"):
        return request.getfixturevalue("tiny_models")[name[5:]].tokenizer
    if name == "minilm":
        return request.getfixturevalue("minilm_tokenizer")
    return request.getfixturevalue("smollm2_tokenizer")


def _layout_params():
    out = []
    for p in TOKENIZERS:
        marks = list(p.marks)
        out.append(pytest.param(p.values[0], id=p.id, marks=marks))
    return out


# ----------------------------------------------------------------------------------------- checks


def _model_input(tokenizer, aligned) -> list[int]:
    prefix, suffix = special_layout(tokenizer)
    return list(prefix) + list(aligned.token_ids) + list(suffix)


def _check_same_ids(tokenizer, sentences: list[Sentence]) -> int:
    """Assert probekit's model input equals tokenizer(text) for every unrepaired sentence; return #repaired."""
    repaired = 0
    for s, a in zip(sentences, align_batch(tokenizer, sentences)):
        if a.repaired:
            # the one documented exception: a space was inserted so that no subword spans two words;
            # the model then sees exactly the tokenizer's ids for the repaired text
            repaired += 1
            assert _model_input(tokenizer, a) == tokenizer(a.text, verbose=False)["input_ids"], s.sent_id
            continue
        assert a.text == s.text
        assert _model_input(tokenizer, a) == tokenizer(s.text, verbose=False)["input_ids"], (s.sent_id, s.text)
    return repaired


@pytest.mark.parametrize("tok", _layout_params(), indirect=True)
def test_model_input_equals_tokenizer_on_gold_text(tok, gold_sents):
    repaired = _check_same_ids(tok, gold_sents)
    # measured on EWT dev: minilm 48, tiny BPEs 18, SmolLM2 141 sentences (its BPE merges punctuation
    # runs such as ',"' '.)' and 'its' = it + s); a bound well above that catches a runaway repair
    if len(gold_sents) > 1000:  # a rate on real text (the fixture is made of hard cases on purpose)
        assert repaired < 0.10 * len(gold_sents)


@pytest.mark.parametrize("tok", _layout_params(), indirect=True)
def test_model_input_equals_tokenizer_on_odd_text(tok):
    sents = odd_sentences()
    repaired = _check_same_ids(tok, sents)
    assert repaired < len(sents)


@pytest.mark.parametrize("tok", TOKENIZERS, indirect=True)
def test_content_ids_equal_tokenizer_without_specials(tok, mini_sents):
    """Independent of special_layout: the content subwords are the tokenizer's own, in one piece."""
    sents = list(mini_sents) + odd_sentences()
    for s, a in zip(sents, align_batch(tok, sents)):
        assert a.token_ids == tok(a.text, add_special_tokens=False, verbose=False)["input_ids"]
        if not a.repaired:
            assert a.text == s.text


def _check_space_marker(tokenizer, sentences: list[Sentence]) -> int:
    """Assert the 'Ġ' rule for every word of every sentence; return how many words were checked."""
    checked = 0
    for s, a in zip(sentences, align_batch(tokenizer, sentences)):
        pieces = tokenizer.convert_ids_to_tokens(a.token_ids)
        owned = {t for ts in a.word_tokens for t in ts}
        shared = {t for t in owned if sum(t in ts for ts in a.word_tokens) > 1}
        for w, toks in enumerate(a.word_tokens):
            if set(toks) & shared:
                continue  # a borrowed subword says nothing about this word's own tokenization
            start, end = a.spans[w]
            after_space = start > 0 and a.text[start - 1] == " "
            first = toks[0]
            marked = pieces[first].startswith(SPACE_MARK) or (
                first > 0 and pieces[first - 1] == SPACE_MARK and first - 1 not in owned)
            assert marked == after_space, (s.sent_id, s.words[w], [pieces[t] for t in toks], a.text)
            if " " not in a.text[start:end]:
                for t in toks[1:]:
                    assert not pieces[t].startswith(SPACE_MARK), (s.sent_id, s.words[w], [pieces[t] for t in toks])
            checked += 1
    return checked


@pytest.mark.parametrize("tok", BYTE_LEVEL, indirect=True)
def test_space_marker_exactly_after_spaces(tok, gold_sents):
    sents = list(gold_sents) + odd_sentences()
    # words sharing a subword are skipped (say nothing); nearly every word is checked
    assert _check_space_marker(tok, sents) > 0.95 * sum(len(s) for s in sents)


def test_space_marker_rule_would_catch_word_by_word_tokenization(gpt2_tokenizer, mini_sents):
    """The check above can fail: tokenizing words one by one loses the 'Ġ' marks."""
    s = mini_sents[0]
    one_by_one = [gpt2_tokenizer.convert_ids_to_tokens(gpt2_tokenizer(w, add_special_tokens=False)["input_ids"])
                  for w in s.words]
    assert not any(p[0].startswith(SPACE_MARK) for p in one_by_one)
    assert any(sp for sp in s.space_after[:-1])  # but the sentence has spaces, so marks are expected


# ------------------------------------------------------------------------------- random odd text


WORD = st.sampled_from(["the", "can", "not", "é", "e\u0301", "😀", "👩\u200d💻", "東京", "مرحبا", "שלום", "...", "!",
                        "\"", "n't", "'s", "4.5", "%", "\u200b", "x", "Ñ", "ﬁ"])


@pytest.mark.parametrize("name", ["bert_tokenizer", "gpt2_tokenizer", "minilm_tokenizer"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(words=st.lists(WORD, min_size=1, max_size=8), data=st.data())
def test_model_input_equals_tokenizer_random(name, words, data, request):
    tokenizer = request.getfixturevalue(name)
    space_after = data.draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    s = Sentence.from_words(words, space_after=space_after)
    if not tokenizer(s.text, add_special_tokens=False)["input_ids"]:
        return  # nothing to feed (all words dropped): test_align covers the error
    _check_same_ids(tokenizer, [s])
