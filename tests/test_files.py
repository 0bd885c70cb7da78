"""write_json: whole files from process 0 only."""

import json
import os

import jax

from mtl_ser import files


def test_write_json_replaces_the_file_whole(tmp_path):
    path = str(tmp_path / "results.json")
    files.write_json(path, {"a": 1})
    files.write_json(path, {"b": [1.5, "x"]})
    with open(path) as f:
        assert json.load(f) == {"b": [1.5, "x"]}
    assert os.listdir(tmp_path) == ["results.json"]  # No temp file left.


def test_other_processes_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    files.write_json(str(tmp_path / "results.json"), {"a": 1})
    assert os.listdir(tmp_path) == []
