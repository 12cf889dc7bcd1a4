"""The device check's staging (benchmarks/device_carry.py): the treebank slice it carries is the first N sentences
of the file, byte for byte, and parses as such."""
import importlib.util
from pathlib import Path

from probekit.data.conllu_io import read_conllu

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("device_carry", ROOT / "benchmarks" / "device_carry.py")
device_carry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(device_carry)

BLOCK = "# text = {w} sleeps .\n1\t{w}\t{w}\tNOUN\tNN\t_\t2\tnsubj\t_\t_\n2\tsleeps\tsleep\tVERB\tVBZ\t_\t0\troot\t_\t_\n" \
        "3\t.\t.\tPUNCT\t.\t_\t2\tpunct\t_\t_\n\n"


def test_first_sentences_copies_whole_blocks(tmp_path):
    src = tmp_path / "all.conllu"
    src.write_text("".join(BLOCK.format(w=w) for w in ("Anna", "Ben", "Cleo", "Dan")), encoding="utf-8")
    dst = tmp_path / "first.conllu"
    assert device_carry.first_sentences(src, dst, 3) == 3
    assert dst.read_text(encoding="utf-8") == "".join(BLOCK.format(w=w) for w in ("Anna", "Ben", "Cleo"))
    assert [s.words[0] for s in read_conllu(dst)] == ["Anna", "Ben", "Cleo"]
    # asking for more than the file has copies all of it
    assert device_carry.first_sentences(src, tmp_path / "all2.conllu", 10) == 4
    assert (tmp_path / "all2.conllu").read_bytes() == src.read_bytes()
