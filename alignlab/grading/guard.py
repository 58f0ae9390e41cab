"""Runs inside the grading kernel, before any student code: undoes tampering with the checks before every cell.

The grade does not rest on it: the judge (``judge.py``) holds the expected outputs outside the kernel and its
record is the grade. The guard keeps what the kernel shows honest: a test cell runs the real check, so the
learner reads the judge's verdict rather than a replaced check's "passed".

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
_PENDING: list[str] = []   # what restore_before_test (run by the grader, not by an event) found changed
# torch functions the checks compare with: a cell that patches them (torch.equal = lambda *a: True) is undone
_TORCH = [("torch", "equal"), ("torch", "allclose"), ("torch", "isclose"), ("torch", "isfinite"), ("torch", "where"),
          ("torch", "nan_to_num"), ("torch", "tensor"), ("torch.autograd", "grad")] + \
    [("torch.Tensor", m) for m in ("all", "any", "__eq__", "__ne__", "__le__", "__lt__", "__ge__", "__gt__", "__bool__",
                                   "item", "tolist", "abs", "max", "double", "detach", "sum", "__sub__", "__add__",
                                   "__mul__", "float", "clone", "bool")]
_torch_state: dict[tuple[str, str], object] = {}
_ipython_state: dict[str, list] = {}


def _function_state(fn):
    cells = tuple(c.cell_contents if _filled(c) else _MISSING for c in (fn.__closure__ or ()))
    return (fn.__code__, fn.__defaults__, fn.__kwdefaults__, cells)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def _resolve(dotted: str):
    obj = sys.modules.get(dotted.split(".")[0])
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part, None)
    return obj


def _take_snapshot() -> None:
    for name, module in list(sys.modules.items()):
        if module is None or not any(name == w or name.startswith(w + ".") for w in _WATCHED):
            continue
        attrs = dict(module.__dict__)
        functions = {k: _function_state(v) for k, v in attrs.items() if isinstance(v, types.FunctionType)}
        _snapshot[name] = (module, attrs, functions)
    for owner, attr in _TORCH:
        obj = _resolve(owner)
        if obj is not None and hasattr(obj, "__dict__"):
            _torch_state[(owner, attr)] = obj.__dict__.get(attr, _MISSING)   # _MISSING: inherited (e.g. from TensorBase)
    shell = _shell()
    for name in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers"):
        if shell is not None and isinstance(getattr(shell, name, None), list):
            _ipython_state[name] = list(getattr(shell, name))


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
        for key, (code, defaults, kwdefaults, cells) in functions.items():
            fn = attrs[key]
            if (fn.__code__, fn.__defaults__, fn.__kwdefaults__) != (code, defaults, kwdefaults):
                fn.__code__, fn.__defaults__, fn.__kwdefaults__ = code, defaults, kwdefaults
                changed.append(f"{name}.{key}")
            for cell, value in zip(fn.__closure__ or (), cells):
                if value is not _MISSING and (not _filled(cell) or cell.cell_contents is not value):
                    cell.cell_contents = value
                    changed.append(f"{name}.{key}")
    for (owner, attr), value in _torch_state.items():
        obj = _resolve(owner)
        if obj is not None and obj.__dict__.get(attr, _MISSING) is not value:
            try:
                delattr(obj, attr) if value is _MISSING else setattr(obj, attr, value)
                changed.append(f"{owner}.{attr}")
            except (AttributeError, TypeError):
                pass
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
    if shell is not None:
        for name, value in _ipython_state.items():
            if getattr(shell, name, None) != value:
                setattr(shell, name, list(value))
                changed.append(f"IPython {name}")
        try:
            if restore not in shell.events.callbacks["pre_run_cell"]:
                shell.events.register("pre_run_cell", restore)
                changed.append("the grader's pre_run_cell hook")
        except Exception:
            pass
    if info is None or getattr(info, "quiet", False):
        _PENDING.extend(changed)
        return changed
    changed, _PENDING[:] = _PENDING + changed, []
    if changed and "BEGIN HIDDEN TESTS" in cell:
        print("Note from the grader: an earlier cell replaced " + ", ".join(sorted(set(changed)))
              + "; the original checks were restored for this test.")
    return changed


def restore_before_test(source: str) -> None:
    """Run by the grader itself (a silent execute request) before each test cell, so that a cell that removed
    the pre_run_cell hook (events.unregister) or patched torch or IPython is undone all the same."""
    restore(types.SimpleNamespace(raw_cell=source, quiet=True))


def _shell():
    if _SHELL:
        return _SHELL[0]
    try:
        return get_ipython()  # noqa: F821  (defined inside IPython)
    except NameError:
        return None


def install() -> None:
    """Import the checks, snapshot them, and restore them before every cell. Never raises. (The verdicts do not
    depend on it: the judge gives them, outside the kernel; the guard keeps the test cells' output truthful.)"""
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
