"""scripts/shape.py measures what issue 21 sets goals for, on a made-up tree."""

import importlib.util
import os

import tests

ROOT = tests.ROOT


def _shape():
    spec = importlib.util.spec_from_file_location(
        "shape", os.path.join(ROOT, "scripts", "shape.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(root, path, text):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)


def test_lengths_cycles_upward_imports_and_mirrored_tests(tmp_path):
    root = str(tmp_path)
    _write(root, "launch.py", "from mtl_ser import cv\n" * 90)
    _write(root, "README.md", "line\n" * 201)
    _write(root, "mtl_ser/__init__.py", "")
    _write(root, "mtl_ser/tasks.py", "")
    _write(root, "mtl_ser/cv.py", "def f():\n    from mtl_ser import sweeps\n")
    _write(root, "mtl_ser/sweeps.py", "from mtl_ser import cv, tasks\n")
    _write(root, "mtl_ser/data/__init__.py", "")
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    _write(root, "mtl_ser/data/big.py", "x = 1\n" * 400 + "def long():\n" + body)
    _write(root, "mtl_ser/data/up.py", "from mtl_ser.training import loop\n")
    _write(root, "mtl_ser/training/__init__.py", "")
    _write(
        root, "mtl_ser/training/loop.py", "from . import state\nfrom ..data import up\n"
    )
    _write(root, "mtl_ser/training/state.py", "def init():\n    return 0\n")
    _write(root, "configs/default.py", "def get_config():\n" + body)
    _write(root, "tests/training/test_state.py", "")
    m = _shape().measure(root)
    assert m["long_modules"] == [("mtl_ser/data/big.py", 462)]
    assert m["long_functions"] == [("mtl_ser/data/big.py", "long", 62)]
    assert (m["launch_lines"], m["readme_lines"]) == (90, 201)
    assert sorted(m["cycles"]) == [
        ["mtl_ser.cv", "mtl_ser.sweeps"],
        ["mtl_ser.data.up", "mtl_ser.training.loop"],
    ]
    assert m["upward"] == [("mtl_ser.data.up", "mtl_ser.training.loop")]
    # Counted: the modules with a function (cv, data/big, training/state).
    assert m["tested"] == (1, 3)
    assert m["no_code"] == [
        "mtl_ser/data/up.py",
        "mtl_ser/sweeps.py",
        "mtl_ser/tasks.py",
        "mtl_ser/training/loop.py",
    ]
