"""Property-based tests of probekit.activations.align on random sentences with odd Unicode.

Words mix accented Latin (precomposed and decomposed), lone combining marks, emoji (skin tones,
ZWJ sequences, flags, variation selectors), CJK, Arabic and Hebrew (with vowel marks and RTL
marks), zero-width characters, punctuation runs, digits and symbols; some words have no space
after them, so neighbours run together in the text. For the BERT WordPiece tokenizer and the
GPT-2 / Llama-style byte-level BPE tokenizers the guarantees of :mod:`probekit.activations.align` must hold
(see :func:`tiny.check_alignment`).
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from probekit.activations.align import align_batch, align_sentence
from probekit.data.conllu_io import Sentence
from probekit.errors import ModelError

import tiny

COMBINING = ["\u0301", "\u0308", "\u0323", "\u0327", "\u20dd", "\u064e", "\u05b8"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u200e", "\u200f", "\u00ad"]
EMOJI = ["😀", "👍🏽", "👩\u200d💻", "👨\u200d👩\u200d👧", "🇺🇸", "❤\ufe0f", "🏳\ufe0f\u200d🌈", "🤷🏾\u200d♀\ufe0f"]
SCRIPTS = ["東京", "漢字", "かな", "한국어", "مرحبا", "سَلام", "שָׁלוֹם", "עברית", "Ελλάδα", "Москва", "ไทย"]
LATIN = ["café", "cafe\u0301", "naïve", "Straße", "ø", "Ñandú", "coöperate", "İstanbul", "ﬁne", "Ⅻ"]
PUNCT = ["...", "!?!", "--", "«", "»", "“", "”", "'", "\"", "(", ")", ",", ".", "n't", "'s", "—", "…", "%", "$", "€"]
ASCII = ["th", "e", "an", "d", "in", "g", "er", "s", "o", "n", "ing", "he", "re", "I", "can", "not", "cannot", "gon", "na", "do", "a", "the", "dog", "x", "ab", "cd", "2023", "4.5", "http"]

POOL = "".join(COMBINING + ZERO_WIDTH) + "aeiouxyzAÉñçß東字ひ한مشא05.,!?-'\"()😀🏽\u200d💻"

fragment = st.sampled_from(COMBINING + ZERO_WIDTH + EMOJI + SCRIPTS + LATIN + PUNCT + ASCII)
word = st.one_of(
    fragment,
    st.lists(fragment, min_size=2, max_size=3).map("".join),
    st.text(alphabet=POOL, min_size=1, max_size=6),
).filter(lambda w: w != "" and not any(c.isspace() for c in w))


@st.composite
def sentences(draw) -> Sentence:
    words = draw(st.lists(word, min_size=1, max_size=12))
    space_after = draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
    return Sentence.from_words(words, space_after=space_after)


#: Examples per tokenizer; raise it for a deeper search (e.g. PROBEKIT_HYPOTHESIS_EXAMPLES=2000).
MAX_EXAMPLES = int(os.environ.get("PROBEKIT_HYPOTHESIS_EXAMPLES", "150"))

TOKENIZERS = ["bert_tokenizer", "gpt2_tokenizer", "llama_tokenizer"]


def _check(tokenizer, sentence: Sentence) -> None:
    plain = tokenizer(sentence.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    if not plain["input_ids"]:
        # nothing at all to represent the words with: a clear error, not an empty alignment
        event("tokenizer gives no subwords: ModelError")
        with pytest.raises(ModelError):
            align_batch(tokenizer, [sentence])
        return
    aligned = align_batch(tokenizer, [sentence])[0]
    event(f"repaired={min(aligned.repaired, 3)}")
    event(f"borrowed={min(aligned.borrowed, 3)}")
    tiny.check_alignment(tokenizer, sentence, aligned)
    # the text is changed only where a subword would otherwise swallow a whole word
    assert (aligned.repaired > 0) == tiny.needs_repair(sentence.text, sentence.spans, plain["offset_mapping"])
    if aligned.repaired == 0:
        assert aligned.text == sentence.text
    # batch alignment and one-sentence alignment agree
    single = align_sentence(tokenizer, sentence)
    assert single.word_tokens == aligned.word_tokens and single.token_ids == aligned.token_ids


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sentence=sentences())
@example(sentence=Sentence.from_words(["can", "not", "gon", "na", "do", "n't"],
                                      space_after=[False, True, False, True, False, True]))
@example(sentence=Sentence.from_words(["a", "\u0301", "\u200b", "b"], space_after=[False, True, False, True]))
@example(sentence=Sentence.from_words(["\u200b", "x", "\u0301"]))
@example(sentence=Sentence.from_words(["👩\u200d💻", "\u200d", "東京", "مرحبا"], space_after=[False, False, False, True]))
def test_alignment_properties(tok_name: str, sentence: Sentence, request) -> None:
    _check(request.getfixturevalue(tok_name), sentence)


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@settings(max_examples=max(10, MAX_EXAMPLES // 4), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batch=st.lists(sentences(), min_size=2, max_size=6), chunk=st.integers(1, 4))
def test_batch_chunking_does_not_change_alignment(tok_name: str, batch: list[Sentence], chunk: int, request) -> None:
    tok = request.getfixturevalue(tok_name)
    if any(not tok(s.text, add_special_tokens=False)["input_ids"] for s in batch):
        return  # covered by test_alignment_properties
    whole = align_batch(tok, batch)
    parts = align_batch(tok, batch, chunk=chunk)
    assert [a.word_tokens for a in whole] == [a.word_tokens for a in parts]
    assert [a.token_ids for a in whole] == [a.token_ids for a in parts]
