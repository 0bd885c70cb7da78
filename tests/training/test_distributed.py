"""What distributed.maybe_initialize reads from the environment (in process;
the two-process runs are in tests/reliability/test_multihost.py)."""

import jax
import pytest

from mtl_ser.training import distributed

_JOB_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@pytest.fixture
def initialize_calls(monkeypatch):
    """The calls maybe_initialize makes to jax.distributed.initialize."""
    for name in (*_JOB_VARS, "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    return calls


def test_initialize_reads_the_job_from_the_environment(initialize_calls, monkeypatch):
    distributed.maybe_initialize()
    assert initialize_calls == []  # A single process: nothing to join.
    for name, value in zip(_JOB_VARS, ("127.0.0.1:1234", "2", "1"), strict=True):
        monkeypatch.setenv(name, value)
    distributed.maybe_initialize()
    assert initialize_calls == [{"num_processes": 2, "process_id": 1}]
    assert jax.config.jax_cpu_collectives_implementation == "gloo"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES is not"),
        ({"JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID is not"),
        ({"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "'two': not an int"),
    ],
)
def test_an_incomplete_job_fails_naming_the_variable(
    initialize_calls, monkeypatch, env, message
):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        distributed.maybe_initialize()
    assert initialize_calls == []
