"""restflow: a result cache for Django REST framework services, with its engine in Rust.

The public API lives in :mod:`restflow.caching`. This distribution
(``restflow-cache``) uses the same import package as the older, pure-Python
``drf-restflow``, so the two cannot be installed in one environment.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("restflow-cache")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
