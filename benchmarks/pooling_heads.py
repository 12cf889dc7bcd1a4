"""How many EWT words `first` pooling reads from another subword since it skips punctuation-only subwords, and how
many subwords straddle a word boundary (minilm tokenizer). Run: ``python benchmarks/pooling_heads.py``."""
from transformers import AutoTokenizer

from probekit.activations.align import align_batch
from probekit.activations.models import resolve
from probekit.data.conllu_io import read_conllu
from probekit.data.datasets import locate

_, path, _, _ = resolve("minilm")
tok = AutoTokenizer.from_pretrained(str(path))
for split in ("dev", "test"):
    sents = read_conllu(locate("ud_ewt", split))
    al = align_batch(tok, sents)
    moved = aux = aux_moved = straddle = 0
    for s, a in zip(sents, al):
        for w, (toks, h) in enumerate(zip(a.word_tokens, a.heads)):
            if s.upos[w] == "AUX":
                aux += 1
            if h != toks[0]:
                moved += 1
                aux_moved += s.upos[w] == "AUX"
        for t, (x, y) in enumerate(a.offsets):
            if sum(1 for (p, q) in a.spans if p < y and q > x) > 1:
                straddle += 1
    print(split, "words whose first-pooled subword changed:", moved, "of which AUX:", aux_moved, "of", aux,
          f"({100 * aux_moved / aux:.1f}%)", "straddling subwords:", straddle)
