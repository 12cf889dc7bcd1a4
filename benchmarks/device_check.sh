#!/usr/bin/env bash
# Issue 22's GPU lines in one call on a lent GPU machine: `make bench`'s extraction section [1] (per-sentence loop,
# plain HF forward, probekit padded and packed rows, fp32 and bf16, against the measured matmul peaks, MFU against
# the nominal bf16 peak) and the bf16 fidelity section [5], on minilm.
#
#   here, once:  python benchmarks/device_carry.py            (stages .devcarry/: model, EWT slice, conllu)
#   device tool: run(command="bash benchmarks/device_check.sh", carry=[".devcarry"], timeout_s=540)
#   dry run on this machine's CPU: DEVICE=cpu SENTENCES=200 REPEATS=1 PYTHON=.venv/bin/python bash benchmarks/device_check.sh
#
# Environment: DEVICE (cuda), SENTENCES (4000), REPEATS (3), PEAK_TFLOPS (989: the dense bf16 peak of the H100 SXM
# and H200 data sheets; give the card's own elsewhere), PYTHON (python3, the image's PyTorch), OUT (the device
# tool's folder whose files come back; /tmp/probekit-device-check elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.devcarry
if [ ! -d "$CARRY/minilm" ]; then
  echo "device_check.sh: $CARRY/minilm is missing: run 'python benchmarks/device_carry.py' here and carry $CARRY" >&2
  exit 2
fi
OUT=${OUT:-/tmp/probekit-device-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD:$PWD/$CARRY/site" PROBEKIT_CACHE_DIR=${PROBEKIT_CACHE_DIR:-/tmp/probekit-cache}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
conllu=$(ls "$CARRY"/ewt-train-first*.conllu)
{
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '| cuda available', torch.cuda.is_available())"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; fi
  cat "$CARRY/README.txt"
} 2>&1 | tee "$OUT/env.txt"
"$PY" benchmarks/bench.py --device "${DEVICE:-cuda}" --model "$CARRY/minilm" --conllu "$conllu" \
  --extract-sentences "${SENTENCES:-4000}" --extract-repeats "${REPEATS:-3}" --peak-tflops "${PEAK_TFLOPS:-989}" \
  --skip probes memory cache accuracy weights 2>&1 | tee "$OUT/bench.txt"
cp results/bench.json "$OUT/bench.json"
