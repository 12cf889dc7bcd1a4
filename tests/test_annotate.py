"""Raw text -> Sentence records with spaCy (probekit.data.annotate)."""
from __future__ import annotations

import pytest

from probekit.data.annotate import CLEAR_TO_UD, annotate_file, annotate_pretokenized, annotate_text, clear_to_ud
from probekit.data.conllu_io import Sentence, read_conllu
from probekit.errors import ConfigError, DataError, ModelError
from probekit.tasks import get_task

pytest.importorskip("spacy")

TEXT = ("I am learning LLM.\n"
        "I have eaten.\n"
        "\n"
        "I have a dog.\n"
        "  She said:  \"we don't know\" and\tleft!  \n"
        "The cake was eaten by the kids.\n")


@pytest.fixture(scope="module")
def sents() -> list[Sentence]:
    return annotate_text(TEXT)


def _by_word(s: Sentence, word: str) -> int:
    return s.words.index(word)


def test_lines_mode_one_sentence_per_nonempty_line(sents):
    assert [s.text for s in sents] == ["I am learning LLM.", "I have eaten.", "I have a dog.",
                                       "She said:  \"we don't know\" and left!", "The cake was eaten by the kids."]
    assert [s.sent_id for s in sents] == ["s-1", "s-2", "s-3", "s-4", "s-5"]


def test_columns_and_spans(sents):
    for s in sents:
        n = len(s)
        assert all(len(col) == n for col in (s.lemmas, s.upos, s.xpos, s.feats, s.heads, s.deprels, s.space_after))
        assert [s.text[a:b] for a, b in s.spans] == s.words
        assert sum(h == 0 for h in s.heads) == 1 and s.deprels[s.heads.index(0)] == "root"
        assert all(0 <= h <= n for h in s.heads)
        assert all(d == d.strip() and d for d in s.deprels)
        assert all(d not in CLEAR_TO_UD or d in CLEAR_TO_UD.values() for d in s.deprels), s.deprels
    dont = sents[3]
    assert dont.words[dont.words.index("do") + 1] == "n't" and not dont.space_after[dont.words.index("do")]


def test_syntactic_role_of_i_am_learning_llm(sents):
    assert get_task("syntactic_role").label(sents[0]) == ["subject", "auxiliary", "main_verb", "object", "other"]


def test_have_aux_vs_main_verb(sents):
    eaten, dog = sents[1], sents[2]
    assert eaten.upos[_by_word(eaten, "have")] == "AUX" and eaten.deprels[_by_word(eaten, "have")] == "aux"
    assert dog.upos[_by_word(dog, "have")] == "VERB" and dog.deprels[_by_word(dog, "have")] == "root"
    assert eaten.feats[_by_word(eaten, "have")].get("Tense") == "Pres"


def test_sentence_tasks_on_silver(sents):
    cake = sents[4]
    assert cake.deprels[_by_word(cake, "cake")] == "nsubj:pass"
    assert cake.deprels[_by_word(cake, "kids")] == "obl:agent" and cake.deprels[_by_word(cake, "by")] == "case"
    assert get_task("voice").label(cake) == "passive"
    assert get_task("tense").label(cake) == "Past"
    assert get_task("subject_number").label(cake) == "Sing"
    assert get_task("voice").label(sents[2]) == "active"
    assert get_task("tense").label(sents[1]) == "Pres"


def test_copula_is_converted_to_ud():
    (s,) = annotate_text("She is happy with it.")
    happy, is_ = _by_word(s, "happy"), _by_word(s, "is")
    assert s.heads[happy] == 0 and s.deprels[is_] == "cop" and s.heads[is_] == happy + 1
    assert s.heads[_by_word(s, "She")] == happy + 1 and s.deprels[_by_word(s, "it")] == "obl"
    assert get_task("voice").label(s) is None and get_task("tense").label(s) == "Pres"


