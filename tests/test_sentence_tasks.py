"""Sentence-level tasks: tense, subject_number, voice, sentence_length."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from probekit.data.conllu_io import Sentence
from probekit.errors import TaskError
from probekit.tasks import get_task
from probekit.tasks.sentence_labels import length_labels, sentence_length, subject_number, tense, voice

SENTENCE_TASKS = {
    "tense": ["Past", "Pres"],
    "subject_number": ["Sing", "Plur"],
    "voice": ["active", "passive"],
    "sentence_length": ["01-04", "05-08", "09-13", "14-19", "20-27", "28+"],
}


def feats(s: str) -> dict[str, str]:
    return dict(kv.split("=") for kv in s.split("|")) if s else {}


def sent(rows: list[tuple[str, str, str, int, str]]) -> Sentence:
    """rows: (word, upos, feats, head (1-based, 0=root), deprel)."""
    return Sentence.from_words([r[0] for r in rows], upos=[r[1] for r in rows],
                               feats=[feats(r[2]) for r in rows], heads=[r[3] for r in rows],
                               deprels=[r[4] for r in rows])


FIN_PRES = "Mood=Ind|Tense=Pres|VerbForm=Fin"
FIN_PAST = "Mood=Ind|Tense=Past|VerbForm=Fin"
PART_PAST = "Tense=Past|VerbForm=Part"

HAVE_EATEN = sent([("I", "PRON", "Number=Sing|Person=1", 3, "nsubj"), ("have", "AUX", FIN_PRES, 3, "aux"),
                   ("eaten", "VERB", PART_PAST, 0, "root"), (".", "PUNCT", "", 3, "punct")])
HE_LEFT = sent([("He", "PRON", "Number=Sing", 2, "nsubj"), ("left", "VERB", FIN_PAST, 0, "root")])
SHE_WAS_HAPPY = sent([("She", "PRON", "Number=Sing", 3, "nsubj"), ("was", "AUX", FIN_PAST, 3, "cop"),
                      ("happy", "ADJ", "Degree=Pos", 0, "root")])
WILL_GO = sent([("We", "PRON", "Number=Plur", 3, "nsubj"), ("will", "AUX", "VerbForm=Fin", 3, "aux"),
                ("go", "VERB", "VerbForm=Inf", 0, "root")])
GO_HOME = sent([("Go", "VERB", "Mood=Imp|VerbForm=Fin", 0, "root"), ("home", "ADV", "", 1, "advmod")])
FRAGMENT = sent([("Great", "ADJ", "Degree=Pos", 2, "amod"), ("place", "NOUN", "Number=Sing", 0, "root")])
CAKE_EATEN = sent([("cakes", "NOUN", "Number=Plur", 3, "nsubj:pass"), ("were", "AUX", FIN_PAST, 3, "aux:pass"),
                   ("eaten", "VERB", PART_PAST + "|Voice=Pass", 0, "root")])
YOU_RUN = sent([("You", "PRON", "Person=2", 2, "nsubj"), ("run", "VERB", FIN_PRES, 0, "root")])


def test_yaml_tasks_load_with_rules():
    for name, labels in SENTENCE_TASKS.items():
        t = get_task(name)
        assert t.level == "sentence" and t.labels == labels
        assert len(t.rule) > 100, f"{name}: the YAML must state its rule"


def test_tense_from_finite_aux_cop_or_root():
    assert tense(HAVE_EATEN) == "Pres"      # finite aux, not the past participle root
    assert tense(HE_LEFT) == "Past"
    assert tense(SHE_WAS_HAPPY) == "Past"   # copula
    assert tense(WILL_GO) is None           # modal: VerbForm=Fin but no Tense
    assert tense(GO_HOME) is None           # imperative
    assert tense(FRAGMENT) is None          # no finite form


def test_tense_first_finite_form_wins():
    # "had been eaten": had (Fin, Past) precedes been (Part) and the root
    s = sent([("it", "PRON", "Number=Sing", 4, "nsubj:pass"), ("had", "AUX", FIN_PAST, 4, "aux"),
              ("been", "AUX", PART_PAST, 4, "aux:pass"), ("eaten", "VERB", PART_PAST, 0, "root")])
    assert tense(s) == "Past"


def test_subject_number():
    assert subject_number(HAVE_EATEN) == "Sing"
    assert subject_number(WILL_GO) == "Plur"
    assert subject_number(CAKE_EATEN) == "Plur"     # nsubj:pass counts
    assert subject_number(YOU_RUN) is None          # no Number feature
    assert subject_number(GO_HOME) is None          # no subject
    outer = sent([("problem", "NOUN", "Number=Sing", 3, "nsubj:outer"), ("is", "AUX", FIN_PRES, 3, "cop"),
                  ("leave", "VERB", "VerbForm=Inf", 0, "root")])
    assert subject_number(outer) is None            # nsubj:outer is not the subject


def test_voice():
    assert voice(CAKE_EATEN) == "passive"
    assert voice(HE_LEFT) == "active"
    assert voice(HAVE_EATEN) == "active"            # perfect, not passive
    assert voice(SHE_WAS_HAPPY) is None             # copular root
    assert voice(FRAGMENT) is None
    headline = sent([("Man", "NOUN", "Number=Sing", 2, "nsubj"), ("arrested", "VERB", PART_PAST + "|Voice=Pass", 0, "root")])
    assert voice(headline) == "passive"
    agent = sent([("Sent", "VERB", PART_PAST, 0, "root"), ("by", "ADP", "", 3, "case"), ("John", "PROPN", "", 1, "obl:agent")])
    assert voice(agent) == "passive"


@pytest.mark.parametrize("n,label", [(1, "01-04"), (4, "01-04"), (5, "05-08"), (13, "09-13"), (14, "14-19"),
                                     (27, "20-27"), (28, "28+"), (90, "28+")])
def test_sentence_length_bins(n, label):
    s = Sentence.from_words(["w"] * n)
    assert get_task("sentence_length").label(s) == label


def test_sentence_length_labels_match_yaml_params():
    t = get_task("sentence_length")
    assert length_labels(t.params["edges"]) == t.labels
    assert sentence_length(Sentence.from_words(["a", "b", "c"]), edges=[2, 5]) == "03-05"
    with pytest.raises(TaskError, match="increasing"):
        length_labels([5, 3])


def test_encode_marks_undefined_sentences():
    ids = get_task("tense").encode([HAVE_EATEN, WILL_GO, HE_LEFT])
    assert ids.tolist() == [1, -1, 0]
    assert ids.dtype == np.int64


def _dev_path() -> Path | None:
    roots = [os.environ.get("PROBEKIT_DATA_DIR"), "/work/shared/data"]
    for r in roots:
        if r and (p := Path(r) / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu").is_file():
            return p
    return None


@pytest.mark.skipif(_dev_path() is None, reason="UD EWT dev not available")
def test_on_gold_dev_every_label_occurs():
    from probekit.data.conllu_io import read_conllu

    sents = read_conllu(_dev_path(), limit=400)
    for name, labels in SENTENCE_TASKS.items():
        ids = get_task(name).encode(sents)
        assert ids.shape == (len(sents),)
        counts = np.bincount(ids[ids >= 0], minlength=len(labels))
        assert (counts > 0).all(), f"{name}: a label never occurs in 400 dev sentences: {dict(zip(labels, counts))}"
        if name == "sentence_length":
            assert (ids >= 0).all()
        else:
            assert (ids == -1).any(), f"{name}: some dev sentences should be left out"
