"""drf-restflow's ``restflow.caching.hashing``, for code that imports from it.

restflow's keys do not use it: the engine digests long key parts itself
(128-bit xxh3, see ``MAX_KEY_PART_LENGTH``). It stays for custom key fields
and other project code that hashed text with it.
"""

import hashlib

__all__ = ["hash_string"]


def hash_string(value: str, algorithm: str = "sha256") -> str:
    """The hex digest of ``value`` (UTF-8) with a ``hashlib`` algorithm;
    SHA-256 by default, drf-restflow's default ``KEY_HASH_ALGORITHM``."""
    return hashlib.new(algorithm, value.encode("utf-8")).hexdigest()
