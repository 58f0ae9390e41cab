"""Runs inside the grading kernel, before any student code: undoes tampering with the checks before every cell.

``GradingExecute`` starts the kernel with ``install()`` in its exec_lines. It snapshots the check and reference
modules (their attributes and their functions' code), then registers an IPython ``pre_run_cell`` hook that,
before each cell, puts back anything a previous cell replaced: ``sys.modules`` entries, module attributes,
function code and defaults, and the notebook's global name ``checks`` (for cells that use it). A student who
redefines a check therefore gets graded by the real one, and the test cell says that it was restored.
It only runs under the grader; a learner's kernel never loads it.
"""
from __future__ import annotations

import sys
import types

_WATCHED = ("alignlab.checks", "alignlab.reference")
_snapshot: dict[str, tuple[types.ModuleType, dict, dict]] = {}
_MISSING = object()
_SHELL = []            # the IPython shell, captured at install (get_ipython is not a builtin inside event hooks)


def _function_state(fn):
    return (fn.__code__, fn.__defaults__, fn.__kwdefaults__)


def _take_snapshot() -> None:
    for name, module in list(sys.modules.items()):
        if module is None or not any(name == w or name.startswith(w + ".") for w in _WATCHED):
            continue
        attrs = dict(module.__dict__)
        functions = {k: _function_state(v) for k, v in attrs.items() if isinstance(v, types.FunctionType)}
        _snapshot[name] = (module, attrs, functions)


def restore(info=None) -> list[str]:
    """Put back every watched module, attribute and function; return what had been changed."""
    changed = []
    for name, (module, attrs, functions) in _snapshot.items():
        if sys.modules.get(name) is not module:
            sys.modules[name] = module
            changed.append(name)
        for key, value in attrs.items():
            if module.__dict__.get(key, _MISSING) is not value:
                module.__dict__[key] = value
                changed.append(f"{name}.{key}")
        for key, (code, defaults, kwdefaults) in functions.items():
            fn = attrs[key]
            if (fn.__code__, fn.__defaults__, fn.__kwdefaults__) != (code, defaults, kwdefaults):
                fn.__code__, fn.__defaults__, fn.__kwdefaults__ = code, defaults, kwdefaults
                changed.append(f"{name}.{key}")
    parent = sys.modules.get("alignlab")
    checks = _snapshot.get("alignlab.checks", (None,))[0]
    if parent is not None and checks is not None and getattr(parent, "checks", None) is not checks:
        parent.checks = checks
    cell = getattr(info, "raw_cell", "") or ""
    shell = _shell()
    if shell is not None and checks is not None and "checks" in cell:
        if shell.user_ns.get("checks", checks) is not checks:
            changed.append("checks")
        if "checks" in shell.user_ns or "checks." in cell:
            shell.user_ns["checks"] = checks
    if changed and "BEGIN HIDDEN TESTS" in cell:
        print("Note from the grader: an earlier cell replaced " + ", ".join(sorted(set(changed)))
              + "; the original checks were restored for this test.")
    return changed


def _shell():
    if _SHELL:
        return _SHELL[0]
    try:
        return get_ipython()  # noqa: F821  (defined inside IPython)
    except NameError:
        return None


def install() -> None:
    """Import the checks, snapshot them, and restore them before every cell. Never raises."""
    try:
        import alignlab.checks  # noqa: F401
        try:
            import alignlab.reference  # noqa: F401
        except Exception:
            pass
        _take_snapshot()
        shell = _shell()
        if shell is not None:
            _SHELL.append(shell)
            shell.events.register("pre_run_cell", restore)
    except Exception as exc:  # the grader must run even if the checks cannot be imported
        print(f"grading guard not installed: {exc!r}")
