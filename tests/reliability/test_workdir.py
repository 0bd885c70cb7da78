"""Guarantee 6 (in process): stale locks, other hosts, and a changed config.

The real second process on a live run's workdir is in test_interruptions.py.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from mtl_ser.training import loop
from mtl_ser.training import workdir as workdir_lib


def _write_lock(workdir, pid, host):
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "lock")
    with open(path, "w") as f:
        json.dump({"pid": pid, "host": host, "started": "2026-01-01T00:00:00"}, f)
    return path


def test_lock_is_taken_released_and_refused_while_held(tmp_path):
    workdir = str(tmp_path)
    with workdir_lib.Lock(workdir, stale_after_s=60) as lock:
        with open(lock.path) as f:
            assert json.load(f)["pid"] == os.getpid()
        with pytest.raises(workdir_lib.WorkdirError, match=f"pid {os.getpid()}"):
            workdir_lib.Lock(workdir, stale_after_s=60).__enter__()
    assert not os.path.exists(os.path.join(workdir, "lock"))


def test_a_dead_owners_lock_on_this_host_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(str(tmp_path), dead.pid, socket.gethostname())
    with workdir_lib.Lock(str(tmp_path), stale_after_s=60):
        pass
    assert f"(pid {dead.pid}) is no longer running" in capsys.readouterr().out


def test_another_hosts_lock_holds_until_it_goes_stale(tmp_path):
    path = _write_lock(str(tmp_path), 12345, "some-other-host")
    with pytest.raises(workdir_lib.WorkdirError, match="some-other-host"):
        workdir_lib.Lock(str(tmp_path), stale_after_s=60).__enter__()
    os.utime(path, (os.path.getatime(path), os.path.getmtime(path) - 120))
    with workdir_lib.Lock(str(tmp_path), stale_after_s=60) as lock:
        assert lock.held


def test_a_changed_config_is_refused_then_allowed_with_the_difference(
    smoke_config, tmp_path, capsys
):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    workdir_lib.save_config(workdir, smoke_config.to_dict())  # As a run does.
    smoke_config.optim.learning_rate *= 2
    smoke_config.train.progress_bar = True  # Runtime-only: not a difference.
    with pytest.raises(workdir_lib.WorkdirError) as error:
        loop.train_and_evaluate(smoke_config, workdir)
    lines = str(error.value).splitlines()
    assert [x.strip() for x in lines if x.startswith("  ")] == [
        f"optim.learning_rate: {smoke_config.optim.learning_rate / 2!r} -> "
        f"{smoke_config.optim.learning_rate!r}"
    ]
    assert "--allow_config_change" in lines[-1]
    assert not os.path.exists(os.path.join(workdir, "lock"))  # Released.
    capsys.readouterr()
    results = loop.train_and_evaluate(smoke_config, workdir, allow_config_change=True)
    assert "optim.learning_rate" in capsys.readouterr().out
    assert results["step"] == smoke_config.train.num_steps
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)["optim"]["learning_rate"]
    assert saved == smoke_config.optim.learning_rate


def test_a_workdir_that_cannot_be_written_is_refused_before_any_work(
    smoke_config, tmp_path
):
    """(As root, permissions block nothing: a file where a folder must be does.)"""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for workdir in (blocker / "run", blocker):
        with pytest.raises(workdir_lib.WorkdirError, match="--workdir=.*not writable"):
            loop.train_and_evaluate(smoke_config, str(workdir))
    made = tmp_path / "new"
    workdir_lib.check_writable(str(made), "--predict_out")
    assert made.is_dir() and os.listdir(made) == []  # The probe is gone.
