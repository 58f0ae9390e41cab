"""The grader against a real PostgreSQL gradebook (autograder/README.md, "Several graders at once: PostgreSQL").

A throwaway PostgreSQL server (initdb into a temporary folder, 127.0.0.1 on a free port, trust auth) holds
the gradebook. With ALIGNLAB_DB_URL pointing at it, the course's own code paths are used:

- ``course.default_db_url`` and ``release.release``: every assignment is released (into a temporary folder)
  and recorded in PostgreSQL; ``nbgrader db assignment list`` (through nbgrader_config.py) sees it there;
- ``python -m alignlab.grading grade`` (in-process, a temporary ``--runtime``, 2 workers) grades a class of
  three: the solution, the untouched student notebook and one catalogued wrong answer;
- a manual grade entered with nbgrader's Gradebook API survives re-grading that student;
- ``python -m alignlab.grading export`` writes grades.csv with every student and the manual grade.

The same class, graded the same way with the gradebook in SQLite (ALIGNLAB_DB_URL unset), must give the
same gradebook contents and the same grades.csv. psycopg2 reads the rows straight from PostgreSQL, so the
test cannot pass against SQLite by mistake. Needs PostgreSQL's server binaries (``sudo apt-get install
postgresql``); skipped without them.
"""
from __future__ import annotations

import contextlib
import csv
import glob
import io
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from conftest import free_port

from adversarial.grading_batch import wrong_notebook
from alignlab.grading import __main__ as cli
from alignlab.grading import batch, course, release

pytestmark = pytest.mark.slow

ASSIGNMENT = "00_getting_started"
ROOT = course.REPO_ROOT
ENABLE = "sudo apt-get install postgresql"
DB = "alignlab"
MANUAL = ("wrong", "test_log_softmax", 0.5)     # (student, grade cell, manual score): partial credit by hand


