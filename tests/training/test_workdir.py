"""Resuming a workdir: which config changes are refused."""

import json

import pytest

from mtl_ser.training import workdir as workdir_lib


def _saved(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_a_changed_field_is_refused_and_named(tmp_path):
    saved = {"optim": {"learning_rate": 1e-3}, "data": {"read_threads": 1}}
    path = _saved(tmp_path, saved)
    now = {"optim": {"learning_rate": 1e-4}, "data": {"read_threads": 1}}
    with pytest.raises(workdir_lib.WorkdirError, match="optim.learning_rate: 0.001"):
        workdir_lib.check_config(path, now, allow_change=False)
    workdir_lib.check_config(path, now, allow_change=True)  # Told to: resumes.


def test_runtime_only_fields_may_change_or_be_new(tmp_path):
    # A workdir saved before data.read_threads existed, then other values.
    path = _saved(tmp_path, {"optim": {"learning_rate": 1e-3}, "data": {}})
    for threads in (0, 16):
        now = {"optim": {"learning_rate": 1e-3}, "data": {"read_threads": threads}}
        workdir_lib.check_config(path, now, allow_change=False)
    changed = {"optim": {"learning_rate": 1e-3}, "data": {"num_workers": 2}}
    with pytest.raises(workdir_lib.WorkdirError, match="data.num_workers"):
        workdir_lib.check_config(path, changed, allow_change=False)


@pytest.mark.parametrize(
    "section, field, old, new",
    [
        ("train", "ema_decay", 0.0, 0.99),
        ("model", "deltas", 0, 2),
        ("model", "pool_size", (), (1, 2)),
    ],
)
def test_a_field_newer_than_the_workdir_at_its_old_behaviour_resumes(
    tmp_path, section, field, old, new
):
    # Saved before the field existed: `old` is what it trained with.
    path = _saved(tmp_path, {"train": {"num_steps": 10}, "model": {"width": 0.25}})
    saved = {"train": {"num_steps": 10}, "model": {"width": 0.25}}
    saved[section][field] = old
    workdir_lib.check_config(path, saved, allow_change=False)
    saved[section][field] = new
    with pytest.raises(workdir_lib.WorkdirError, match=f"{section}.{field}"):
        workdir_lib.check_config(path, saved, allow_change=False)


def test_a_removed_field_of_an_old_workdir_is_dropped(tmp_path):
    # Saved when the config still had the fault-injection fields.
    old = {"train": {"num_steps": 10, "nan_step": 0, "nan_task": ""}}
    path = _saved(tmp_path, old)
    workdir_lib.check_config(path, {"train": {"num_steps": 10}}, allow_change=False)
    assert workdir_lib.upgrade(old) == {"train": {"num_steps": 10}}
    assert "nan_step" in old["train"]  # The dict given is left as it is.
    with pytest.raises(workdir_lib.WorkdirError, match="train.num_steps: 10 -> 20"):
        workdir_lib.check_config(path, {"train": {"num_steps": 20}}, allow_change=False)
