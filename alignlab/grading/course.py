"""The nbgrader course layout and settings, in one place: the repo's nbgrader_config.py and every grading worker apply them.

Layout (course root = the repository):

    solutions/NN_name/NN_name.ipynb      nbgrader source (instructor copies)
    notebooks/NN_name/NN_name.ipynb      release (student copies, generated)
    autograder/runtime/                  git-ignored grading state:
        gradebook.db                     the SQLite gradebook (or CourseDirectory.db_url)
        submitted/<student>/<assignment>/    collected submissions
        autograded/<student>/<assignment>/   executed, scored notebooks (hidden tests inside: instructor only)
        feedback/<student>/<assignment>/     HTML for students (hidden tests removed and verified)
        exports/grades.csv, exports/grades_detail.csv
        work/                            per-submission scratch courses of the parallel grader
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds, GetGrades,
                                    IgnorePattern, LimitOutput, OverwriteKernelspec, SaveAutoGrades)

from .preprocessors import GradingExecute, HideHiddenTests, KeepStderrVisible, LimitOutputChars, RobustOverwriteCells

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = "solutions"
RELEASE_DIR = "notebooks"
RUNTIME_DIR = Path("autograder") / "runtime"

CELL_TIMEOUT_S = 60        # one cell, grading mode (training cells take seconds there); a loop is interrupted after this
KERNEL_NAME = "python3"    # the notebooks' kernelspec: the .venv's ipykernel provides it, so does Colab

# stderr lines that are noise, not failure: warnings and progress bars (tqdm draws with \r and block characters).
IGNORE_STDERR = r"(?s).*(Warning|warnings\.warn|it/s\]|s/it\]|\r|\d+%\|)"

STUB_CODE = "# YOUR CODE HERE\nraise NotImplementedError()"
STUB_TEXT = "YOUR ANSWER HERE"


def runtime_dir(root: Path | str = REPO_ROOT) -> Path:
    """The git-ignored folder holding all grading state of the course rooted at ``root``."""
    return Path(root) / RUNTIME_DIR


def configured_db_url() -> str | None:
    """The shared gradebook of several graders, ALIGNLAB_DB_URL (e.g. postgresql://...), when it is set."""
    return os.environ.get("ALIGNLAB_DB_URL") or None


def default_db_url(root: Path | str = REPO_ROOT) -> str:
    """The SQLite gradebook; ALIGNLAB_DB_URL (e.g. postgresql://...) overrides it for several graders."""
    return configured_db_url() or f"sqlite:///{runtime_dir(root) / 'gradebook.db'}"


def engine_url(url: str) -> str:
    """``url`` as SQLAlchemy should get it: ``postgresql://`` (and ``postgres://``) means SQLAlchemy's default
    PostgreSQL driver, psycopg 3 from SQLAlchemy 2.1 on; where only psycopg2 is installed (the dev extras'
    psycopg2-binary) the driver is named, ``postgresql+psycopg2://``. Other URLs are returned unchanged."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return "postgresql://" + rest if sep and scheme == "postgres" else url


def apply(c, root: Path | str = REPO_ROOT, runtime: Path | str | None = None, db_url: str | None = None,
          cell_timeout: int = CELL_TIMEOUT_S) -> None:
    """Write the course settings into the traitlets config ``c`` (what ``get_config()`` returns).

    ``root`` holds solutions/ and notebooks/; ``runtime`` (default autograder/runtime under root) holds
    the gradebook, submitted, autograded and feedback folders. Workers pass their own scratch runtime.
    """
    root = Path(root).resolve()
    runtime = Path(runtime).resolve() if runtime else runtime_dir(root)

    c.CourseDirectory.root = str(root)
    c.CourseDirectory.course_id = "alignlab"        # stored in every gradebook we write; keep it fixed
    c.CourseDirectory.source_directory = str(root / SOURCE_DIR)
    c.CourseDirectory.release_directory = str(root / RELEASE_DIR)
    c.CourseDirectory.submitted_directory = str(runtime / "submitted")
    c.CourseDirectory.autograded_directory = str(runtime / "autograded")
    c.CourseDirectory.feedback_directory = str(runtime / "feedback")
    c.CourseDirectory.solution_directory = str(runtime / "solution")
    c.CourseDirectory.db_url = engine_url(db_url or (f"sqlite:///{runtime / 'gradebook.db'}"
                                                     if runtime != runtime_dir(root) else default_db_url(root)))
    if c.CourseDirectory.db_url.startswith("sqlite:///"):
        # SQLite creates the file but not its folder: a fresh clone has no autograder/runtime/ yet, and
        # formgrader (or `nbgrader db ...`) would answer every request with an error 500 without it.
        Path(c.CourseDirectory.db_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]

    c.ClearSolutions.code_stub = {"python": STUB_CODE}
    c.ClearSolutions.text_stub = STUB_TEXT

    # Execution under the grader: our kernel, a timeout per cell, survive a dying kernel.
    c.Execute.kernel_name = KERNEL_NAME             # (applies to GradingExecute, a subclass)
    c.Execute.timeout = cell_timeout
    c.Execute.interrupt_on_timeout = True
    c.Execute.iopub_timeout = 20                    # output may lag behind the reply on a busy machine
    c.IgnorePattern.enabled = True                  # (off by default in nbgrader)
    c.IgnorePattern.pattern = IGNORE_STDERR
    c.LimitOutput.max_lines = 200
    c.LimitOutput.max_traceback = 60
    c.OverwriteCells.add_missing_cells = True       # (applies to RobustOverwriteCells, a subclass)

    c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec,
                                          RobustOverwriteCells, CheckCellMetadata]
    c.Autograde.autograde_preprocessors = [GradingExecute, IgnorePattern, KeepStderrVisible,
                                           ClearMetadataPreprocessor, LimitOutput, LimitOutputChars, SaveAutoGrades,
                                           AssignLatePenalties, CheckCellMetadata]
    # Feedback for students: nbgrader's own feedback would show hidden test code; HideHiddenTests removes it.
    c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
