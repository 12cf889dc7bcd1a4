"""Sentence records, CoNLL-U reading and the treebank datasets."""
from probekit.data.conllu_io import Sentence, read_conllu, write_conllu

__all__ = ["Sentence", "read_conllu", "write_conllu"]
