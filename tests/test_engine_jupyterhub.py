"""A class on a real JupyterHub: release, fetch, submit, collect, grade, release and fetch feedback.

A local JupyterHub (the real ``jupyterhub`` package and its proxy, loopback only, free ports) with an
instructor and two students, all of them this Unix user (``SimpleLocalProcessSpawner``), each with a home
folder of their own under tmp. The instructor's home is a copy of the course (nothing in the checkout
changes); nbgrader's exchange is a folder under tmp that every server and the instructor's commands find
through a global ``nbgrader_config.py`` on ``JUPYTER_CONFIG_PATH`` (``/etc/jupyter`` on a real hub).

1. The instructor runs ``nbgrader release_assignment 00_getting_started`` in the course folder.
2. Each student logs in through the hub's login form and, on their own single-user server, uses the
   Assignment List's REST handlers (nbgrader's server extension) to fetch the assignment, writes it through
   the Jupyter contents API (alice: the solution's answers; bob: saves it untouched) and submits it.
3. The instructor runs ``nbgrader collect``, then ``python -m alignlab.grading grade`` (the parallel grader,
   feedback and CSVs), then ``nbgrader release_feedback``.
4. Each student fetches the feedback through the server extension: it lands in their home, shows their own
   score, and holds no hidden test code. The instructor's formgrader, on the hub, lists both scores.

Everything is torn down at the end: the hub, the proxy and every single-user server.
"""
from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ASSIGNMENT = "00_getting_started"        # the fastest notebook to grade
COURSE_ID = "alignlab"                   # fixed by alignlab/grading/course.py
INSTRUCTOR, FINISHED, UNTOUCHED = "instructor", "alice", "bob"
STUDENTS = (FINISHED, UNTOUCHED)
PASSWORD = "alignlab-class-password"     # SharedPasswordAuthenticator: one password for every (non-admin) user
START_TIMEOUT_S = 120                    # the hub, or one single-user server, to answer (a busy 2-core machine)

pytestmark = pytest.mark.slow


def _need_jupyterhub():
    if importlib.util.find_spec("jupyterhub") is None or not (BIN / "configurable-http-proxy").exists() \
            or not (BIN / "jupyterhub-singleuser").exists():
        pytest.skip('JupyterHub is not installed: pip install -e ".[grading,dev]"')



def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)
    return env


# ------------------------------------------------------------------ the class: folders and configuration
def _course_copy(dest: Path) -> Path:
    """What an instructor's clone holds for grading: the package, sources, releases, references, the config."""
    skip = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.pyc")
    for name in ("alignlab", "solutions", "notebooks", "autograder/references", "autograder/questions"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name, ignore=skip)
    shutil.copy(ROOT / "nbgrader_config.py", dest / "nbgrader_config.py")
    return dest


def _write_configs(tmp: Path, hub_port: int, api_port: int, proxy_api_port: int, token: str) -> Path:
    exchange = tmp / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)                   # as nbgrader's docs ask: everyone writes the exchange
    # Global nbgrader config (a real hub: /etc/jupyter/nbgrader_config.py): the exchange, for everyone.
    (tmp / "etc").mkdir()
    (tmp / "etc" / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.Exchange.root = {str(exchange)!r}\n")
    # Students' identity. nbgrader names a submission after the Unix user, or after JUPYTERHUB_USER when that
    # user is "jovyan" (as in Zero to JupyterHub's and DockerSpawner's containers). Here every hub user is
    # this one Unix user, so the students' servers name them explicitly (the instructor's server does not).
    (tmp / "students").mkdir()
    (tmp / "students" / "nbgrader_config.py").write_text(
        "import os\nc = get_config()\nc.CourseDirectory.student_id = os.environ['JUPYTERHUB_USER']\n")
    hub = tmp / "hub"
    hub.mkdir()
    config = f"""
import os
c = get_config()
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {hub_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {api_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{str(BIN / "configurable-http-proxy")!r}]
c.JupyterHub.db_url = "sqlite:///{hub / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(hub / 'jupyterhub_cookie_secret')!r}
c.JupyterHub.pid_file = {str(hub / 'jupyterhub.pid')!r}
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {PASSWORD!r}
c.Authenticator.allowed_users = {set((INSTRUCTOR,) + STUDENTS)!r}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(tmp / 'home' / '{username}')!r}
c.Spawner.cmd = [{str(BIN / "jupyterhub-singleuser")!r}]
c.Spawner.args = ["--allow-root"]            # the tests run as root
c.Spawner.default_url = "/tree"
c.Spawner.start_timeout = {START_TIMEOUT_S}
c.Spawner.http_timeout = {START_TIMEOUT_S}
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM"]
c.Spawner.environment = {{
    "PATH": {f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"!r},
    "JUPYTER_CONFIG_PATH": lambda spawner: {str(tmp / 'etc')!r} if spawner.user.name == {INSTRUCTOR!r}
        else {str(tmp / 'students')!r} + os.pathsep + {str(tmp / 'etc')!r},
}}
# The test drives the hub through its REST API with this service's token.
c.JupyterHub.services = [{{"name": "class-admin", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "class-admin", "services": ["class-admin"],
                            "scopes": ["admin:users", "admin:servers", "tokens"]}}]
"""
    (hub / "jupyterhub_config.py").write_text(config)
    return hub


# ------------------------------------------------------------------ processes
def _wait(what: str, ok, proc, log: Path, timeout: float = START_TIMEOUT_S):
    deadline = time.time() + timeout
    while True:
        try:
            got = ok()
            if got:
                return got
        except Exception:                       # noqa: BLE001 (not up yet)
            pass
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"{what} did not happen; the hub's log:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the hub (it stops the single-user servers and its proxy), then kill whatever of its tree is left."""
    import psutil
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)      # the proxy and the servers
    except psutil.NoSuchProcess:
        tree = []
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for p in tree:                      # each server runs in a session of its own: kill its whole group
        try:
            if p.is_running():
                os.killpg(p.pid, signal.SIGKILL) if os.getpgid(p.pid) == p.pid else p.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    psutil.wait_procs(tree, timeout=10)
    proc.wait(timeout=10)


