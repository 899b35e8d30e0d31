"""Type stubs for restflow's Rust engine (``crates/restflow-py``).

Users import :mod:`restflow.caching`; this module is its engine.
"""

from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, final

from restflow.caching.decorators import Decision
from restflow.caching.settings import EngineSettings
from restflow.caching.status import CacheStatus

P = ParamSpec("P")
T = TypeVar("T")

Metadata = dict[str, Any]

@final
class CachedWrapper(Generic[P, T]):
    """A cached function, or a cached method bound to an instance."""

    is_cached_function: bool
    key_constructor: Any
    get_key_version: Callable[[], int]  # set by cache_result: Meta.version
    __wrapped__: Callable[P, T]
    __name__: str
    __qualname__: str
    __doc__: str | None
    __self__: object | None

    @staticmethod
    def create(
        func: Callable[P, T],
        *,
        signature: Iterable[tuple[str, int, Any, bool]],
        method: bool,
        ttl: float | None,
        stale: float | None,
        policy: Callable[[Any, tuple[Any, ...], dict[str, Any] | None], Decision] | None,
        namespace: str,
        function_id: str,
        owner: str,
        version: int,
        key_identifier: bool,
        fields: tuple[
            Callable[[dict[str, Any]], tuple[tuple[Any, ...], tuple[Any, ...]]],
            Callable[[tuple[Any, ...], dict[str, Any] | None], tuple[Any, ...]],
            bool,
            tuple[list[tuple[str, str, Any, bool, bool]], list[tuple[str, str, Any, bool, bool]]]
            | None,
        ]
        | None,
        backend: str | None = None,
        stale_if_error: float | None = None,
        claim: Callable[[], None] | None = None,
        early_refresh_beta: float | None = None,
        near_cache: bool | None = None,
        receiver_check: Callable[[type], None] | None = None,
        serves: Callable[[Any, tuple[Any, ...], dict[str, Any] | None], bool] | None = None,
    ) -> CachedWrapper[P, T]: ...
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T: ...
    def get_with_metadata(self, *args: P.args, **kwargs: P.kwargs) -> tuple[T, Metadata]: ...
    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> T: ...
    def refresh_with_metadata(self, *args: P.args, **kwargs: P.kwargs) -> tuple[T, Metadata]: ...
    def bypass_cache(self, *args: P.args, **kwargs: P.kwargs) -> T: ...
    def bypass_cache_with_metadata(
        self, *args: P.args, **kwargs: P.kwargs
    ) -> tuple[T, Metadata]: ...
    def get_cache_only(self, *args: P.args, **kwargs: P.kwargs) -> T | Any: ...
    def get_cached_metadata(self, *args: P.args, **kwargs: P.kwargs) -> Metadata | None: ...
    def get_cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    def delete_cache(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    def invalidate_all(self) -> None: ...
    def delete_by_prefix(self, *args: Any, **kwargs: Any) -> None: ...
    @property
    def func(self) -> Callable[P, T]: ...
    @property
    def function_id(self) -> str: ...
    def __get__(self, instance: object, owner: type | None = None) -> CachedWrapper[..., T]: ...
    def __set_name__(self, owner: type, name: str) -> None: ...
    @property
    def steps(self) -> Steps:
        """The lifecycle of this function's calls in steps, for the async layer."""
    def stats(self) -> dict[str, Any]: ...
    def reset_stats(self) -> None: ...
    def counters(self, totals: bool = False) -> dict[str, Any]: ...
    def counted_events(self) -> int: ...
    def counts(self) -> Counts: ...
    def shared_backend(self) -> SharedBackend | None: ...
    def __getattr__(self, name: str) -> Any: ...

@final
class Steps:
    """The lifecycle of a cached function's calls in steps, for callers that
    cannot block (``restflow.caching.asynchronous``). On a shared store
    ``begin``, ``begin_refresh`` and the ends of what they hand out make
    round trips: call them on a worker thread. Everything else answers at
    once."""

    def uses_memory(self) -> bool: ...
    def lookup(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Lookup | None:
        """Memory store: HIT or STALE without computing, or None on a miss."""
    def flight(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        task: int,
        followed: bool = False,
    ) -> Flight:
        """Joins the in-process computation of a missed call as ``task``."""
    def begin(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None, flight: Flight
    ) -> Lookup | Lead:
        """Shared store, blocking: a served call, or the claim to compute it,
        held by the task that leads ``flight``."""
    def begin_refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Lead:
        """The claim of a forced recompute (blocking on a shared store)."""
    def waiters(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> int:
        """How many callers follow the in-process computation of a call now."""
    def loop_fetch(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> LoopFetch | None:
        """The Redis lookup an event loop may send itself, or None."""
    def near_hit(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> tuple[Any, Metadata] | None:
        """A fresh near-cache hit without a round trip, or None."""
    def record(self, event: str, seconds: float | None = None) -> None:
        """Counts an event the async layer served itself."""

@final
class Lead:
    """The right to compute a value the caller awaits itself: a shared
    store's claim on a missed key (holds its lock), a stale entry's
    background refresh, or a forced refresh's token. Given back when failed,
    released or dropped. Blocking on a shared store."""

    def complete(self, value: Any, decision: Decision | None = None) -> tuple[Any, Metadata]: ...
    def fail(self, error: BaseException) -> tuple[Any, Metadata] | None:
        """A shared store's miss: the value kept for stale-if-error, or the
        error raised. A refresh: None (the claim given back)."""
    def release(self) -> None: ...

@final
class Lookup:
    """A call answered without computing: HIT or STALE (or, from
    ``Steps.begin``, what another thread of this process computed)."""

    @property
    def value(self) -> Any: ...
    @property
    def metadata(self) -> Metadata: ...
    @property
    def refresh(self) -> Lead | None:
        """The background refresh this call claimed, to run and complete."""

@final
class Flight:
    """One caller's part in the in-process computation of a key: leader or
    follower (memory store: the engine's flight; shared store: the flight of
    this process's tasks that miss the key)."""

    @property
    def leader(self) -> bool: ...
    def complete(self, value: Any, decision: Decision | None = None) -> tuple[Any, Metadata]:
        """Memory store: the leader's value, stored and handed on (MISS)."""
    def share(self, value: Any, metadata: Metadata) -> None:
        """Shared store: hands the leading task's answer to the followers."""
    def fail(self, error: BaseException) -> tuple[Any, Metadata] | None: ...
    def abandon(self) -> None: ...
    def on_done(self, callback: Callable[[], object]) -> None:
        """Calls ``callback()`` once the leader has ended, on the thread that
        ended it; at once, here, if it has ended already. The callback may
        read this flight's ``result()``."""
    def result(self) -> tuple[Any, Metadata] | None: ...

@final
class GetWithMetadata:
    """``wrapper.get_with_metadata`` of a plain function, called through vectorcall."""

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, Metadata]: ...

@final
class Counts:
    """One cached function's counters, apart from its wrapper (``wrapper.counts()``):
    readable after the wrapper is collected."""

    def counters(self, totals: bool = False) -> dict[str, Any]: ...
    def counted_events(self) -> int: ...

class CacheBackendError(Exception):
    """A shared cache store failed and FAILURE_MODE is "raise"."""

class RefreshDeclined(Exception):
    """Raised by a function in a background refresh whose value is not one
    to replace the entry with: the stale entry stays, its claim is given
    back, and nothing is logged or counted as an error."""

@final
class SharedBackend:
    """A Redis store with its signing key, key prefix and serializer."""

    def __init__(
        self,
        url: str,
        *,
        signing_key: bytes,
        key_prefix: str = "",
        serializer: str = "pickle",
        pool_size: int = 16,
        connect_timeout: float = 0.5,
        read_timeout: float = 0.1,
        read_spin: float = 0.0,
        invalidation_replicas: int = 0,
        lock_timeout: float = 10.0,
        wait_timeout: float | None = None,
        bypass_on_failure: bool = True,
        near_cache_size: int = 0,
        near_cache_default: bool = False,
    ) -> None: ...
    @property
    def url(self) -> str: ...
    @property
    def rejected(self) -> int: ...
    @property
    def failures(self) -> int: ...
    def stats(self, totals: bool = False) -> dict[str, Any]: ...
    def reset_stats(self) -> None: ...
    def server_info(self) -> list[tuple[str, str]]: ...
    @property
    def read_timeout(self) -> float: ...
    def fresh_hit(self, answer: RedisAnswer, key: str) -> tuple[Any, Metadata] | None: ...
    def near_stats(self) -> dict[str, int | bool] | None: ...
    def near_sync(self, timeout: float = 5.0) -> bool: ...
    def drop_versions_below(self, owner: str, version: int) -> None: ...

@final
class LoopConnection:
    """A non-blocking Redis connection driven by an event loop."""

    @staticmethod
    def open(url: str, timeout: float) -> LoopConnection: ...
    def fileno(self) -> int: ...
    def send(self, command: bytes) -> None: ...
    def receive(self) -> RedisAnswer | None: ...

@final
class LoopFetch:
    """A lookup an event loop may send on its own socket."""

    backend: SharedBackend
    command: bytes
    key: str

@final
class RedisAnswer:
    """An answer a LoopConnection read."""

def install(
    statuses: type[CacheStatus],
    missing: object,
    logger: Any,
    settings: Callable[[], EngineSettings],
    backend_for: Callable[[str | None], SharedBackend | None],
) -> None: ...
def reconfigure() -> None: ...
def in_background_refresh() -> bool: ...
def clear() -> int: ...
def entry_count() -> int: ...
def max_entries() -> int: ...
def now() -> float: ...
def freeze_clock(at: float | None = None) -> None: ...
def advance_clock(seconds: float) -> float: ...
def unfreeze_clock() -> None: ...
def clock_is_frozen() -> bool: ...
def seed_early_refresh(seed: int | None = None) -> None: ...
def wait_for_refreshes(timeout: float = 10.0) -> bool: ...
def pending_refreshes() -> int: ...
def in_flight() -> int: ...
def waiters() -> int: ...
def key_parts(
    function_id: str,
    partition_items: tuple[tuple[str, Any, bool, bool], ...],
    suffix_items: tuple[tuple[str, Any, bool, bool], ...],
) -> tuple[str, str]: ...
def drop_versions_below(owner: str, version: int) -> int: ...
def shutdown(timeout: float = 1.0) -> None: ...
def stats_bucket_bounds() -> list[float]: ...
