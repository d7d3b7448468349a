#!/usr/bin/env bash
# The trainer's GPU figures (the README's memory table), in one call on a lent GPU machine. Prepared on a
# machine without a GPU: not run yet.
#
# The device image has torch, transformers, accelerate, peft and safetensors, but not diffusers. Carry its
# wheel in .wheels/ (keep it out of git: `echo /.wheels/ >> .git/info/exclude`):
#     pip download diffusers==0.42.1 --no-deps -d .wheels
# then, through the device tool:  run(command="bash bench/gpu_figures.sh", carry=[".wheels"], timeout_s=600)
# The first step writes about 10 GB of random fp16 models (SD-1.5 and blip2-opt-2.7b shapes); with bitsandbytes
# missing, the 8-bit AdamW variant is reported as skipped.
set -euo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp}
python3 -m pip install --quiet --no-index --no-deps --target /tmp/pydeps .wheels/*.whl
export PYTHONPATH=/tmp/pydeps${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt" || true
# SMOKE=1 checks this script on a CPU machine: small shapes, 64 px, 10 rollout steps
if [ -n "${SMOKE:-}" ]; then args=(--shapes small --resolution 64 --steps 10 --repeats 1); else args=(--shapes real --resolution 512 --repeats 2); fi
python3 bench/refl_memory.py "${args[@]}" 2>&1 | tee "$out/refl_memory.txt"
