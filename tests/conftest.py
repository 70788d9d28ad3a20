"""Shared test set-up: CPU, float32, a few small fixtures."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent
TEST_DATA = TESTS_DIR / "data"


@pytest.fixture
def test_data_dir() -> Path:
    return TEST_DATA


@pytest.fixture
def shared_data_dir() -> Path | None:
    """The full data set directory when this machine has one (``$JAXHW_DATA_DIR``), else None."""
    value = os.environ.get("JAXHW_DATA_DIR")
    return Path(value) if value and Path(value).is_dir() else None