# ------------------------------------------------------------------ a throwaway PostgreSQL server
def pg_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: from PATH, else the newest /usr/lib/postgresql/*/bin (Debian)."""
    found = shutil.which("pg_ctl")
    if found and (Path(found).parent / "initdb").exists():
        return Path(found).parent
    def version(p: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", Path(p).parent.name))
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(d) / "pg_ctl").exists() and (Path(d) / "initdb").exists():
            return Path(d)
    return None


def server_user():
    """The account the server runs as: PostgreSQL refuses root, so root hands it to `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    pytest.skip("running as root, and there is no unprivileged `postgres` or `nobody` account to run "
                f"PostgreSQL as ({ENABLE} creates `postgres`)")



@contextlib.contextmanager
def postgres_server():
    """Yield the URL of a fresh database on a private PostgreSQL server; the server is always stopped."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL's server binaries (initdb, pg_ctl) are not installed; enable with: {ENABLE}")
    user = server_user()
    as_user = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    top = Path(tempfile.mkdtemp(prefix="alignlab-pg-"))
    data, sock, log = top / "data", top / "sock", top / "server.log"
    sock.mkdir()
    if user is not None:
        for p in (top, sock):
            os.chown(p, user.pw_uid, user.pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    if user is not None:
        env.update(HOME=str(top), USER=user.pw_name, LOGNAME=user.pw_name)

    def pg(*args, check=True, timeout=120):
        out = subprocess.run([str(bindir / args[0]), *args[1:]], cwd=top, env=env, capture_output=True, text=True,
                             timeout=timeout, **as_user)
        if check and out.returncode != 0:
            server_log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n{server_log}")
        return out

    started = False
    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        port = free_port()
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c full_page_writes=off"
        started = True
        pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DB}")
        finally:
            conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/{DB}"
    finally:
        try:
            if started and pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop",
                              check=False).returncode != 0:
                pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop", check=False)
        finally:
            shutil.rmtree(top, ignore_errors=True)


def pg_rows(url: str, sql: str) -> list[tuple]:
    """Query PostgreSQL directly with psycopg2 (not through nbgrader or SQLAlchemy)."""
    import psycopg2
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


# ------------------------------------------------------------------ the class, graded through the CLI
def submit_class(runtime: Path) -> dict:
    """solution / stub / wrong under runtime/submitted/; returns {exercise: mistake} of the wrong one."""
    sub = runtime / "submitted"
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, sub / "solution" / ASSIGNMENT)
    shutil.copytree(ROOT / "notebooks" / ASSIGNMENT, sub / "stub" / ASSIGNMENT)
    nb, chosen = wrong_notebook(ASSIGNMENT)
    (sub / "wrong" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(nb, sub / "wrong" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    assert chosen, f"{ASSIGNMENT} has no catalogued wrong answer"
    return chosen


def run_cli(*argv) -> str:
    """``python -m alignlab.grading ARGV`` in this process; what it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(list(argv))
    assert rc == 0, (argv, buf.getvalue())
    return buf.getvalue()


def snapshot(c: batch.Course) -> dict:
    """Everything graded about the class, read back through nbgrader's Gradebook API."""
    out = {}
    with c.gradebook() as gb:
        for student in gb.students:
            sub = gb.find_submission(ASSIGNMENT, student.id)
            for nb in sub.notebooks:
                for g in nb.grades:
                    out[(student.id, nb.name, g.name)] = (g.auto_score, g.manual_score, g.score, g.max_score,
                                                          g.needs_manual_grade)
                for cm in nb.comments:
                    out[(student.id, nb.name, cm.name, "comment")] = (cm.auto_comment, cm.manual_comment)
            out[(student.id, "total")] = (sub.score, sub.max_score, sub.needs_manual_grade)
    return out


def grades_csv(c: batch.Course) -> dict:
    rows = csv.DictReader(open(c.exports / "grades.csv"))
    return {(r["student_id"], r["assignment"]): {k: v for k, v in r.items() if k != "timestamp"} for r in rows}


def grade_class(runtime: Path, template_from: Path | None = None) -> batch.Course:
    """Through the CLI: grade the class (2 workers), enter a manual grade, re-grade that student, export."""
    chosen = submit_class(runtime)
    if template_from is not None:       # same solutions/, same template gradebook: skip rebuilding it
        (runtime / "work").mkdir(parents=True)
        for name in ("template.db", "template.key"):
            shutil.copy(template_from / "work" / name, runtime / "work" / name)
    args = ["--runtime", str(runtime), "-a", ASSIGNMENT]
    out = run_cli("grade", *args, "--workers", "2", "--no-progress", "--no-feedback")
    for student in ("solution", "stub", "wrong"):
        assert re.search(rf"^{student}\s+{ASSIGNMENT}\s+graded\b", out, re.M), out
    c = batch.Course(runtime=runtime, db_url=os.environ.get("ALIGNLAB_DB_URL"))
    student, cell, score = MANUAL
    with c.gradebook() as gb:
        g = gb.find_grade(cell, ASSIGNMENT, ASSIGNMENT, student)
        assert g.auto_score == 0, f"{student} was meant to lose {cell} ({chosen})"
        g.manual_score = score
        gb.db.commit()
    out = run_cli("grade", *args, "-s", student, "--workers", "2", "--no-progress", "--no-feedback")
    assert re.search(rf"^{student}\s+{ASSIGNMENT}\s+graded\b", out, re.M), out
    run_cli("export", *args)
    return c


@pytest.fixture(scope="module")
def graded():
    """The class graded against PostgreSQL (via ALIGNLAB_DB_URL) and, for comparison, against SQLite."""
    # Not pytest's tmp_path: a pytest session starting meanwhile (another test run on this machine) resets
    # /tmp/pytest-of-<user> to 0700, and the sandboxed submissions' uids could then not reach their workspaces.
    top = Path(tempfile.mkdtemp(prefix="alignlab-pg-class-"))
    try:
        yield grade_both(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def grade_both(top: Path) -> dict:
    with postgres_server() as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNLAB_DB_URL", url)
        mp.setenv("ALIGNLAB_HIDDEN_SEED", "20261202")    # both gradebooks' classes meet the same hidden cases
        pg_runtime = top / "pg" / "runtime"
        release_dir = top / "release"
        assert course.default_db_url() == url
        # the default course settings (what nbgrader_config.py applies) read ALIGNLAB_DB_URL: no db_url given
        # (every assignment, as `make release` does; a fresh SQLite gradebook starts from all of them too)
        release.release(release.assignments(), release_dir=release_dir, log=lambda *_: None)
        listed = subprocess.run([sys.executable, "-m", "nbgrader", "db", "assignment", "list"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                                           f"{os.environ.get('PATH', '')}"})
        pg_course = grade_class(pg_runtime)
        assert pg_course.db_url == course.engine_url(url) and pg_course.db_url.startswith("postgresql")
        pg_state = {"snapshot": snapshot(pg_course), "csv": grades_csv(pg_course),
                    "released": sorted(p.name for p in (release_dir / ASSIGNMENT).iterdir()),
                    "listed": listed,
                    "grades": pg_rows(url, "SELECT st.id, c.name, g.auto_score, g.manual_score FROM grade g "
                                           "JOIN base_cell c ON g.cell_id = c.id "
                                           "JOIN submitted_notebook n ON g.notebook_id = n.id "
                                           "JOIN submitted_assignment a ON n.assignment_id = a.id "
                                           "JOIN student st ON a.student_id = st.id ORDER BY st.id, c.name"),
                    "assignments": pg_rows(url, "SELECT name FROM assignment ORDER BY name")}
        mp.delenv("ALIGNLAB_DB_URL")
        sqlite_runtime = top / "sqlite" / "runtime"
        sq_course = grade_class(sqlite_runtime, template_from=pg_runtime)
        sq_state = {"snapshot": snapshot(sq_course), "csv": grades_csv(sq_course)}
    return {"url": url, "pg": pg_state, "sqlite": sq_state, "sqlite_url": sq_course.db_url}


def test_release_records_the_assignment_in_postgres_through_the_env_var(graded):
    assert graded["pg"]["released"] == [f"{ASSIGNMENT}.ipynb"]
    assert graded["pg"]["assignments"] == [(a,) for a in release.assignments()]
    listed = graded["pg"]["listed"]
    assert listed.returncode == 0, listed.stderr[-2000:]
    for a in release.assignments():
        assert a in listed.stdout + listed.stderr, f"nbgrader_config.py did not use ALIGNLAB_DB_URL:\n{listed.stdout}"


def test_every_student_has_grade_rows_in_postgres(graded):
    rows = graded["pg"]["grades"]
    assert {r[0] for r in rows} == {"solution", "stub", "wrong"}
    scores = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    assert len(scores) == len(rows), f"duplicate grade rows after re-grading: {rows}"
    assert scores[("solution", "test_log_softmax")] == (1.0, None)
    assert scores[("stub", "test_log_softmax")] == (0.0, None)
    student, cell, manual = MANUAL
    assert scores[(student, cell)] == (0.0, manual), "the manual grade was lost by re-grading"
    assert graded["sqlite_url"].startswith("sqlite:///")


def test_grades_csv_lists_every_student_with_the_manual_grade(graded):
    rows = graded["pg"]["csv"]      # nbgrader's export: every student x every assignment of the gradebook
    assert set(rows) == {(s, a) for s in ("solution", "stub", "wrong") for a in release.assignments()}
    assert {s: float(r["score"]) for (s, a), r in rows.items() if a == ASSIGNMENT} == \
        {"solution": 1.0, "stub": 0.0, "wrong": MANUAL[2]}
    assert all(float(r["score"]) == 0 for (s, a), r in rows.items() if a != ASSIGNMENT)


def test_postgres_and_sqlite_gradebooks_agree(graded):
    pg, sq = graded["pg"], graded["sqlite"]
    assert pg["snapshot"] and pg["snapshot"] == sq["snapshot"]
    assert pg["csv"] == sq["csv"]
