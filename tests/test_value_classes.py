"""Argument values whose class's dotted path repeats: two ``Enum("Color",
...)`` of one module, named tuples or ``int`` subclasses made by a factory,
a class redefined while the old one lives. Values are keyed by their
class's ``module.qualname`` and their value, so two such classes alive at
once would share entries when their values are equal; restflow refuses a
value of either with a ``TypeError`` that names the path and says what to
change, on every store. A class whose namesake is garbage (a reload) keeps
working, as a function's name does (tests/test_function_identity.py)."""

from __future__ import annotations

import enum
import gc
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from restflow.caching import ArgsKeyField, cache_result

ROOT = Path(__file__).resolve().parents[1]

# Two classes of one dotted path, made by Enum's functional API.
ColorA = enum.Enum("Color", "RED GREEN")
ColorB = enum.Enum("Color", "RED BLUE")

calls: list = []


@cache_result(ttl=60)
def describe(value):
    calls.append(repr(value))  # not the value: it would keep its class alive
    return f"{type(value).__name__}@{id(type(value))}:{value!r}"


def make_point():
    class Point(NamedTuple):
        x: int
        y: int

    return Point


def make_code():
    class Code(int):
        pass

    return Code


@pytest.fixture(autouse=True)
def _clear():
    calls.clear()
    describe.invalidate_all()
    yield
    describe.invalidate_all()


def refused(value) -> str:
    with pytest.raises(TypeError) as error:
        describe(value)
    return str(error.value)


def test_two_functional_enums_of_one_name_never_share_an_entry(store):
    assert ColorA.RED.value == ColorB.RED.value
    assert describe(ColorA.RED) == f"Color@{id(ColorA)}:{ColorA.RED!r}"
    message = refused(ColorB.RED)
    assert "'tests.test_value_classes.Color'" in message
    assert "another live class" in message
    # Both classes, by their addresses (their reprs are alike).
    assert f"at {id(ColorA):#x}, and <enum 'Color'> at {id(ColorB):#x})" in message
    assert "module level" in message and "key constructor" in message
    # Nor nested in a container.
    with pytest.raises(TypeError, match="another live class"):
        describe((1, ColorB.RED))
    # Nothing was computed for the refused calls; the first is untouched.
    assert calls == ["<Color.RED: 1>"]
    assert describe(ColorA.RED) == f"Color@{id(ColorA)}:{ColorA.RED!r}"
    assert calls == ["<Color.RED: 1>"]


def test_named_tuples_and_int_subclasses_made_by_a_factory_never_share_an_entry(store):
    first, second = make_point(), make_point()
    assert describe(first(1, 2)) == f"Point@{id(first)}:Point(x=1, y=2)"
    message = refused(second(1, 2))
    assert "'tests.test_value_classes.make_point.<locals>.Point'" in message
    code_a, code_b = make_code(), make_code()
    assert describe(code_a(7)) == f"Code@{id(code_a)}:7"
    assert "make_code.<locals>.Code" in refused(code_b(7))
    assert calls == ["Point(x=1, y=2)", "7"]


def test_a_key_constructor_field_of_either_class_is_refused_too(store):
    @cache_result(ttl=60, key_constructor={"fields": {"color": ArgsKeyField("color")}})
    def paint(color):
        return f"{id(type(color))}"

    assert paint(ColorA.RED) == f"{id(ColorA)}"
    with pytest.raises(TypeError, match="another live class"):
        paint(ColorB.RED)
    # Keyed by a plain field instead, both classes are fine (and share by
    # that field's value, as the user chose).
    by_name = {"fields": {"color": ArgsKeyField("color", path="name")}}

    @cache_result(ttl=60, key_constructor=by_name)
    def paint_by_name(color):
        return type(color).__name__ + color.name

    assert (paint_by_name(ColorA.RED), paint_by_name(ColorB.BLUE)) == ("ColorRED", "ColorBLUE")


def test_a_class_whose_namesake_is_garbage_keeps_working(store):
    old = make_point()
    assert describe(old(1, 2)).startswith("Point@")
    del old
    gc.collect()
    # A reload: the new class takes the name, and reads what was stored
    # under it, as the same class in another process would.
    new = make_point()
    describe(new(1, 2))
    describe(new(3, 4))
    assert len(calls) == 2
    # An enum class made in a function holds itself in a cycle (its members
    # name it): restflow collects once before refusing.
    first = enum.Enum("Local", "A B")
    assert describe(first.A).startswith("Local@")
    del first
    second = enum.Enum("Local", "A B")
    assert describe(second.B).startswith("Local@")


# Makes, keys and drops 150 classes of fresh names (a program that makes
# classes in a loop), collecting each, then prints how many weak references
# to dead objects it holds more than before: the registry's dead entries.
FRESH_CLASSES = """
import gc, weakref
import django
from django.conf import settings
settings.configure()
django.setup()
from restflow import _engine
import restflow.caching

def dead_references():
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is weakref.ref and o() is None)

before = dead_references()
for i in range(150):
    kind = type(f"Fresh{i}", (int,), {})
    _engine.key_parts("", (), (("value", kind(1), False, False),))
    del kind
    gc.collect()
print(dead_references() - before)
"""


def test_classes_of_fresh_names_made_in_a_loop_do_not_grow_the_registry():
    # In a fresh interpreter, so the registry holds nothing else. Dead
    # classes leave it: it stays under the engine's floor of 64 paths
    # (restflow_cache::value_classes::PRUNE_FLOOR) when none is alive.
    done = subprocess.run(
        [sys.executable, "-c", FRESH_CLASSES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 64


def test_a_class_renamed_after_its_first_value_is_keyed_keeps_its_path(store):
    # A class's dotted path is read when its first value is keyed and kept
    # for the class's life: reassigning __module__ or __qualname__ later
    # changes neither its keys nor the path it keeps from other classes.
    class Shade(enum.Enum):
        DARK = 1

    class Label(str):
        pass

    shade_path = f"{__name__}.{Shade.__qualname__}"
    label_path = f"{__name__}.{Label.__qualname__}"
    shade_key, label_key = describe.get_cache_key(Shade.DARK), describe.get_cache_key(Label("x"))
    assert f"enum:{shade_path}(" in shade_key and f"{label_path}(" in label_key
    first = (describe(Shade.DARK), describe(Label("x")))
    for renamed in (Shade, Label):
        renamed.__module__, renamed.__qualname__ = "elsewhere", "Renamed"
    assert describe.get_cache_key(Shade.DARK) == shade_key
    assert describe.get_cache_key(Label("x")) == label_key
    assert (describe(Shade.DARK), describe(Label("x"))) == first
    assert calls == ["<Shade.DARK: 1>", "'x'"]
    # Another class of the path it was first keyed by is refused while it
    # lives; the path it was renamed to is not its own.
    namesake = enum.Enum("Shade", "DARK", module=__name__, qualname=shade_path[len(__name__) + 1 :])
    assert f"'{shade_path}'" in refused(namesake.DARK)
    other = enum.Enum("Renamed", "DARK", module="elsewhere", qualname="Renamed")
    assert "enum:elsewhere.Renamed(" in describe.get_cache_key(other.DARK)
    describe(other.DARK)
    assert len(calls) == 3

    # A class renamed before its first value is keyed is keyed by its new
    # path.
    class Fresh(int):
        pass

    Fresh.__qualname__ = "Chosen"
    assert f"{__name__}.Chosen(" in describe.get_cache_key(Fresh(1))
