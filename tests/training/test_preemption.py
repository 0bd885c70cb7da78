"""Stop requests: the first signal asks for a save, a second acts as usual."""

import signal

import pytest

from mtl_ser.training import preemption


def test_the_first_signal_is_recorded_and_the_second_interrupts(capsys, default_sigint):
    with preemption.StopRequests() as stops:
        assert stops.requested(1) is None
        signal.raise_signal(signal.SIGINT)
        assert stops.requested(2) == "SIGINT"
        assert "SIGINT received: saving at the next step boundary" in (
            capsys.readouterr().out
        )
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    # Handlers restored.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_is_recorded_and_the_handler_given_back():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.StopRequests() as stops:
        signal.raise_signal(signal.SIGTERM)
        assert stops.requested(5) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_preempted_says_where_it_saved_and_what_to_do():
    err = preemption.Preempted(40, "SIGTERM")
    assert err.step == 40
    assert str(err) == (
        "SIGTERM: saved a checkpoint at step 40 and stopped; run the same command "
        "again to resume"
    )
