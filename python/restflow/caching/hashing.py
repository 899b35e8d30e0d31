"""drf-restflow's ``restflow.caching.hashing``, for code that imports from it.

restflow's keys do not use it: the engine digests long key parts itself
(128 bits of SHA-256, see ``MAX_KEY_PART_LENGTH``). It stays for custom key fields
and other project code that hashed text with it.
"""

import hashlib

from restflow.caching.settings import cache_settings

__all__ = ["hash_string"]


def hash_string(value: str) -> str:
    """The hex digest of ``value`` (UTF-8) with the ``KEY_HASH_ALGORITHM``
    setting: a ``hashlib`` name (``"sha256"`` by default) or a callable
    ``(str) -> str``, as in drf-restflow."""
    algorithm = cache_settings()["KEY_HASH_ALGORITHM"]
    if callable(algorithm):
        return algorithm(value)
    return hashlib.new(algorithm, value.encode("utf-8")).hexdigest()
