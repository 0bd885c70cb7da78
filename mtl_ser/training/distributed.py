"""Multi-process start-up: one call before any JAX computation.

`maybe_initialize` joins the processes of a multi-process job into one JAX
runtime when the environment describes such a job:

- Any launcher: `JAX_COORDINATOR_ADDRESS` (host:port where process 0 serves
  the coordinator; every process gives the same one), `JAX_NUM_PROCESSES`
  (how many processes) and `JAX_PROCESS_ID` (this one's index, 0 .. N-1).
  Two processes on one machine, for example:

      JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 \\
          JAX_PROCESS_ID=0 python launch.py --config=... --workdir=runs/x &
      JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 \\
          JAX_PROCESS_ID=1 python launch.py --config=... --workdir=runs/x

- SLURM (`srun`, `SLURM_NTASKS` > 1): JAX finds all three itself.

JAX itself also reads `JAX_LOCAL_DEVICE_IDS`, `JAX_COORDINATOR_BIND_ADDRESS`
and, for CPU-only processes, `JAX_NUM_CPU_DEVICES` (CPU devices per process).
Cross-process collectives on CPU go through gloo over TCP.
"""

import os

import jax


def is_multiprocess_env() -> bool:
    """Whether the environment describes a multi-process job (see above)."""
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def maybe_initialize():
    """Calls jax.distributed.initialize() when the environment asks for it.

    Must run before anything touches a JAX device (the CPU backend reads the
    collectives setting when it is created).

    Raises:
      ValueError: JAX_COORDINATOR_ADDRESS is set without JAX_NUM_PROCESSES or
        JAX_PROCESS_ID (outside SLURM), or one of them is not an integer.
    """
    if not is_multiprocess_env():
        return
    num_processes = _env_int("JAX_NUM_PROCESSES")
    process_id = _env_int("JAX_PROCESS_ID")
    # Collectives between CPU processes go over TCP with gloo (JAX's default
    # today; older versions had none, and then a CPU run across processes fails).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(num_processes=num_processes, process_id=process_id)


def _env_int(name: str) -> "int | None":
    """An integer environment variable; None when unset under SLURM."""
    text = os.environ.get(name)
    if text is None:
        if "SLURM_NTASKS" in os.environ:
            return None  # JAX reads it from SLURM's variables.
        raise ValueError(
            f"JAX_COORDINATOR_ADDRESS is set but {name} is not; set "
            "JAX_NUM_PROCESSES and JAX_PROCESS_ID too (see mtl_ser/training/"
            "distributed.py)"
        )
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: not an integer") from None
