#!/usr/bin/env bash
# README command 1: set up, then train + evaluate the multitask AlexNet on the
# built-in synthetic corpus and write a report. Extra arguments go to launch.py,
# e.g. `bash scripts/demo.sh --config.train.num_steps=200`. On a GPU or TPU,
# ACCEL=cuda12 (or cuda13, tpu) installs jax's build for it (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# tcmalloc, when Debian's libtcmalloc-minimal4 is installed: glibc's malloc hands
# large buffers back to the OS every step and the page faults slow training (the
# results are the same; benchmarks/RESULTS.md).
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
if [[ -z "${LD_PRELOAD:-}" && -f "$TCMALLOC" ]]; then
  export LD_PRELOAD="$TCMALLOC"
fi
exec .venv/bin/python launch.py --config=configs/synthetic.py \
  --workdir="${WORKDIR:-runs/synthetic}" --mode=train "$@"
