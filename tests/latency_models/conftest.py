"""Fixtures shared by the latency tests."""

import pytest
from latency_synthetic import GROUPS, INPUT_SHAPE, synthetic_rows

from latency_models.store import MeasurementStore


@pytest.fixture(scope="session")
def synthetic_db(tmp_path_factory):
    """A measurement database holding 150 synthetic configurations and the architecture's groups."""
    path = tmp_path_factory.mktemp("synthetic") / "latency.db"
    with MeasurementStore(path) as store:
        store.save_groups("synthetic:net", INPUT_SHAPE, list(GROUPS))
        for row in synthetic_rows(150):
            store.insert(row)
    return path
