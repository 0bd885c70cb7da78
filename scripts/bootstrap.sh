#!/usr/bin/env bash
# Creates .venv (once) and installs mtl_ser with its test extras into it, and
# jax's build for an accelerator where ACCEL names one (cuda12, cuda13 or tpu):
# `ACCEL=cuda12 bash scripts/demo.sh` installs .[test,cuda12]. PYTHON picks the
# interpreter of a new .venv (jax 0.11 needs python3.12; 3.11 gets jax 0.10.2).
# Idempotent: a second call only re-checks the install, unless pyproject.toml or
# ACCEL changed. Dropping ACCEL leaves jax's plugin installed; JAX_PLATFORMS=cpu
# then keeps jax on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
ACCEL="${ACCEL:-}"
case "$ACCEL" in
  "" | cuda12 | cuda13 | tpu) ;;
  *)
    echo "ACCEL=$ACCEL: use cuda12, cuda13 or tpu, or leave it empty for the CPU" >&2
    exit 2
    ;;
esac
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
extras="test${ACCEL:+,$ACCEL}"
stamp=.venv/.mtl_ser-installed  # Holds the extras installed.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
  || [ "$(cat "$stamp")" != "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  echo "$extras" >"$stamp"
fi
