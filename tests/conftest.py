"""Every test starts with an empty cache and the real clock."""

import pytest

from restflow import _engine
from restflow.caching.testing import clear_caches, wait_for_refreshes


@pytest.fixture(autouse=True)
def _isolated_cache():
    clear_caches()
    yield
    wait_for_refreshes()
    _engine.unfreeze_clock()
    clear_caches()
