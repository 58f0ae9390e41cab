"""The code passes the linter: ``ruff check`` with the configuration in pyproject.toml ([tool.ruff]).

The rules are pyflakes (unused imports, undefined names, ...) and pycodestyle's errors and warnings that
are not about layout; see pyproject.toml for what is left out and why. Run ``ruff check --fix`` (or
``python -m ruff check``) from the repository root to see and fix the findings. The formatter
(``ruff format``) is not adopted: it would rewrite most files.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_check_passes():
    assert importlib.util.find_spec("ruff") is not None, \
        "ruff is a dev dependency: pip install -e '.[dev]' (make test installs it)"
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"ruff check found problems (fix them, or see [tool.ruff] in pyproject.toml):\n" \
                                f"{out.stdout}{out.stderr}"
