"""`make bench`'s section 1 summary (benchmarks/bench.py): it names the bf16 ratios only where the bf16 paths ran
(a CPU without bf16 matrix units leaves them out) and computes each ratio from the right pair of paths."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

FP32 = {"per-sentence loop fp32": 1000.0, "plain batched HF fp32": 2000.0, "probekit padded rows fp32": 1600.0,
        "probekit extract fp32": 2400.0}
BF16 = {"plain batched HF bf16": 5000.0, "probekit padded rows bf16": 3000.0, "probekit extract bf16": 4500.0}


def test_ratio_line_fp32_only():
    line = bench.ratio_line(FP32, 0.61)
    assert line == ("ours fp32/per-sentence = 2.40x;  ours fp32/fp32 bound = 61% (target >= 60%);  "
                    "ours/plain HF: fp32 1.20;  packed/padded rows: fp32 1.50x")
    assert "bf16" not in line


def test_ratio_line_with_bf16():
    line = bench.ratio_line(FP32 | BF16, 0.55)
    assert "ours bf16/per-sentence = 4.50x (target >= 4x with bf16 units)" in line
    assert "bf16/fp32 = 1.88x" in line
    assert "ours/plain HF: fp32 1.20, bf16 0.90" in line
    assert "packed/padded rows: fp32 1.50x, bf16 1.50x" in line
