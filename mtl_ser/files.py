"""Files every layer writes the same way."""

import json
import os

import jax


def write_json(path: str, obj):
    """Writes `obj` to `path` from process 0 only, atomically (temp + rename)."""
    if jax.process_index() != 0:
        return
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)