class Hub:
    def __init__(self, url: str, token: str, tmp: Path, proc, log: Path):
        self.url, self.token, self.tmp, self.proc, self.log = url, token, tmp, proc, log

    def home(self, user: str) -> Path:
        return self.tmp / "home" / user

    def api(self, method: str, path: str, **kw):
        import requests
        r = requests.request(method, f"{self.url}/hub/api{path}", headers={"Authorization": f"token {self.token}"},
                             timeout=60, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def start_servers(self, users):
        for user in users:
            self.api("POST", f"/users/{user}/server")
        for user in users:
            _wait(f"{user}'s server to start",
                  lambda: self.api("GET", f"/users/{user}")["servers"].get("", {}).get("ready"), self.proc, self.log)

    def instructor(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """A command in the instructor's course folder, as in a terminal on their server."""
        home = self.home(INSTRUCTOR)
        out = subprocess.run(list(cmd), cwd=home, capture_output=True, text=True, timeout=600,
                             env=_env(HOME=str(home), JUPYTER_CONFIG_PATH=str(self.tmp / "etc"),
                                      JUPYTERHUB_USER=INSTRUCTOR))
        if check and out.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out


class Browser:
    """One user's browser: logs in through the hub's form, then talks to their own server with its cookies."""

    def __init__(self, hub: Hub, user: str):
        import requests
        self.hub, self.user = hub, user
        self.s = requests.Session()
        self.base = f"{hub.url}/user/{user}"

    def login(self):
        s = self.s
        s.get(f"{self.hub.url}/hub/login", timeout=60).raise_for_status()
        r = s.post(f"{self.hub.url}/hub/login", timeout=60,
                   data={"username": self.user, "password": PASSWORD, "_xsrf": s.cookies.get("_xsrf", path="/hub/")})
        r.raise_for_status()
        r = s.get(f"{self.base}/tree", timeout=60)       # the hub's OAuth hands the login on to the server
        r.raise_for_status()
        assert r.url.startswith(f"{self.base}/tree"), f"{self.user} landed on {r.url}"
        return self

    def _xsrf(self) -> dict:
        token = self.s.cookies.get("_xsrf", path=f"/user/{self.user}/")
        return {"X-XSRFToken": token} if token else {}

    def get(self, path: str, **kw):
        r = self.s.get(f"{self.base}{path}", timeout=120, **kw)
        r.raise_for_status()
        return r.json()

    def send(self, method: str, path: str, **kw):
        r = self.s.request(method, f"{self.base}{path}", headers=self._xsrf(), timeout=300, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    # nbgrader's Assignment List (what its JupyterLab panel calls)
    def assignments(self) -> list[dict]:
        out = self.get("/assignments", params={"course_id": COURSE_ID})
        assert out["success"], out
        return [a for a in out["value"] if a["assignment_id"] == ASSIGNMENT]

    def action(self, action: str) -> dict:
        out = self.send("POST", f"/assignments/{action}", data={"course_id": COURSE_ID, "assignment_id": ASSIGNMENT})
        assert out["success"], f"{self.user}: {action}: {out.get('value', out)}"
        return out


@pytest.fixture
def hub():
    _need_jupyterhub()
    # A folder of our own, not pytest's tmp_path: pytest sessions running at the same time on one machine prune
    # each other's numbered tmp folders, and the course under this one must live until the hub is down.
    tmp = Path(tempfile.mkdtemp(prefix="alignlab-hub-"))
    try:
        yield from _run_hub(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_hub(tmp: Path):
    _course_copy(tmp / "home" / INSTRUCTOR)
    ports = [free_port() for _ in range(3)]
    token = secrets.token_hex(32)
    hub_dir = _write_configs(tmp, *ports, token)
    log = hub_dir / "jupyterhub.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "jupyterhub"), "-f", str(hub_dir / "jupyterhub_config.py")], cwd=hub_dir,
                                env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports[0]}"
    h = Hub(url, token, tmp, proc, log)
    try:
        _wait("the hub to answer through its proxy", lambda: h.api("GET", "/")["version"], proc, log)
        yield h
    finally:
        _stop(proc)


def _answered(nb: dict, answers: dict[str, str]) -> dict:
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    return nb


def _score(html: str) -> tuple[float, float]:
    """The total nbgrader's feedback page shows: "Score: 7.0 / 10.0" (the first one is the assignment's)."""
    m = re.search(r"Score:\s*([\d.]+)\s*/\s*([\d.]+)", html)
    assert m, "the feedback shows no score"
    return float(m.group(1)), float(m.group(2))


def test_a_class_on_jupyterhub_releases_submits_grades_and_returns_feedback(hub):
    import nbformat
    from nbgrader.utils import parse_utc

    from alignlab.grading.hidden import hidden_lines, html_text, leaks
    from alignlab.grading.release import completed_student_notebook

    course = hub.home(INSTRUCTOR)
    hub.start_servers([INSTRUCTOR, *STUDENTS])

    # 1. release into the exchange
    hub.instructor("nbgrader", "release_assignment", ASSIGNMENT)
    assert (hub.tmp / "exchange" / COURSE_ID / "outbound" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").exists()

    # 2. students: log in, fetch, answer, submit
    solution = completed_student_notebook(ASSIGNMENT, root=course)
    answers = {c["metadata"]["nbgrader"]["grade_id"]: c["source"] for c in solution["cells"]
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    browsers = {user: Browser(hub, user).login() for user in STUDENTS}
    stamps = {}
    path = f"/api/contents/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    for user, b in browsers.items():
        listed = b.assignments()
        assert [a["status"] for a in listed] == ["released"], listed
        b.action("fetch")
        assert "fetched" in [a["status"] for a in b.assignments()]
        assert (hub.home(user) / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").exists(), "the fetch wrote nothing"
        nb = b.get(path)["content"]
        if user == FINISHED:
            nb = _answered(nb, answers)
        b.send("PUT", path, json={"type": "notebook", "format": "json", "content": nb})
        b.action("submit")
        submitted = [a for a in b.assignments() if a["status"] == "submitted"]
        assert submitted and submitted[0]["student_id"] == user, submitted
        stamps[user] = parse_utc(submitted[0]["submissions"][0]["timestamp"])

    # 3. instructor: collect, grade, release the feedback
    # (every hub user is one Unix user here, so nbgrader's check that the submitter owns the files would warn)
    hub.instructor("nbgrader", "collect", ASSIGNMENT, "--ExchangeCollect.check_owner=False")
    submitted = course / "autograder" / "runtime" / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == sorted(STUDENTS)
    for user in STUDENTS:
        assert (submitted / user / ASSIGNMENT / "timestamp.txt").exists()
    graded = hub.instructor(sys.executable, "-m", "alignlab.grading", "grade", "-a", ASSIGNMENT, "--no-progress")
    lines = {line.split()[0]: line for line in graded.stdout.splitlines() if ASSIGNMENT in line.split()[1:2]}
    assert set(lines) == set(STUDENTS), graded.stdout
    assert f"under {course / 'autograder' / 'runtime' / 'feedback'}" in graded.stdout, "graded another course"
    hub.instructor("nbgrader", "release_feedback", ASSIGNMENT)

    # 4. students fetch their feedback
    src = nbformat.read(course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    secret = hidden_lines(src)
    assert secret, "the source notebook has no hidden tests to look for"
    scores = {}
    for user, b in browsers.items():
        b.action("fetch_feedback")
        pages = sorted((hub.home(user) / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
        assert len(pages) == 1, f"{user}: feedback not fetched: {pages}"
        page = pages[0].read_text(encoding="utf-8")
        ours = course / "autograder" / "runtime" / "feedback" / user / ASSIGNMENT / f"{ASSIGNMENT}.html"
        assert page == ours.read_text(encoding="utf-8"), "the exchange returned another file than our feedback"
        text = html_text(page)
        assert not leaks(text, secret) and "HIDDEN TESTS" not in text, f"{user}'s feedback shows hidden tests"
        scores[user] = _score(page)
        listed = [s for a in b.assignments() if a["status"] == "submitted" for s in a["submissions"]]
        assert any(s["has_local_feedback"] for s in listed), listed
    top = scores[FINISHED][1]
    assert top > 0 and scores[FINISHED][0] == top, scores
    assert scores[UNTOUCHED] == (0.0, top), scores

    # 5. the instructor's formgrader, on their hub server, reads the same gradebook
    listed = {x["student"]: x for x in Browser(hub, INSTRUCTOR).login().get(f"/formgrader/api/submissions/{ASSIGNMENT}")}
    assert set(listed) == set(STUDENTS), listed
    assert {u: (x["score"], x["max_score"]) for u, x in listed.items()} == scores, listed
    assert {u: parse_utc(x["timestamp"]) for u, x in listed.items()} == stamps, "the gradebook lost the submit time"
