"""Run folders and derived configs, shared by cross-validation and sweeps.

A CV run keeps fold i in `<workdir>/fold<ii>_<fold name>`; a sweep variant is
its base config with dotted-field overrides (the key "variant" only names it).
"""

import copy
import os
from typing import Any, Mapping

# The override key that names a variant instead of its overrides.
LABEL = "variant"


def fold_dir(workdir: str, index: int, fold) -> str:
    """The folder of fold `index` (a data.splits.Fold) of the CV run in workdir."""
    return os.path.join(workdir, f"fold{index:02d}_{fold.name}")


def apply_overrides(config, overrides: Mapping[str, Any]):
    """A copy of `config` with dotted-field overrides; unknown fields raise."""
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        if key == LABEL:
            continue
        *parents, leaf = key.split(".")
        node = config
        for part in [*parents, leaf]:
            if part not in node:
                raise KeyError(f"sweep override {key!r}: no field {part!r}")
            if part != leaf:
                node = node[part]
        node[leaf] = value
    return config
