#!/usr/bin/env bash
# README command 2: set up, then run the test suite (2 pytest workers).
# ACCEL=cuda12 (or cuda13, tpu) installs jax's build for it (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
