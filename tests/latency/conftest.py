"""Fixtures shared by the latency tests."""

import pytest
from latency_synthetic import synthetic_rows, write_synthetic_db


@pytest.fixture(scope="session")
def synthetic_db(tmp_path_factory):
    """A measurement database holding 150 synthetic configurations and the architecture's groups."""
    return write_synthetic_db(tmp_path_factory.mktemp("synthetic") / "latency.db", synthetic_rows(150))
