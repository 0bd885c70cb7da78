"""The metrics writer: JSON lines, resume truncation, process 0 only."""

import json
import os

import jax

from mtl_ser.training import writer


def _lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_lines_hold_the_step_and_floats_and_non_finite_values_as_text(tmp_path):
    w = writer.MetricWriter(str(tmp_path), tensorboard=True)
    w.write(1, {"train/loss": jax.numpy.float32(0.5), "train/grad_norm": float("nan")})
    w.write(2, {"train/loss": 0.25, "val/ua": float("inf")})
    w.close()
    assert _lines(tmp_path) == [
        {"step": 1, "train/loss": 0.5, "train/grad_norm": "nan"},
        {"step": 2, "train/loss": 0.25, "val/ua": "inf"},
    ]
    assert os.listdir(tmp_path / "tensorboard")  # The event file.


def test_a_resumed_run_drops_the_lines_past_its_checkpoint(tmp_path):
    w = writer.MetricWriter(str(tmp_path), tensorboard=False)
    for step in (1, 2, 3, 4):
        w.write(step, {"loss": float(step)})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # A line cut short by a kill.
    w = writer.MetricWriter(str(tmp_path), tensorboard=False, after_step=2)
    w.write(3, {"loss": 30.0})
    w.close()
    got = [(line["step"], line["loss"]) for line in _lines(tmp_path)]
    assert got == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert not os.path.exists(tmp_path / "metrics.jsonl.tmp")


def test_other_processes_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    w = writer.MetricWriter(str(tmp_path / "run"), tensorboard=True)
    w.write(1, {"loss": 1.0})
    w.close()
    assert not os.path.exists(tmp_path / "run")
