"""Multi-process start-up: one call before any JAX computation."""

import os

import jax


def is_multiprocess_env() -> bool:
    """Whether the environment describes a multi-process job (SLURM or JAX vars)."""
    return any(k in os.environ for k in ("SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS"))


def maybe_initialize():
    """Calls jax.distributed.initialize() when the environment asks for it."""
    if is_multiprocess_env():
        jax.distributed.initialize()
