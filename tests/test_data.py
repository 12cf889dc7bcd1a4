"""CoNLL-U reading/writing and the UD dataset locator (local folders, cache, verified download)."""
from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

import loopback
import pytest

from probekit._io import cache_root, sha256_file
from probekit.data import datasets
from probekit.data.conllu_io import Sentence, read_conllu, write_conllu
from probekit.data.datasets import load_split, locate
from probekit.errors import DataError

EWT = "UD_English-EWT"
DEV = "en_ewt-ud-dev.conllu"


def row(i, form: str, head, *, misc: str = "_", upos: str = "X", deprel: str = "dep") -> str:
    """One CoNLL-U word line (LEMMA = FORM, no features)."""
    return "\t".join([str(i), form, form, upos, "_", "_", str(head), deprel, "_", misc])


def write(tmp_path: Path, lines: list[str], name: str = "t.conllu") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------- EWT counts


def test_ewt_dev_counts_and_spans(ewt_dev):
    sents = ewt_dev  # read_conllu of en_ewt-ud-dev.conllu (session fixture)
    assert len(sents) == 2001
    assert sum(len(s) for s in sents) == 25147
    n_mwt_words = 0
    for s in sents:
        assert len(s.spans) == len(s.words) == len(s.heads) == len(s.upos) == len(s.space_after)
        in_mwt = {w for a, b, _ in s.mwts for w in range(a, b + 1)}
        for w, (a, b) in enumerate(s.spans):
            assert 0 <= a <= b <= len(s.text)
            if w not in in_mwt:
                assert s.text[a:b] == s.words[w], (s.sent_id, w)
        for a, b, surface in s.mwts:
            n_mwt_words += b - a + 1
            assert s.text[s.spans[a][0]:s.spans[b][1]] == surface
        assert all(0 <= h <= len(s) for h in s.heads)
        assert s.root() is not None
    assert n_mwt_words > 0


@pytest.mark.slow
def test_ewt_train_counts(data_dir):
    sents = read_conllu(data_dir / "ud" / EWT / "en_ewt-ud-train.conllu")
    assert len(sents) == 12544
    assert sum(len(s) for s in sents) == 204577


def test_limit(ewt_dev_path, ewt_dev):
    assert [s.sent_id for s in read_conllu(ewt_dev_path, limit=3)] == [s.sent_id for s in ewt_dev[:3]]


# ------------------------------------------------------------------------------------- small files


def test_multiword_tokens_and_empty_nodes_are_skipped(tmp_path):
    p = write(tmp_path, [
        "# sent_id = a1",
        "# text = I don't know, do you?",
        row(1, "I", 4),
        "2-3\tdon't" + "\t_" * 8,
        row(2, "do", 4),
        row(3, "n't", 4),
        row(4, "know", 0, misc="SpaceAfter=No"),
        "4.1\tknow\tknow\tVERB\t_\t_\t_\t_\t4:conj\t_",
        row(5, ",", 4),
        row(6, "do", 4),
        row(7, "you", 6, misc="SpaceAfter=No"),
        row(8, "?", 4, misc="SpaceAfter=No"),
        "",
    ])
    (s,) = read_conllu(p)
    assert s.words == ["I", "do", "n't", "know", ",", "do", "you", "?"]
    assert s.heads == [4, 4, 4, 0, 4, 4, 6, 4]
    assert s.mwts == [(1, 2, "don't")]
    # SpaceAfter of a multiword token sits on its range line; the words inside keep the default
    assert s.space_after == [True, True, True, False, True, True, False, False]
    assert [s.text[a:b] for a, b in s.spans] == s.words
    assert s.text == "I don't know, do you?"


def test_multiword_token_space_after_and_missing_text(tmp_path):
    # no '# text' line: the text is rebuilt from FORM + SpaceAfter, MWT surfaces included
    p = write(tmp_path, [
        "# sent_id = a2",
        row(1, "We", 2),
        "2-3\tcannot" + "\t_" * 7 + "\tSpaceAfter=No",
        row(2, "can", 0),
        row(3, "not", 2),
        row(4, "!", 2),
        "",
    ])
    (s,) = read_conllu(p)
    assert s.text == "We cannot!"
    assert s.space_after == [True, True, False, True]
    assert [s.text[a:b] for a, b in s.spans] == ["We", "can", "not", "!"]


