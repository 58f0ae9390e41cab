"""A catalogue of wrong and valid implementations of every exercise, to prove the checks work.

- ``wrong.WRONG = {exercise: [(mistake, fn), ...]}``: each ``fn`` must lose its
  points (``checks.NAME(fn)`` or ``checks.NAME(fn, hidden=True)`` raises AssertionError).
- ``valid.VALID = {exercise: [(name, fn), ...]}``: different but correct code;
  each must pass the public and the hidden check.

The scheme, so that any entry can become a notebook cell:

- every entry is a plain function defined at the top level of its module, under a
  unique Python name ``<exercise>__<slug>``, with the exercise's exact signature;
- it is registered by the decorator ``@wrong(exercise, mistake)`` or
  ``@valid(exercise, name)``, which also sets ``fn.exercise``;
- its body uses only ``math``, ``torch`` and ``torch.nn.functional as F`` (and
  imports ``alignlab.reference`` inside the body when it delegates).

``cell_source(fn)`` returns the source of a solution cell: those imports and the
function renamed to its exercise (decorator dropped). ``load_cell(source)`` runs
such a source and returns the function, which is how a test proves the round trip.
``entry("wrong", "dpo_loss", "sign flipped")`` looks an entry up by its label.

    >>> from catalogue import entry, cell_source        # with tests/ on sys.path
    >>> print(cell_source(entry("wrong", "dpo_loss", "sign flipped")))
"""
from __future__ import annotations

import inspect
import re
import textwrap
from typing import Callable

CELL_IMPORTS = "import math\n\nimport torch\nimport torch.nn.functional as F\n\n\n"


def register(table: dict, exercise: str, label: str) -> Callable:
    """Decorator factory: add the function to ``table[exercise]`` under ``label``."""
    def decorate(fn: Callable) -> Callable:
        fn.exercise = exercise
        fn.label = label
        table.setdefault(exercise, []).append((label, fn))
        return fn
    return decorate


def cell_source(fn: Callable) -> str:
    """The source of a notebook solution cell defining ``fn`` under its exercise's name."""
    source = textwrap.dedent(inspect.getsource(fn))
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def "))
    body = "\n".join(lines[start:]) + "\n"
    body, count = re.subn(rf"^def {re.escape(fn.__name__)}\(", f"def {fn.exercise}(", body, count=1)
    if count != 1:
        raise ValueError(f"cannot find the definition of {fn.__name__} in its source")
    return CELL_IMPORTS + body


def entry(kind: str, exercise: str, label: str) -> Callable:
    """The function registered under ``label`` for ``exercise`` in the "wrong" or "valid" table."""
    if kind == "wrong":
        from .wrong import WRONG as table
    elif kind == "valid":
        from .valid import VALID as table
    else:
        raise ValueError(f"kind must be 'wrong' or 'valid', got {kind!r}")
    for name, fn in table.get(exercise, []):
        if name == label:
            return fn
    raise KeyError(f"no {kind} entry {label!r} for {exercise}; have {[n for n, _ in table.get(exercise, [])]}")


def load_cell(source: str, exercise: str) -> Callable:
    """Execute a cell source in a fresh namespace and return the function it defines."""
    namespace: dict = {}
    exec(compile(source, f"<cell {exercise}>", "exec"), namespace)
    return namespace[exercise]


def slug(label: str) -> str:
    """A pytest-id friendly version of a label."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower()


def sizes() -> dict[str, tuple[int, int]]:
    """{exercise: (number of wrong, number of valid)}, for the closing note."""
    from .valid import VALID
    from .wrong import WRONG
    return {name: (len(WRONG.get(name, [])), len(VALID.get(name, []))) for name in sorted(set(WRONG) | set(VALID))}
