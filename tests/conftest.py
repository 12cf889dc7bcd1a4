"""Shared pytest fixtures: tiny random models (built once per session, offline) and EWT slices.

Model folders are written under a session ``tmp_path_factory`` folder with ``save_pretrained``,
so ``probekit.activations.models.load_model(str(tiny_bert_dir))`` loads them as local HF folders.

The gold data folder is ``$PROBEKIT_DATA_DIR`` when set, else ``<repo>/../shared/data`` (CI
clones the repository with ``shared/`` beside it).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny  # noqa: E402  (the helper module beside this file)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Tiny models gain nothing from threads; on a busy 2-core CI machine the thread pool's spinning makes them
    5-10x slower, and one thread gives identical kernels, hence byte-identical arrays, in parent and children.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: A hand-written CoNLL-U fixture (16 sentences, 121 words; not treebank data): tests that need gold-style
#: sentences but not the treebank itself read it, so that they run without ``shared/data``.
MINI_CONLLU = Path(__file__).resolve().parent / "data" / "mini.conllu"


@pytest.fixture(scope="session")
def mini_sents():
    """The 16 sentences of ``tests/data/mini.conllu`` as ``Sentence`` records."""
    from probekit.data.conllu_io import read_conllu

    return read_conllu(MINI_CONLLU)


@pytest.fixture(params=["mini", pytest.param("ewt_dev", marks=pytest.mark.slow)])
def gold_sents(request, mini_sents):
    """Gold sentences for the alignment and task checks: the hand-written fixture (fast, no treebank needed) and,
    under the slow marker, all 2,001 sentences of EWT dev."""
    return mini_sents if request.param == "mini" else request.getfixturevalue("ewt_dev")


#: Fixtures that read the real treebank: a test that asks for one is marked slow (``make test-fast`` runs without
#: ``shared/data``; ``make test`` and CI run them all).
TREEBANK_FIXTURES = {"data_dir", "ewt_dev_path", "ewt_dev"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TREEBANK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding ``ud/UD_English-EWT/*.conllu`` (fails clearly when it is missing)."""
    d = tiny.data_dir()
    if not (d / "ud" / "UD_English-EWT").is_dir():
        pytest.fail(f"UD data not found under {d}: put shared/data beside the repository or set PROBEKIT_DATA_DIR.")
    return d


@pytest.fixture(scope="session")
def ewt_dev_path(data_dir: Path) -> Path:
    return data_dir / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu"


@pytest.fixture(scope="session")
def ewt_dev(ewt_dev_path: Path):
    """All 2,001 sentences of EWT dev as ``Sentence`` records."""
    from probekit.data.conllu_io import read_conllu

    return read_conllu(ewt_dev_path)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_bert_dir(tiny_root: Path) -> Path:
    """Tiny random BERT (32 wide, 2 layers, 64 positions) + the minilm WordPiece tokenizer."""
    return tiny.build_tiny_bert(tiny_root / "bert")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tiny_root: Path) -> Path:
    """Tiny random GPT-2 (32 wide, 2 layers, 64 positions) + a byte-level BPE GPT2TokenizerFast."""
    return tiny.build_tiny_gpt2(tiny_root / "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_root: Path) -> Path:
    """Tiny random Llama (32 wide, 2 layers, 64 positions) + a BOS-adding byte-level BPE tokenizer."""
    return tiny.build_tiny_llama(tiny_root / "llama")


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, use_fast=True)


@pytest.fixture(scope="session")
def bert_tokenizer(tiny_bert_dir: Path):
    """The tiny BERT's tokenizer as ``AutoTokenizer`` loads it (BertTokenizerFast, WordPiece)."""
    return _load_tokenizer(tiny_bert_dir)


@pytest.fixture(scope="session")
def gpt2_tokenizer(tiny_gpt2_dir: Path):
    """The tiny GPT-2's tokenizer as ``AutoTokenizer`` loads it (GPT2TokenizerFast, byte-level BPE)."""
    return _load_tokenizer(tiny_gpt2_dir)


@pytest.fixture(scope="session")
def llama_tokenizer(tiny_llama_dir: Path):
    """The tiny Llama's tokenizer as ``AutoTokenizer`` loads it (PreTrainedTokenizerFast, BOS by post-processor)."""
    return _load_tokenizer(tiny_llama_dir)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real packaged all-MiniLM-L6-v2 tokenizer (tokenizer only: fast to load)."""
    return _load_tokenizer(tiny.minilm_dir())
