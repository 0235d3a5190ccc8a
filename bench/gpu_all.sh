#!/usr/bin/env bash
# Every GPU check and benchmark of docs/benchmarks.md in one command, on a CUDA machine:
#     bash bench/gpu_all.sh            (logs and Markdown tables under $OUT, default bench-out/)
# Works from a checkout without installing (PYTHONPATH=.); offline, point TIKTOKEN_CACHE_DIR at a
# folder holding tiktoken's GPT-2 files (the throughput benchmark prepares builtin:stdlib).
# Each step runs even if an earlier one failed; the exit status says whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-out}
mkdir -p "$out"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
status=0

step() {  # step NAME COMMAND...: run, keep the output in $out/NAME.txt, remember a failure
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name FAILED (exit $rc)"; status=1; }
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
step kernel_tests python -m pytest -q tests/test_kernel_quadratic.py tests/test_kernel_kan.py
step ffn_768 python bench/ffn.py --widths 768
step ffn_1024 python bench/ffn.py --widths 1024
step train_step python bench/ffn.py --no-table --step --kinds mlp,swiglu,quadratic,kan
step train_throughput python bench/train_throughput.py
step generate python bench/generate.py --config configs/gpt2-small.toml
# DDP vs FSDP2 (and activation checkpointing) on every GPU of the machine: tokens/s, peak memory
ngpu=$(nvidia-smi -L | wc -l)
if [ "$ngpu" -ge 2 ]; then
    step fsdp_vs_ddp python -m torch.distributed.run --standalone --nproc_per_node "$ngpu" bench/distributed.py
else
    echo "== fsdp_vs_ddp skipped: $ngpu GPU (needs 2 or more)" | tee "$out/fsdp_vs_ddp.txt"
fi
# the GPU study preset, unchanged but for its length: every variant, one seed, one lr (no sweep),
# phase A 80 steps with evaluations at 50/75/100%; proves the preset's command runs end to end
step study_gpu python -m quadgpt study --config configs/study-gpu.toml --study.seeds=1 --study.lrs=6e-4 \
    --study.steps_a=80 --study.steps_b=20 --study.eval_every_b=10 --train.eval_interval=20 \
    --study.out="$out/study-gpu-smoke"
exit $status
