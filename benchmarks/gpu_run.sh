#!/usr/bin/env bash
# The issue-16 efficiency suite on one GPU, in one command (< 8 minutes on an H100/H200): LLaVA-1.5-7B and
# LLaVA-NeXT-7B geometries (random weights; timings do not depend on them), bf16, SDPA, batches 1 and 8, TRIO's
# probe compiled with CUDA graphs (probe_compile="auto") — and FlashAttention-2 when flash_attn is installed.
#   bash benchmarks/gpu_run.sh                 # writes JSON + text tables to $OUT (or ./out)
# On a machine without package access, carry wheels of the pinned transformers (and anything else missing) in
# .whl/: they are installed into /tmp/site first. The checkout's src/ is used without installing the package.
# With a real checkpoint, profile it instead:  trio-vlm profile --model llava-hf/llava-1.5-7b-hf --device cuda ...
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-out}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$out/gpu.txt"
common=(--device cuda --dtype bfloat16 --hidden 4096 --intermediate 11008 --vision-hidden 1024 --vision-layers 24
        --geometries "${GEOMETRIES:-llava-1.5,llava-next}" --batches "${BATCHES:-1,8}"
        --probe-compile "${PROBE_COMPILE:-auto}" --rounds "${ROUNDS:-3}" --decode-tokens "${DECODE:-8}")
python3 benchmarks/bench_efficiency.py "${common[@]}" --attn sdpa --json-out "$out/gpu_sdpa.json" 2>&1 \
  | tee "$out/gpu_sdpa.txt"
if python3 -c "import flash_attn" 2>/dev/null; then
  python3 benchmarks/bench_efficiency.py "${common[@]}" --attn flash_attention_2 --json-out "$out/gpu_fa2.json" 2>&1 \
    | tee "$out/gpu_fa2.txt"
else
  echo "flash_attn not installed: FlashAttention-2 run skipped" | tee -a "$out/gpu.txt"
fi
