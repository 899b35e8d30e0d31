"""The type stubs of restflow._engine say what the bindings really have."""

import ast
import inspect
from pathlib import Path

import restflow
from restflow import _engine

STUB = Path(restflow.__file__).with_name("_engine.pyi")
TYPING_NAMES = {"P", "T", "Metadata"}


def stub_tree():
    return ast.parse(STUB.read_text())


def test_every_public_name_is_stubbed_and_exists():
    tree = stub_tree()
    stubbed = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    runtime = {name for name in dir(_engine) if not name.startswith("_")}
    assert stubbed == runtime


def test_class_members_match():
    tree = stub_tree()
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(_engine, node.name)
        for item in node.body:
            # PyO3 implements __getattr__ as the tp_getattro slot, which
            # exposes no attribute of that name; it is checked by behaviour
            # in test_wrapper_api.
            if isinstance(item, ast.FunctionDef) and item.name != "__getattr__":
                assert hasattr(cls, item.name), f"{node.name}.{item.name} is stubbed but missing"
        inherited = set(dir(Exception)) if issubclass(cls, BaseException) else set()
        runtime_methods = {
            name
            for name, member in inspect.getmembers(cls)
            if not name.startswith("__") and callable(member) and name not in inherited
        }
        stubbed_methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        assert runtime_methods <= stubbed_methods, runtime_methods - stubbed_methods


def test_function_parameters_match():
    tree = stub_tree()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            stub_params = [
                a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            ]
            runtime = inspect.signature(getattr(_engine, node.name))
            assert stub_params == list(runtime.parameters), node.name


def test_package_is_marked_typed():
    assert Path(restflow.__file__).with_name("py.typed").exists()
