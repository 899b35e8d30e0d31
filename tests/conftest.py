"""Every test starts with an empty cache and the real clock."""

import pytest

from restflow import _engine
from restflow.caching.function_identity import _holders
from restflow.caching.testing import clear_caches, wait_for_refreshes
from tests.stores import server_pool, store  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def _isolated_cache():
    clear_caches()
    # Functions an earlier test made (kept alive by a reference cycle, or a
    # rule's registration) are not this test's: they hold no shared-store
    # names here (see restflow.caching.function_identity).
    _holders.clear()
    yield
    wait_for_refreshes()
    _engine.unfreeze_clock()
    clear_caches()
