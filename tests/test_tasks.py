"""Task definitions: the word-level role rules on gold-style trees, what a task reads, and task YAML validation."""
from __future__ import annotations

import pytest

from probekit.data.conllu_io import Sentence
from probekit.errors import TaskError
from probekit.tasks import get_task
from probekit.tasks.base import load_task_file


def tree(rows: list[tuple[str, str, int, str]]) -> Sentence:
    """A sentence from (form, UPOS, HEAD, DEPREL) rows."""
    forms, upos, heads, rels = (list(c) for c in zip(*rows))
    return Sentence.from_words(forms, upos=upos, heads=heads, deprels=rels)


def roles(rows) -> list[tuple[str, str]]:
    s = tree(rows)
    return list(zip(s.words, get_task("syntactic_role").label(s)))


def test_conjunct_of_a_modifier_is_not_a_main_verb():
    # "It created a weak and failed state": failed is conj of the amod weak (EWT's analysis)
    out = roles([("It", "PRON", 2, "nsubj"), ("created", "VERB", 0, "root"), ("a", "DET", 7, "det"),
                 ("weak", "ADJ", 7, "amod"), ("and", "CCONJ", 6, "cc"), ("failed", "VERB", 4, "conj"),
                 ("state", "NOUN", 2, "obj")])
    assert out == [("It", "subject"), ("created", "main_verb"), ("a", "other"), ("weak", "other"),
                   ("and", "other"), ("failed", "other"), ("state", "object")]


def test_conjunct_of_a_clause_head_is_a_main_verb_whatever_its_pos():
    # "He is tall and runs fast": runs is conj of the copular root tall (ADJ)
    out = roles([("He", "PRON", 3, "nsubj"), ("is", "AUX", 3, "cop"), ("tall", "ADJ", 0, "root"),
                 ("and", "CCONJ", 5, "cc"), ("runs", "VERB", 3, "conj"), ("fast", "ADV", 5, "advmod")])
    assert [r for _, r in out] == ["subject", "auxiliary", "other", "other", "main_verb", "other"]


def test_conjunct_chains_are_followed_to_their_first_conjunct():
    # "sang, danced and laughed" under the root; and the same chain under an amod ("singing, dancing crowds")
    out = roles([("They", "PRON", 2, "nsubj"), ("sang", "VERB", 0, "root"), ("danced", "VERB", 2, "conj"),
                 ("laughed", "VERB", 3, "conj")])
    assert [r for _, r in out] == ["subject", "main_verb", "main_verb", "main_verb"]
    out = roles([("singing", "VERB", 4, "amod"), ("dancing", "VERB", 1, "conj"), ("laughing", "VERB", 2, "conj"),
                 ("crowds", "NOUN", 0, "root")])
    assert [r for _, r in out] == ["other", "other", "other", "other"]


def test_a_conj_cycle_built_in_code_ends():
    out = roles([("a", "VERB", 2, "conj"), ("b", "VERB", 1, "conj")])
    assert [r for _, r in out] == ["other", "other"]


def test_tree_tasks_refuse_sentences_without_syntax_and_upos_tasks_without_tags():
    s = Sentence.from_words(["Dogs", "bark"], sent_id="t1", upos=["NOUN", "VERB"], heads=[0, 0], deprels=["_", "_"])
    s.has_syntax = False
    for name in ("subject", "syntactic_role", "tense", "voice", "subject_number"):
        with pytest.raises(TaskError, match=r"Task \w+ reads syntax, but in sentence 't1' HEAD and DEPREL are '_'"):
            get_task(name).encode([s])
        with pytest.raises(TaskError, match="reads syntax"):  # one sentence at a time, as in a notebook
            get_task(name).label(s)
    assert get_task("upos").encode([s]).tolist() == [get_task("upos").labels.index("NOUN"),
                                                    get_task("upos").labels.index("VERB")]
    untagged = Sentence.from_words(["Dogs", "bark"], sent_id="t2", upos=["_", "_"], heads=[2, 0],
                                   deprels=["nsubj", "root"])
    for name in ("upos", "aux_verb", "syntactic_role"):
        with pytest.raises(TaskError, match="reads upos, but in sentence 't2' UPOS is '_'"):
            get_task(name).encode([untagged])
    assert get_task("subject").encode([untagged]).tolist() == [1, 0]
    assert get_task("sentence_length").encode([s]).tolist() == [0]