def test_paragraphs_mode_splits_sentences():
    text = "We went home early. Then we slept.\nIt was late.\n\nA new paragraph starts here."
    para = annotate_text(text, mode="paragraphs")
    assert [s.text for s in para] == ["We went home early.", "Then we slept.", "It was late.",
                                      "A new paragraph starts here."]
    # a line break inside a sentence becomes a space in Sentence.text (CoNLL-U text is one line)
    wrapped = annotate_text("The trip ended\nin the rain. We were\nwet.", mode="paragraphs")
    assert [s.text for s in wrapped] == ["The trip ended in the rain.", "We were wet."]
    assert all([s.text[a:b] for a, b in s.spans] == s.words for s in para + wrapped)
    # the same text in lines mode: the first line stays one sentence (one tree)
    lines = annotate_text(text, mode="lines")
    assert lines[0].text == "We went home early. Then we slept." and lines[0].heads.count(0) == 1
    assert len(lines) == 3


def test_empty_text_errors(tmp_path):
    for text in ("", "   \n\t\n  "):
        with pytest.raises(DataError, match="no sentences"):
            annotate_text(text)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt"):
        annotate_file(empty)


def test_invalid_utf8_errors_with_file_line_and_offset(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Fine line.\nCaf\xe9 au lait.\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        annotate_file(bad)
    msg = str(e.value)
    assert "latin1.txt:2" in msg and "byte offset 14" in msg and "UTF-8" in msg


def test_missing_file_and_bad_settings(tmp_path):
    with pytest.raises(DataError, match="not found"):
        annotate_file(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="paragraphs"):
        annotate_text("Hi.", mode="paragraph")
    with pytest.raises(ModelError, match="no_such_spacy_model"):
        annotate_text("Hi.", model="no_such_spacy_model")


def test_round_trip_through_conllu(tmp_path):
    src = tmp_path / "mine.txt"
    src.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "mine.conllu"
    sents = annotate_file(src, out)
    back = read_conllu(out)
    assert len(back) == len(sents) == 5
    for a, b in zip(sents, back):
        assert (a.sent_id, a.text, a.words, a.lemmas, a.upos, a.xpos, a.feats, a.heads, a.deprels, a.space_after,
                a.spans) == (b.sent_id, b.text, b.words, b.lemmas, b.upos, b.xpos, b.feats, b.heads, b.deprels,
                             b.space_after, b.spans)
    assert back[0].sent_id == "mine-1"


def test_pretokenized_keeps_gold_words():
    gold = Sentence.from_words(["I", "do", "n't", "know", "."], space_after=[True, False, True, False, False],
                               sent_id="g1")
    (s,) = annotate_pretokenized([gold])
    assert s.words == gold.words and s.text == gold.text == "I don't know." and s.sent_id == "g1"
    assert s.upos[1] == "AUX" and s.heads.count(0) == 1


def test_clear_to_ud_restructuring_without_spacy():
    # "sat on the mat": on <-prep- sat, mat <-pobj- on  ==>  mat <-obl- sat, on <-case- mat
    upos = ["PRON", "VERB", "ADP", "DET", "NOUN"]
    heads, rels = clear_to_ud(upos, ["he", "sit", "on", "the", "mat"], [1, -1, 1, 4, 2],
                              ["nsubj", "ROOT", "prep", "det", "pobj"])
    assert heads == [1, -1, 4, 4, 1] and rels == ["nsubj", "root", "case", "det", "obl"]
    # "There is a dog": existential be stays the head, attr -> nsubj
    heads, rels = clear_to_ud(["PRON", "VERB", "DET", "NOUN"], ["there", "be", "a", "dog"], [1, -1, 3, 1],
                              ["expl", "ROOT", "det", "attr"])
    assert heads == [1, -1, 3, 1] and rels == ["expl", "root", "det", "nsubj"]
    # "want to go": infinitival to (PART, aux) -> mark
    _, rels = clear_to_ud(["VERB", "PART", "VERB"], ["want", "to", "go"], [-1, 2, 0], ["ROOT", "aux", "xcomp"])
    assert rels == ["root", "mark", "xcomp"]
