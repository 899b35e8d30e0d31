"""One unit of invalidation work, and the form in which it crosses a broker.

A model change becomes one :class:`Job` per rule that applies to it. A job
carries the values its rule maps, read when the signal fired: by the time
the work runs (after the commit, maybe in another process) a deleted
instance has lost its primary key and a later save in the same transaction
may have changed the instance.

A job names its rule by a stable identifier, ``<function path>#<position>``
(the cached function's dotted path and the rule's index in its
``invalidates_on`` list), never by a counter that depends on import order,
so a worker that imported its modules in another order runs the same rule.

Keys are type-tagged (``f(1)``, ``f(1.0)`` and ``f("1")`` are three
entries), so values sent to a broker must come back with their types: plain
JSON would turn a tuple into a list and a ``UUID`` into a string, and the
worker would drop an entry that does not exist. :func:`encode` and
:func:`decode` keep the types the key encoder knows, in plain JSON, which
every broker carries.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import json
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["Change", "Job", "SignalTypes", "decode", "encode"]

_TAG = "__restflow__"


class SignalTypes(enum.StrEnum):
    """Which change a job comes from (compares equal to its name as a string)."""

    POST_SAVE = "POST_SAVE"
    POST_DELETE = "POST_DELETE"


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What happened to an instance: the signal, and what Django told about it."""

    signal_type: SignalTypes
    created: bool = False
    update_fields: frozenset[str] | None = None

    def extras(self) -> dict[str, Any]:
        """The keyword arguments an invalidator or ``invalidate_when`` may ask for."""
        return {
            "signal_type": self.signal_type,
            "instance_created": self.created,
            "update_fields": self.update_fields,
        }


@dataclasses.dataclass(slots=True, eq=False)
class Job:
    """One rule to run for one change.

    ``kwargs`` are the function arguments the rule mapped (``None`` for a
    custom invalidator, which receives the instance instead). ``rule`` (the
    bound rule) and ``instance`` travel only within the process; a broker
    gets ``rule_id``, ``model`` and ``pk``, and the worker finds the rule and
    loads the row.
    """

    rule_id: str
    module: str
    model: str
    change: Change
    kwargs: dict[str, Any] | None = None
    pk: Any = None
    instance: Any = None
    rule: Any = None

    def to_payload(self) -> dict[str, Any]:
        """The job as JSON-safe data, for a broker. Raises ``TypeError`` for a
        mapped value whose type would not survive the trip."""
        update_fields = self.change.update_fields
        return {
            "rule": self.rule_id,
            "module": self.module,
            "model": self.model,
            "signal": self.change.signal_type.value,
            "created": self.change.created,
            "update_fields": None if update_fields is None else sorted(update_fields),
            "kwargs": None if self.kwargs is None else _encode_arguments(self.kwargs),
            "pk": encode(self.pk),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Job:
        """The job a broker delivered."""
        update_fields = payload.get("update_fields")
        kwargs = payload.get("kwargs")
        return cls(
            rule_id=payload["rule"],
            module=payload["module"],
            model=payload["model"],
            change=Change(
                SignalTypes(payload["signal"]),
                bool(payload.get("created")),
                None if update_fields is None else frozenset(update_fields),
            ),
            kwargs=None if kwargs is None else {k: decode(v) for k, v in kwargs.items()},
            pk=decode(payload.get("pk")),
        )

    def identity(self) -> tuple[Any, ...] | None:
        """What makes two jobs do the same work, so a bulk change that maps
        many rows onto one entry drops it once. ``None``: never merged (a
        custom invalidator sees each instance)."""
        if self.kwargs is None:
            return None
        try:
            # Encoded, so 1, 1.0 and True (one dict key) stay three values.
            values = json.dumps(_encode_arguments(self.kwargs), sort_keys=True)
        except TypeError:
            return None
        rule = self.rule_id if self.rule is None else id(self.rule)
        return (rule, self.change.signal_type, values)


def _encode_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: encode(value) for name, value in kwargs.items()}


def _tagged(kind: str, value: Any) -> dict[str, Any]:
    return {_TAG: kind, "v": value}


def _encode_moment(kind: str, value: datetime | time) -> dict[str, Any]:
    """A datetime or time as its text, plus its fold and zone when the text
    does not say them (the key encoder keys both: see ``moment.rs``)."""
    zone = value.tzinfo
    extra: list[Any] | None = None
    if isinstance(zone, ZoneInfo):
        extra = ["zoneinfo", zone.key]
    elif isinstance(zone, timezone):
        name = zone.tzname(None)
        if name != timezone(zone.utcoffset(None)).tzname(None):
            extra = ["timezone", name]
    if extra is None and not value.fold:
        return _tagged(kind, value.isoformat())
    return _tagged(kind, [value.isoformat(), value.fold, *(extra or [None, None])])


def _decode_moment(parse: Any) -> Any:
    def decode_moment(value: str | list[Any]) -> Any:
        if isinstance(value, str):
            return parse(value)
        text, fold, zone_kind, name = value
        moment = parse(text)
        if zone_kind == "zoneinfo":
            moment = moment.replace(tzinfo=ZoneInfo(name))
        elif zone_kind == "timezone":
            moment = moment.replace(tzinfo=timezone(moment.utcoffset(), name))
        return moment.replace(fold=fold)

    return decode_moment


def _encode_enum(value: enum.Enum) -> dict[str, Any]:
    kind = type(value)
    return _tagged("enum", [f"{kind.__module__}:{kind.__qualname__}", encode(value.value)])


_ENCODERS = {
    tuple: lambda v: _tagged("tuple", [encode(i) for i in v]),
    list: lambda v: [encode(i) for i in v],
    dict: lambda v: _tagged("dict", [[encode(k), encode(i)] for k, i in v.items()]),
    set: lambda v: _tagged("set", [encode(i) for i in v]),
    frozenset: lambda v: _tagged("frozenset", [encode(i) for i in v]),
    bytes: lambda v: _tagged("bytes", base64.b64encode(v).decode("ascii")),
    datetime: lambda v: _encode_moment("datetime", v),
    date: lambda v: _tagged("date", v.isoformat()),
    time: lambda v: _encode_moment("time", v),
    timedelta: lambda v: _tagged("timedelta", [v.days, v.seconds, v.microseconds]),
    Decimal: lambda v: _tagged("decimal", str(v)),
    uuid.UUID: lambda v: _tagged("uuid", str(v)),
}


def encode(value: Any) -> Any:
    """``value`` as plain JSON data that :func:`decode` turns back into an
    equal value of the same type."""
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value)
    if isinstance(value, enum.Enum):
        return _encode_enum(value)
    raise TypeError(
        f"cannot send a {kind.__qualname__} value to a broker; map the rule to a plain "
        "value (an id, a string, a number), e.g. 'author_id' rather than 'author'."
    )


def _decode_enum(value: list[Any]) -> enum.Enum:
    path, raw = value
    module, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target(decode(raw))


_DECODERS = {
    "tuple": lambda v: tuple(decode(i) for i in v),
    "dict": lambda v: {decode(k): decode(i) for k, i in v},
    "set": lambda v: {decode(i) for i in v},
    "frozenset": lambda v: frozenset(decode(i) for i in v),
    "bytes": base64.b64decode,
    "datetime": _decode_moment(datetime.fromisoformat),
    "date": date.fromisoformat,
    "time": _decode_moment(time.fromisoformat),
    "timedelta": lambda v: timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "enum": _decode_enum,
}


def decode(value: Any) -> Any:
    """The value :func:`encode` was given."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if isinstance(value, dict):
        return _DECODERS[value[_TAG]](value["v"])
    return value