def test_space_after_is_kept(ewt_dev):
    s = next(s for s in ewt_dev if not all(s.space_after[:-1]))
    for w in range(len(s) - 1):
        a, b = s.spans[w]
        nxt = s.spans[w + 1][0]
        if nxt > b:  # (words inside one multiword token are adjacent whatever SpaceAfter says)
            assert s.space_after[w] == (s.text[b:nxt] == " ")


# ----------------------------------------------------------------------------------- malformed input


def _bad(tmp_path, lines: list[str], name: str) -> str:
    good = ["# sent_id = ok", "# text = fine", row(1, "fine", 0, deprel="root"), ""]
    p = write(tmp_path, good + lines + [""], name)
    with pytest.raises(DataError) as info:
        read_conllu(p)
    return str(info.value)


def test_wrong_column_count_names_file_and_line(tmp_path):
    msg = _bad(tmp_path, ["# text = a b", row(1, "a", 0), "2\tb\tb\tX\t_\t_\t1\tdep\t_"], "cols.conllu")
    assert f"{tmp_path / 'cols.conllu'}:7:" in msg and "10" in msg


def test_space_separated_line_is_rejected(tmp_path):
    msg = _bad(tmp_path, ["# text = a", "1 a a X _ _ 0 root _ _"], "spaces.conllu")
    assert f"{tmp_path / 'spaces.conllu'}:6:" in msg


def test_non_integer_head_names_file_and_line(tmp_path):
    msg = _bad(tmp_path, ["# text = a b", row(1, "a", 0), row(2, "b", "x")], "head.conllu")
    assert f"{tmp_path / 'head.conllu'}:7:" in msg and "head" in msg.lower()


def test_head_out_of_range_names_file_and_sentence(tmp_path):
    msg = _bad(tmp_path, ["# text = a b", row(1, "a", 0), row(2, "b", 7)], "range.conllu")
    m = re.search(re.escape(str(tmp_path / "range.conllu")) + r":(\d+):", msg)
    assert m and 5 <= int(m.group(1)) <= 7, msg  # a line of the offending sentence
    assert "HEAD 7" in msg


def test_id_out_of_sequence_names_file_and_line(tmp_path):
    msg = _bad(tmp_path, ["# text = a b", row(1, "a", 0), row(3, "b", 1)], "seq.conllu")
    assert f"{tmp_path / 'seq.conllu'}:7:" in msg and "out of sequence" in msg


def test_invalid_utf8_names_line(tmp_path):
    p = tmp_path / "latin1.conllu"
    p.write_bytes(("# text = ok\n" + row(1, "ok", 0) + "\n\n# text = café\n").encode("utf-8")
                  + row(1, "café", 0).encode("latin-1") + b"\n\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:5:") + ".*UTF-8"):
        read_conllu(p)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_conllu(tmp_path / "nope.conllu")


# ------------------------------------------------------------------------------------ write + cache


def test_write_conllu_round_trip(tmp_path, mini_sents):
    # MWT lines are not written back, so compare on what a sentence of syntactic words keeps
    sents = list(mini_sents) + [Sentence.from_words(["Hello", "world", "!"], space_after=[True, False, False],
                                                       sent_id="x-1", upos=["INTJ", "NOUN", "PUNCT"],
                                                       heads=[2, 0, 2], deprels=["discourse", "root", "punct"],
                                                       feats=[{}, {"Number": "Sing"}, {}])]
    out = tmp_path / "out.conllu"
    write_conllu(sents, out)
    back = read_conllu(out)
    assert len(back) == len(sents)
    for a, b in zip(sents, back):
        assert (a.sent_id, a.text, a.words, a.lemmas, a.upos, a.xpos, a.feats, a.heads, a.deprels) == \
               (b.sent_id, b.text, b.words, b.lemmas, b.upos, b.xpos, b.feats, b.heads, b.deprels)
        assert a.space_after[:-1] == b.space_after[:-1]
        assert [a.text[x:y] for x, y in a.spans] == [b.text[x:y] for x, y in b.spans]
    # writing what was read gives the same bytes again
    out2 = tmp_path / "out2.conllu"
    write_conllu(back, out2)
    assert out.read_bytes() == out2.read_bytes()


