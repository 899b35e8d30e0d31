"""Hit-path cost in instructions per call, counted by valgrind's callgrind.

``benches/hit_path.py`` times in nanoseconds, which a shared, loaded machine
blurs by tens of percent from one run to the next. An instruction count is
the same on every run whatever the load, so this is the measure to compare
two builds by (it does not see cache misses or branch mispredictions: the
timed bench stays the judge of the bars themselves).

Run with ``python benches/hit_instructions.py`` after ``make build`` or
``./scripts/bootstrap.sh`` (release build). For each contender it starts this
script twice under ``valgrind --tool=callgrind``: once making ``--warm``
calls and once making ``--warm`` + ``--calls``; the difference of the two
totals, divided by ``--calls``, is the cost of one call, with Python's
start-up, the imports and the warm-up calls cancelled out. An empty loop is
measured the same way and subtracted, so what is left is the call alone.
The ratios are to ``functools.lru_cache`` with the same arguments.

``--keep DIR`` keeps the callgrind output files, to read where the
instructions go: ``callgrind_annotate --inclusive=yes DIR/<name>.long.out``.

valgrind is optional: without it this says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

# hit_path.py, beside this file: the contenders and the table are shared.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hit_path import LABELS, call_source, make_contenders, print_footer, print_table

CALLS = 200_000
WARM = 2_000

EMPTY = "empty loop"
CONTENDERS = (
    EMPTY,
    "plain function call",
    "functools.lru_cache hit",
    "restflow __call__ hit",
    "restflow get_with_metadata hit",
)


#: The shapes by their name on the command line: ``f(5)``,
#: ``f(1, "abc", 2.5)``, ``f(Color.RED)`` and ``f(Name("abc"))`` (an enum
#: member and a ``str`` subclass's instance, each keyed by its class's
#: dotted path; passed as a global name, not a literal).
SHAPES = {"1": 1, "3": 3, "enum": "enum", "subclass": "subclass"}


def run_child(arity: int | str, contender: str, number: int) -> None:
    """The measured process: sets up one contender and makes `number` calls.

    The calls go through `timeit` exactly as in hit_path.py (one compiled
    `f(5)` per loop iteration); the empty loop is the same loop with `pass`.
    """
    args, contenders = make_contenders(arity)
    if contender == EMPTY:
        timer = timeit.Timer("pass")
    else:
        call, names = call_source(args)
        timer = timeit.Timer(call, globals={**names, "f": contenders[contender]})
    timer.timeit(number)


def callgrind_total(out_file: Path) -> int:
    """The instructions a callgrind run counted (its `summary:` line)."""
    text = out_file.read_text()
    found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no instruction total in {out_file}")
    return int(found.group(1))


def count(arity: int | str, contender: str, number: int, out_file: Path) -> int:
    """Instructions of one child process making `number` calls."""
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out_file}",
        sys.executable,
        __file__,
        "--child",
        str(arity),
        contender,
        str(number),
    ]
    # A fixed hash seed: the two runs of a pair then do the same start-up
    # work, which the subtraction relies on.
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return callgrind_total(out_file)


def per_call(arity: int | str, contender: str, calls: int, warm: int, keep: Path) -> float:
    """Instructions of one call of `contender` (loop included)."""
    name = f"{arity}-{contender.replace(' ', '_').replace('.', '_')}"
    short = count(arity, contender, warm, keep / f"{name}.short.out")
    long = count(arity, contender, warm + calls, keep / f"{name}.long.out")
    return (long - short) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS, help="calls counted per contender")
    parser.add_argument("--warm", type=int, default=WARM, help="calls both runs of a pair make")
    parser.add_argument(
        "--arity",
        choices=tuple(SHAPES),
        action="append",
        help="only this shape: 1, 3, enum or subclass (repeatable)",
    )
    parser.add_argument("--keep", type=Path, help="keep the callgrind output files in this dir")
    parser.add_argument("--json", action="store_true", help="also print the counts as JSON")
    parser.add_argument(
        "--child", nargs=3, metavar=("ARITY", "CONTENDER", "N"), help=argparse.SUPPRESS
    )
    options = parser.parse_args()

    if options.child:
        arity, contender, number = options.child
        run_child(SHAPES[arity], contender, int(number))
        return 0
    if shutil.which("valgrind") is None:
        print("hit_instructions: valgrind is not installed; nothing measured.")
        print("Install it (e.g. apt-get install valgrind) to count instructions per call.")
        return 0

    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"# callgrind, {python}, {options.calls} calls counted per contender")
    keep_dir = options.keep
    if keep_dir is not None:
        keep_dir.mkdir(parents=True, exist_ok=True)
    everything: dict[str, dict[str, float]] = {}
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = keep_dir or Path(scratch)
        for arity in [SHAPES[a] for a in options.arity or SHAPES]:
            label = LABELS[arity]
            gross = {
                c: per_call(arity, c, options.calls, options.warm, out_dir) for c in CONTENDERS
            }
            loop = gross.pop(EMPTY)
            net = {c: value - loop for c, value in gross.items()}
            everything[label] = {"empty loop": loop, **net}
            print(f"\n{label} (empty loop: {loop:.1f} instructions, subtracted)\n")
            failed += print_table(arity, net, "instructions/call")
    payload = {"bench": "hit_instructions", "python": python, "instructions": everything}
    print_footer(failed, payload if options.json else None, " (in instructions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
