"""The host side of the non-finite guard: when to stop, and what it says."""

import json
import types

import jax.numpy as jnp
import pytest

from mtl_ser.training import faults, state


def _record(skipped, first_step, losses=(0.5, 0.7)):
    return {
        **state.init_faults(len(losses)),
        "skipped": jnp.int32(skipped),
        "first_step": jnp.int32(first_step),
        "first_losses": jnp.asarray(losses, jnp.float32),
    }


def _describe(calls):
    def describe():
        calls.append(1)
        return "runs/x/nonfinite_step7.json", "loss of task(s) gender"

    return describe


def test_a_clean_record_or_skips_within_the_limit_go_on():
    calls = []
    kw = dict(max_skipped=2, describe=_describe(calls))
    assert faults.check(state.init_faults(2), policy="stop", **kw) == 0
    assert faults.check(_record(2, 7), policy="skip", **kw) == 2
    assert calls == []  # No diagnostic unless stopping.


@pytest.mark.parametrize(
    "policy, skipped, reason",
    [("stop", 1, "gender;"), ("skip", 3, "gender (3 non-finite steps skipped);")],
)
def test_stopping_names_the_step_what_and_the_diagnostic(policy, skipped, reason):
    calls = []
    with pytest.raises(faults.NonFiniteError) as err:
        faults.check(
            _record(skipped, 7), policy=policy, max_skipped=2, describe=_describe(calls)
        )
    message = str(err.value)
    assert message.startswith(f"step 7: non-finite loss of task(s) {reason}")
    assert message.endswith("Diagnostic: runs/x/nonfinite_step7.json")
    assert calls == [1]


def test_what_went_wrong_names_the_non_finite_losses_or_the_gradient():
    names = ("emotion", "gender", "arousal")
    nan, inf = float("nan"), float("inf")
    got = faults.what_went_wrong(_record(1, 3, (nan, 0.5, inf)), names)
    assert got == "loss of task(s) emotion, arousal"
    got = faults.what_went_wrong(_record(1, 3, (0.1, 0.5, 0.2)), names)
    assert got == "gradient (all task losses finite)"


def test_the_diagnostic_holds_the_step_losses_batch_and_weighting(tmp_path):
    record = {**_record(2, 5, (float("nan"), 0.5)), "first_grad_norm": jnp.inf}
    run = types.SimpleNamespace(
        faults=record,
        params={"weighting": {"log_vars": jnp.array([0.0, -1.0])}},
        weighting_state={},
    )
    path = faults.write_diagnostic(
        str(tmp_path), run, task_names=("emotion", "gender"), batch_uids=["a", "b"]
    )
    assert path == str(tmp_path / "nonfinite_step5.json")
    with open(path) as f:
        assert json.load(f) == {
            "step": 5,
            "losses": {"emotion": "nan", "gender": 0.5},
            "grad_norm": "inf",
            "skipped_steps": 2,
            "batch_uids": ["a", "b"],
            "weighting_params": {"log_vars": [0.0, -1.0]},
            "weighting_state": {},
        }
