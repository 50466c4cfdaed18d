#!/usr/bin/env bash
# The efficiency suite on a GPU at LLaVA-1.5-7B geometry (random weights; timings do not depend on them),
# bf16, SDPA — and FlashAttention-2 when flash_attn is installed. Writes JSON next to $OUT (or ./out).
#   bash benchmarks/gpu_run.sh
# With a real checkpoint, profile it instead:  trio-vlm profile --model llava-hf/llava-1.5-7b-hf --device cuda ...
set -euo pipefail
out="${OUT:-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
common=(--device cuda --dtype bfloat16 --hidden 4096 --intermediate 11008 --vision-hidden 1024 --vision-layers 24
        --rounds "${ROUNDS:-5}" --decode-tokens "${DECODE:-16}" --batch "${BATCH:-1}")
python3 benchmarks/bench_efficiency.py "${common[@]}" --attn sdpa --json-out "$out/gpu_sdpa_b${BATCH:-1}.json" 2>&1 \
  | tee "$out/gpu_sdpa_b${BATCH:-1}.txt"
if python3 -c "import flash_attn" 2>/dev/null; then
  python3 benchmarks/bench_efficiency.py "${common[@]}" --attn flash_attention_2 --json-out "$out/gpu_fa2.json" 2>&1 \
    | tee "$out/gpu_fa2.txt"
else
  echo "flash_attn not installed: FlashAttention-2 run skipped" | tee -a "$out/gpu.txt"
fi
