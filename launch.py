"""The one entry point: flags -> config -> mode.

  python launch.py --config=configs/synthetic.py --workdir=runs/synthetic
  python launch.py --config=configs/synthetic.py:smoke --workdir=/tmp/x \
      --config.optim.learning_rate=3e-4
  python launch.py --config=configs/synthetic.py --workdir=runs/synthetic \
      --mode=evaluate
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/synthetic.py[:smoke].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (resumes if it exists).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "What to do.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    import jax  # Imported after flag parsing so `--help` stays fast.

    from mtl_ser.outputs import report
    from mtl_ser.training import checks, loop

    if _is_multihost_env():
        jax.distributed.initialize()
    config = _CONFIG.value
    try:
        if _MODE.value == "train":
            results = loop.train_and_evaluate(config, _WORKDIR.value)
        else:
            results = loop.evaluate_workdir(config, _WORKDIR.value)
    except checks.ConfigError as e:
        sys.exit(f"Config error: {e}")
    if jax.process_index() == 0:
        print(report.results_table(results))
        path = report.write_report(_WORKDIR.value, config, results)
        print(f"Report: {path}")


def _is_multihost_env() -> bool:
    return any(k in os.environ for k in ("SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS"))


if __name__ == "__main__":
    app.run(main)
