"""Fixtures shared by the tests of mtl_ser.data: a run's data on the smoke corpus."""

import pytest

from mtl_ser.data import run_data
from tests.data.common import TASKS


@pytest.fixture
def data(smoke_config):
    return run_data.build_data(smoke_config, TASKS, verbose=False)
