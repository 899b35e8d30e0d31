"""Arguments become canonical, type-tagged keys (DESIGN.md §4)."""

import enum
import functools
import os
import subprocess
import sys
import textwrap
import uuid
from collections import namedtuple
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from restflow.caching import ArgsKeyField, cache_result

computed: list = []


@cache_result(ttl=60)
def echo(x):
    computed.append(x)
    return x


@cache_result(ttl=60)
def defaults(a, b=2, *, c="c"):
    return (a, b, c)


@cache_result(ttl=60)
def variadic(a, *rest, flag=False, **extra):
    return (a, rest, flag, extra)


class Color(enum.Enum):
    RED = 1


class Size(enum.IntEnum):
    SMALL = 1


Point = namedtuple("Point", "x y")


@pytest.fixture(autouse=True)
def _reset():
    computed.clear()


def test_values_of_different_types_are_different_entries():
    values = [1, 1.0, True, "1", None, "None", b"1", (1,), [1], Color.RED, Size.SMALL]
    for value in values:
        assert echo(value) is value  # computed: the very object, never another's entry
    # Each one computed once, none served from another's entry.
    assert len(computed) == len(values)
    keys = {echo.get_cache_key(v) for v in values}
    assert len(keys) == len(values)


def test_the_six_entries_of_the_issue():
    for value in (1, 1.0, True, "1", None, "None"):
        echo(value)
    assert computed == [1, 1.0, True, "1", None, "None"]
    for value in (1, 1.0, True, "1", None, "None"):
        assert type(echo(value)) is type(value)
    assert len(computed) == 6


def test_keyword_order_and_spelling_do_not_matter():
    assert defaults.get_cache_key(1) == defaults.get_cache_key(a=1)
    assert defaults.get_cache_key(1, 2) == defaults.get_cache_key(1)
    assert defaults.get_cache_key(1, c="c") == defaults.get_cache_key(1)
    assert defaults.get_cache_key(b=2, a=1, c="c") == defaults.get_cache_key(1, 2, c="c")
    assert defaults.get_cache_key(1, 3) != defaults.get_cache_key(1)
    assert defaults(1) == defaults(a=1, b=2) == (1, 2, "c")


def test_var_positional_and_var_keyword_are_keyed():
    assert variadic.get_cache_key(1) == variadic.get_cache_key(a=1)
    assert variadic.get_cache_key(1, 2) != variadic.get_cache_key(1)
    assert variadic.get_cache_key(1, x=1, y=2) == variadic.get_cache_key(1, y=2, x=1)
    assert variadic.get_cache_key(1, x=1) != variadic.get_cache_key(1, x="1")
    assert variadic(1, 2, 3, flag=True, z=4) == (1, (2, 3), True, {"z": 4})


def test_separators_inside_values_never_collide():
    pairs = [
        (("a,b",), ("a", "b")),
        (("a::b",), ("a", "b")),
        (("1,2",), ([1, 2],)),
        (("null",), (None,)),
        (("a||b",), ("a", "b")),
    ]

    @cache_result(ttl=60)
    def two(x, y=None):
        return (x, y)

    for left, right in pairs:
        assert two.get_cache_key(*left) != two.get_cache_key(*right)