def test_parse_cache_gives_the_same_sentences_and_survives_damage(tmp_path, mini_sents):
    src = tmp_path / "small.conllu"
    write_conllu(mini_sents, src)
    cache = tmp_path / "cache"
    fresh = read_conllu(src)
    first = read_conllu(src, cache_dir=cache)
    entries = list((cache / "parsed").iterdir())
    assert len(entries) == 1 and sha256_file(src) in entries[0].name
    assert read_conllu(src, cache_dir=cache) == fresh == first
    entries[0].write_bytes(b"not a pickle")
    assert read_conllu(src, cache_dir=cache) == fresh


# ---------------------------------------------------------------------------------------- locate


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment: cache in a tmp folder, no PROBEKIT_DATA_DIR or URL template."""
    monkeypatch.delenv("PROBEKIT_DATA_DIR", raising=False)
    monkeypatch.delenv("PROBEKIT_UD_URL_TEMPLATE", raising=False)
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def _dummy(root: Path, layout: str = "ud") -> Path:
    parts = {"ud": ["ud", EWT, DEV], "repo": [EWT, DEV], "flat": [DEV]}[layout]
    p = root.joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"placeholder in {root.name}\n")
    return p


def test_locate_order(env, tmp_path, ewt_dev_path):
    explicit = _dummy(tmp_path / "explicit")
    from_env = _dummy(tmp_path / "envdir", "repo")
    cached = _dummy(cache_root() / "data")
    env.setenv("PROBEKIT_DATA_DIR", str(tmp_path / "envdir"))
    assert locate("ud_ewt", "dev", data_dir=tmp_path / "explicit", download=False) == explicit
    assert locate("ud_ewt", "dev", data_dir=tmp_path / "empty", download=False) == from_env
    env.delenv("PROBEKIT_DATA_DIR")
    assert locate("ud_ewt", "dev", download=False) == cached
    cached.unlink()
    with _server(ewt_dev_path.parents[2]) as base:
        got = locate("ud_ewt", "dev", url_template=base + "/ud/{repo}/{file}")
    assert got == cache_root() / "data" / "ud" / EWT / DEV
    assert sha256_file(got) == datasets.DATASETS["ud_ewt"].files["dev"][1]


@pytest.mark.parametrize("layout", ["ud", "repo", "flat"])
def test_locate_accepts_three_layouts(env, tmp_path, layout):
    p = _dummy(tmp_path / "d", layout)
    assert locate("ud_ewt", "dev", data_dir=tmp_path / "d", download=False) == p


def test_locate_missing_without_download_lists_places(env, tmp_path):
    env.setenv("PROBEKIT_DATA_DIR", str(tmp_path / "envdir"))
    with pytest.raises(DataError) as info:
        locate("ud_ewt", "dev", data_dir=tmp_path / "explicit", download=False)
    msg = str(info.value)
    for root in (tmp_path / "explicit", tmp_path / "envdir", cache_root() / "data"):
        assert str(root / "ud" / EWT / DEV) in msg
    assert "PROBEKIT_DATA_DIR" in msg


def test_unknown_dataset_and_split(env):
    with pytest.raises(DataError, match="ud_ewt"):
        locate("ud_ewtt", "dev")
    with pytest.raises(DataError, match="dev"):
        locate("ud_ewt", "deev")


def test_load_split_from_data_dir(env, data_dir):
    sents = load_split("ud_ewt", "dev", data_dir=data_dir, limit=5, download=False)
    assert len(sents) == 5 and sents[0].words


# ------------------------------------------------------------------------------------- download


def _server(root: Path) -> loopback.Server:
    """A local HTTP server over ``root`` (the shared data folder)."""
    return loopback.serve(root)


def _dest() -> Path:
    return cache_root() / "data" / "ud" / EWT / DEV


def test_download_arrives_and_is_checked(env, data_dir):
    with _server(data_dir) as base:
        env.setenv("PROBEKIT_UD_URL_TEMPLATE", base + "/ud/{repo}/{file}")
        path = locate("ud_ewt", "dev")
    assert path == _dest()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == datasets.DATASETS["ud_ewt"].files["dev"][1]
    assert len(read_conllu(path)) == 2001
    assert sorted(p.name for p in path.parent.iterdir()) == [DEV]  # no temporary files left
    # the next call finds the cached copy without a server
    env.delenv("PROBEKIT_UD_URL_TEMPLATE")
    assert locate("ud_ewt", "dev", download=False) == path


def test_corrupted_download_is_refused_and_leaves_nothing(env, data_dir):
    with loopback.serve(data_dir, loopback.CorruptHandler) as base:
        with pytest.raises(DataError, match="sha256"):
            locate("ud_ewt", "dev", url_template=base + "/ud/{repo}/{file}")
    folder = _dest().parent
    assert not folder.exists() or list(folder.iterdir()) == []


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_server_is_a_data_error_naming_the_url(env):
    url = f"http://127.0.0.1:{_closed_port()}/ud/{{repo}}/{{file}}"
    with pytest.raises(DataError) as info:
        locate("ud_ewt", "dev", url_template=url)
    msg = str(info.value)
    assert url.format(repo=EWT, file=DEV) in msg and "PROBEKIT_DATA_DIR" in msg
    assert not _dest().exists()
    folder = _dest().parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_unreachable_server_error_also_names_local_places(env, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/{{file}}"
    with pytest.raises(DataError) as info:
        locate("ud_ewt", "dev", data_dir=tmp_path / "explicit", url_template=url)
    assert str(tmp_path / "explicit" / "ud" / EWT / DEV) in str(info.value)


def test_parsed_corpus_shares_repeated_strings(ewt_dev_path, tmp_path):
    """Forms, lemmas, tags and features are interned at parse time and stay shared through the parse cache: a
    corpus holds one object per distinct string (half the memory of EWT train), with equal values."""
    first = read_conllu(ewt_dev_path, limit=200)
    read_conllu(ewt_dev_path, cache_dir=tmp_path)  # writes the cache
    cached = read_conllu(ewt_dev_path, cache_dir=tmp_path, limit=200)
    assert [(s.words, s.lemmas, s.upos, s.feats) for s in cached] == [(s.words, s.lemmas, s.upos, s.feats)
                                                                       for s in first]
    for sents in (first, cached):
        for field in ("words", "lemmas", "upos", "xpos", "deprels"):
            values = [v for s in sents for v in getattr(s, field)]
            assert len({id(v) for v in values}) == len(set(values)), field
        feat_values = [v for s in sents for f in s.feats for v in f.values()]
        assert len({id(v) for v in feat_values}) == len(set(feat_values))


# ------------------------------------------------------------------ trees, byte-order marks, files without syntax


def test_byte_order_mark_is_ignored(tmp_path):
    lines = ["# sent_id = a", "# text = Hi there", row(1, "Hi", 0, deprel="root"), row(2, "there", 1), ""]
    plain = read_conllu(write(tmp_path, lines, "plain.conllu"))
    bom = tmp_path / "bom.conllu"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.conllu").read_bytes())
    assert read_conllu(bom) == plain


def test_a_cycle_or_two_roots_is_not_a_tree(tmp_path):
    msg = _bad(tmp_path, ["# sent_id = cyc", "# text = a b", row(1, "a", 2), row(2, "b", 1)], "cycle.conllu")
    assert f"{tmp_path / 'cycle.conllu'}:5:" in msg and "sentence cyc" in msg and "not a tree" in msg
    msg = _bad(tmp_path, ["# text = a b c", row(1, "a", 0), row(2, "b", 3), row(3, "c", 2)], "cycle2.conllu")
    assert "cycle" in msg and "word 2" in msg
    msg = _bad(tmp_path, ["# text = a b", row(1, "a", 0), row(2, "b", 0)], "roots.conllu")
    assert "2 words have HEAD 0 (1, 2)" in msg


def test_multiword_token_past_the_last_word_names_its_line(tmp_path):
    lines = ["# text = ab", "1-2\tab\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No", row(1, "ab", 0, deprel="root")]
    msg = _bad(tmp_path, lines, "mwt.conllu")
    assert f"{tmp_path / 'mwt.conllu'}:6:" in msg and "1-2" in msg and "has 1" in msg
    msg = _bad(tmp_path, ["# text = a", "1-1\ta\t_\t_\t_\t_\t_\t_\t_\t_", row(1, "a", 0, deprel="root")], "mwt1.conllu")
    assert f"{tmp_path / 'mwt1.conllu'}:6:" in msg and "a < b" in msg


def test_file_without_dependency_annotation(tmp_path):
    lines = ["# sent_id = t", "# text = Dogs bark", row(1, "Dogs", "_", upos="NOUN", deprel="_"),
             row(2, "bark", "_", upos="VERB", deprel="_"), ""]
    [s] = read_conllu(write(tmp_path, lines, "tagged.conllu"))
    assert not s.has_syntax and s.heads == [0, 0] and s.deprels == ["_", "_"]
    write_conllu([s], tmp_path / "again.conllu")
    assert "\t_\t_\t_\t_" in (tmp_path / "again.conllu").read_text() and read_conllu(tmp_path / "again.conllu") == [s]
    [gold] = read_conllu(write(tmp_path, ["# text = a", row(1, "a", 0, deprel="root"), ""], "gold.conllu"))
    assert gold.has_syntax


def test_some_words_without_head_or_relation_name_the_line(tmp_path):
    msg = _bad(tmp_path, ["# sent_id = half", "# text = a b", row(1, "a", 0, deprel="root"),
                          row(2, "b", "_", deprel="_")], "half.conllu")
    assert f"{tmp_path / 'half.conllu'}:8:" in msg and "'half'" in msg
    msg = _bad(tmp_path, ["# text = a b", row(1, "a", 0, deprel="root"), row(2, "b", 1, deprel="_")], "rel.conllu")
    assert f"{tmp_path / 'rel.conllu'}:7:" in msg and "DEPREL '_'" in msg


def test_text_that_disagrees_with_the_words_is_rebuilt_with_a_warning(tmp_path, caplog):
    lines = ["# text = He said \u201chi\u201d.", row(1, "He", 2), row(2, "said", 0, deprel="root"),
             row(3, '"', 4, misc="SpaceAfter=No"), row(4, "hi", 2, misc="SpaceAfter=No"),
             row(5, '"', 4, misc="SpaceAfter=No"), row(6, ".", 2), ""]
    with caplog.at_level("WARNING"):
        [s] = read_conllu(write(tmp_path, lines, "quotes.conllu"))
    assert s.text == 'He said "hi".'
    assert "quotes.conllu" in caplog.text and "1 sentence(s) (first at line 1)" in caplog.text


def test_a_local_file_that_is_not_the_pinned_release_is_warned_about(env, tmp_path, ewt_dev_path, caplog):
    d = tmp_path / "mine" / "ud" / EWT
    d.mkdir(parents=True)
    text = Path(ewt_dev_path).read_text(encoding="utf-8")
    (d / DEV).write_text(text.replace("# newdoc", "# newdoc-edited", 1), encoding="utf-8")
    with caplog.at_level("WARNING"):
        load_split("ud_ewt", "dev", data_dir=tmp_path / "mine", limit=3)
    assert "is not the en_ewt-ud-dev.conllu file of UD_English-EWT r2.16" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_split("ud_ewt", "dev", data_dir=Path(ewt_dev_path).parents[2], limit=3)
    assert "not the" not in caplog.text
