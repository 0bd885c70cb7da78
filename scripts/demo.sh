#!/usr/bin/env bash
# README command 1: set up, then train + evaluate the multitask AlexNet on the
# built-in synthetic corpus and write a report. Extra arguments go to launch.py,
# e.g. `bash scripts/demo.sh --config.train.num_steps=200`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python launch.py --config=configs/synthetic.py \
  --workdir="${WORKDIR:-runs/synthetic}" --mode=train "$@"