def test_containers_and_standard_types_have_stable_readable_keys():
    moment = datetime(2026, 11, 27, 4, 12, 17, 71457, tzinfo=UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    cases = {
        (1, "ab"): "t2(i1,s2:ab)",
        frozenset({2, 1}): "z2{i1,i2}",
        Decimal("1.50"): "x7:Decimal(s4:1.50)",
        ident: f"x4:UUID(s36:{ident})",
        date(2026, 1, 2): "x4:date(s10:2026-01-02)",
        time(4, 5): "x4:time(s8:04:05:00)",
        timedelta(days=1, seconds=2): "x9:timedelta(t3(i1,i2,i0))",
        moment: f"x8:datetime(s32:{moment.isoformat()})",
        # Past 64 bits, hex digits: see test_key_values.py.
        2**70: "i0x400000000000000000",
        -(2**70): "i-0x400000000000000000",
    }
    for value, suffix in cases.items():
        assert echo.get_cache_key(value).split("::")[-1] == f"arguments.x={suffix}"
    assert echo.get_cache_key({"b": 1, "a": [1, 2]}).endswith("d2{s1:a=l2[i1,i2],s1:b=i1}")
    enum_name = f"enum:{__name__}.Color"
    assert echo.get_cache_key(Color.RED).endswith(f"x{len(enum_name)}:{enum_name}(i1)")
    assert echo.get_cache_key(Point(1, 2)) != echo.get_cache_key((1, 2))


def test_unsupported_values_raise_a_type_error_naming_the_parameter():
    class User:
        pass

    with pytest.raises(TypeError) as error:
        echo(User())
    message = str(error.value)
    assert "argument 'x'" in message
    assert f"{__name__}.echo()" in message
    assert "User" in message
    assert "key field or a normalizer" in message
    assert computed == []
    with pytest.raises(TypeError, match="argument 'x'"):
        echo([1, {"nested": object()}])
    with pytest.raises(TypeError, match=r"argument '\*args\[1\]'"):
        variadic(1, 2, object())
    with pytest.raises(TypeError, match="argument 'other'"):
        variadic(1, other=object())


def test_a_callable_without_a_dotted_path_is_refused_at_decoration_saying_how_to_name_it():
    def base(a, b):
        return (a, b)

    class Callable:
        def __call__(self, x):
            return x

    for nameless in (functools.partial(base, 1), Callable()):
        with pytest.raises(TypeError, match=r"has none \(a functools.partial .*'key_identifier'"):
            cache_result(ttl=60)(nameless)
    # Named by a key identifier, a partial is cached like any function.
    named = cache_result(
        {"fields": {"args": ArgsKeyField("*")}, "key_identifier": "base.one"}, ttl=60
    )(functools.partial(base, 1))
    assert named.get_cache_key(b=3) == "default::base.one::::args.b=i3"
    assert named(b=3) == (1, 3)


def test_self_referencing_containers_are_refused_not_crashed_on():
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match="nested deeper"):
        echo(loop)


def test_long_keys_are_digested_not_truncated():
    long_a = "x" * 300
    long_b = "x" * 299 + "y"
    key_a, key_b = echo.get_cache_key(long_a), echo.get_cache_key(long_b)
    assert key_a != key_b
    assert len(key_a.split("::")[-1]) == 33 and key_a.split("::")[-1].startswith("h")
    assert echo(long_a) == long_a and echo(long_b) == long_b
    assert len(computed) == 2


def test_keys_do_not_depend_on_the_process_hash_seed():
    """Sets and dicts encode the same in processes with different hash seeds."""
    script = textwrap.dedent(
        """
        from restflow.caching import ArgsKeyField, cache_result

        @cache_result(ttl=60)
        def f(x):
            return x

        value = ({"alpha", "beta", "gamma", "delta"}, {"k1": 1, "k2": 2, "k3": {3, 4}})
        print(f.get_cache_key(value))
        """
    )
    root = Path(__file__).resolve().parent.parent
    keys = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        keys.add(out.stdout.strip().split("::", 2)[-1])
    assert len(keys) == 1


def test_ascii_and_non_ascii_text_encode_as_utf8():
    assert echo.get_cache_key("abc").endswith("arguments.x=s3:abc")
    assert echo.get_cache_key("héllo").endswith("arguments.x=s6:héllo")
    assert echo.get_cache_key("日本").endswith("arguments.x=s6:日本")
    # A str that is not compact ASCII and one that is, equal text: one entry.
    built = "".join(["a", "b", "c"])
    assert echo.get_cache_key(built) == echo.get_cache_key("abc")
    assert echo("abc") == echo(built)
    assert computed == ["abc"]


def test_ints_at_the_one_digit_bounds_key_by_their_exact_value():
    """An int of one 30-bit digit is read from the object in place on the
    hit path (issue 11); at and across that bound every int keys by its own
    value, through the fast path (positional) and the general one
    (keyword), and is served back as itself."""
    bound = 2**30
    values = [0, 1, -1, bound - 1, bound, bound + 1, -(bound - 1), -bound, -bound - 1]
    values += [2**62, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1]
    # Made at run time, not the interpreter's shared small-int objects.
    values += [int(str(bound - 1)), -int(str(bound - 1)), int("0"), int("-7")]
    distinct = list(dict.fromkeys(values))
    for value in distinct:
        shown = f"i{value}" if -(2**63) <= value < 2**63 else f"i{hex(value)}"
        assert echo.get_cache_key(value).endswith(f"arguments.x={shown}")
        assert echo.get_cache_key(x=value) == echo.get_cache_key(value)
        assert echo(value) == value
    for value in values:
        assert echo(value) == value
        assert echo(x=value) == value
    assert computed == distinct