BASE = "name: mine\nlevel: word\nlabel_fn: aux_verb\n"


@pytest.mark.parametrize("extra, needle", [
    ("labels: not_aux, aux\n", "'labels' must be a non-empty list"),
    ("labels: []\n", "'labels' must be a non-empty list"),
    ("labels: [yes, no]\n", "Quote labels"),
    ("labels: [not_aux, aux, aux]\n", "lists ['aux'] more than once"),
    ("labels: [not_aux, aux]\nversion: two\n", "'version' must be a positive whole number"),
    ("labels: [not_aux, aux]\nversion: 1.5\n", "'version' must be a positive whole number"),
    ("labels: [not_aux, aux]\nparams: edges\n", "'params' must be a mapping"),
])
def test_task_yaml_values_of_the_wrong_kind_name_the_file(tmp_path, extra, needle):
    p = tmp_path / "mine.yaml"
    p.write_text(BASE + extra, encoding="utf-8")
    with pytest.raises(TaskError) as info:
        load_task_file(p)
    assert str(p) in str(info.value) and needle in str(info.value)


def test_task_yaml_label_fn_must_be_a_string(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nlevel: word\nlabels: [a, b]\nlabel_fn: [aux_verb]\n", encoding="utf-8")
    with pytest.raises(TaskError, match="'label_fn' must be a string"):
        load_task_file(p)


def test_a_valid_task_yaml_loads(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text(BASE + "labels: [not_aux, aux]\nversion: 3\n", encoding="utf-8")
    t = load_task_file(p)
    assert (t.name, t.labels, t.version) == ("mine", ["not_aux", "aux"], 3)


#: Hand-checked labels of every shipped task on tests/data/mini.conllu (-1: the sentence is left out).
MINI_SENTENCE_LABELS = {
    "tense": ["Pres", "Past", "Pres", None, "Past", None, "Past", "Past", "Pres", "Past", "Pres", "Pres", None, "Pres",
              "Pres", None],
    "voice": ["active", "passive", None, "active", "active", "active", "active", "active", "active", "active",
              "active", None, "passive", "active", None, "active"],
    "subject_number": ["Sing", "Sing", "Sing", None, "Plur", None, "Sing", "Plur", "Sing", "Sing", "Sing", "Sing",
                       "Sing", "Plur", "Plur", "Plur"],
}


def test_sentence_task_labels_on_the_mini_fixture(mini_sents):
    for name, expected in MINI_SENTENCE_LABELS.items():
        task = get_task(name)
        got = [task.labels[i] if i >= 0 else None for i in task.encode(mini_sents)]
        assert got == expected, name


def test_word_task_labels_on_the_mini_fixture(mini_sents):
    s = {x.sent_id: x for x in mini_sents}
    aux = get_task("aux_verb")
    first = s["mini-01"]  # I do n't think they 're gon na win .
    assert [aux.labels[i] for i in aux.encode([first])] == \
        ["not_aux", "aux", "not_aux", "not_aux", "not_aux", "aux", "not_aux", "not_aux", "not_aux", "not_aux"]
    subj = get_task("subject")
    passive = s["mini-02"]  # The cake was eaten by the children .
    assert [subj.labels[i] for i in subj.encode([passive])] == \
        ["not_subj", "subj", "not_subj", "not_subj", "not_subj", "not_subj", "not_subj", "not_subj"]
    assert list(zip(passive.words, get_task("syntactic_role").label(passive)))[:4] == \
        [("The", "other"), ("cake", "subject"), ("was", "auxiliary"), ("eaten", "main_verb")]
    # multiword tokens are split into syntactic words; the empty node of mini-09 is not a word
    assert first.words[1:3] == ["do", "n't"] and s["mini-09"].words == ["I", "like", "tea", "and", "Mary", "coffee", "."]
