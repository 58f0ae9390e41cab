"""Isolation of a submission while it is graded, in one module: prepare (grade process), enter (worker, kernel), reap.

Who runs what. The ``grade`` process (``batch.py``) holds the gradebook and the judge (``judge.py``); for each
submission it starts a worker process (``worker.py``: nbgrader's autograde), which starts the kernel that runs the
student's notebook. When the grader is root, worker and kernel run as a uid of their own:

- :func:`prepare` (grade process, root): the submission's workspace ``work/<student>__<assignment>/`` (mode 0700,
  owned by a fresh unprivileged uid, 200000 and up, never reused in a batch) with private copies of the submission
  and the template gradebook and the worker's ``job.json``; the runtime's parents made traversable (``o+x``, never
  listable). :func:`lock_down` makes the rest of the runtime root's: gradebook, template, hidden seed, exports,
  submitted, autograded, the judge's records.
- :func:`enter` (worker, first thing): become that uid and gid, in a session of its own, no supplementary groups
  (and, if the interpreter lives under a folder others cannot enter, a private mount namespace that shows only it);
  home, caches and temporary files in the workspace; an environment stripped to :func:`kernel_environment` (no
  gradebook URL, no hidden seed), which the kernel inherits. Setting the uid also makes the worker non-dumpable,
  so the kernel (same uid) cannot read its memory.
- :func:`enter_kernel` (the kernel, before any student code: ``GradingExecute``'s exec_lines): a seccomp filter on every
  thread refuses ``fork``, ``vfork``, ``execve``, ``execveat`` and any ``clone`` that does not make a thread, so a
  submission starts no process (the reference cannot run in a subprocess, out of the profiler's sight, and nothing
  outlives the kernel); threads stay allowed, and those started with ``_thread`` run under the check's profiler
  like ``threading.Thread``'s. This part needs no root.
- :func:`reap` (grade process): kill every process of the submission's uid (or, without a uid, the worker's tree).

Without root (or with ``ALIGNLAB_NO_SANDBOX=1``) :func:`status` says why, ``grade`` warns, and only
:func:`enter_kernel` and the environment stripping apply.
"""
from __future__ import annotations

import ctypes
import itertools
import json
import os
import platform
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import psutil

from .. import paths

UID_BASE = 200_000               # far above any real account; one uid per submission, never reused in a batch
_UIDS = itertools.count()
_STATUS: list = []


# ------------------------------------------------------------------ prepare (the grade process)
def status() -> str | None:
    """None when submissions run as their own unprivileged uid here, else why they cannot (checked once)."""
    if not _STATUS:
        if os.environ.get("ALIGNLAB_NO_SANDBOX") == "1":
            _STATUS.append("ALIGNLAB_NO_SANDBOX=1 is set")
        elif not hasattr(os, "geteuid") or os.geteuid() != 0:
            _STATUS.append("the grader is not running as root, so it cannot switch each submission to a uid of its own")
        else:
            problem = probe()
            _STATUS.append(f"an unprivileged process cannot run this Python here ({problem})" if problem else None)
    return _STATUS[0]


def available() -> bool:
    """Whether submissions run as their own unprivileged uid (the grader must be root for that)."""
    return status() is None


def _next_uid() -> int:
    return UID_BASE + (os.getpid() % 2000) * 1000 + next(_UIDS) % 1000


def _chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, uid)
        for name in files:
            os.chown(os.path.join(root, name), uid, uid)


def prepare(folder: Path, submission: Path, template_db: Path, job: dict) -> int | None:
    """Make ``folder`` the submission's workspace: private copies of the submission and the template gradebook,
    and ``job.json`` (``job`` plus the paths and the uid). Returns the uid it will run as (None: not isolated)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    # private copies: the worker (an unprivileged uid when sandboxed) never reads submitted/ or work/template.db
    shutil.copytree(submission, folder / "submission", symlinks=False,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    shutil.copy(template_db, folder / "template.db")
    uid = _next_uid() if available() else None
    (folder / "job.json").write_text(json.dumps(
        {**job, "submission": str(folder / "submission"), "work_dir": str(folder),
         "template_db": str(folder / "template.db"), "uid": uid}))
    if uid is not None:
        _chown_tree(folder, uid)
        os.chmod(folder, 0o700)
        for parent in folder.parents:              # the uid must reach its workspace: traverse (o+x), never list
            mode = os.stat(parent).st_mode
            if not mode & 0o001:
                os.chmod(parent, (mode & 0o7777) | 0o001)
    return uid


def lock_down(runtime: Path, files: list[Path], folders: list[Path]) -> None:
    """Root-owned grading state that a submission's uid can neither write nor read (only traverse to its workspace)."""
    os.chmod(runtime, 0o711)
    for path in files:
        if path.exists():
            os.chmod(path, 0o600)
    for folder in folders:
        if folder.exists():
            os.chmod(folder, 0o700)


# ------------------------------------------------------------------ reap (the grade process)
def kill_tree(pid: int) -> None:
    """Kill a process and all its descendants."""
    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def kill_uid(uid: int) -> None:
    """Kill every process running as ``uid`` (the submission's kernel, its children and any daemon it left)."""
    for _ in range(3):
        procs = []
        for p in psutil.process_iter(["uids"]):
            try:
                if p.info["uids"] is not None and uid in (p.info["uids"].real, p.info["uids"].effective):
                    p.kill()
                    procs.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if not procs:
            return
        psutil.wait_procs(procs, timeout=5)


def reap(uid: int | None, pid: int | None) -> None:
    """After a submission: every process of its uid is killed; without a uid, the worker's process tree."""
    if uid is not None:
        kill_uid(uid)
    elif pid is not None:
        kill_tree(pid)


# ------------------------------------------------------------------ enter (the worker)
def _blocked(path: Path) -> tuple[Path, Path] | None:
    """(the first ancestor of ``path`` that others cannot traverse, its child on the way), or None."""
    path = Path(os.path.realpath(path))
    for parent in reversed(path.parents):
        child = path if parent == path.parent else path.parents[len(path.parents) - len(parent.parents) - 2]
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent, child
    return None


def needed_paths() -> list[Path]:
    """What a submission's kernel must read: the interpreter, its standard library and packages, the course."""
    return [Path(sys.executable), Path(sys.base_prefix), Path(sysconfig.get_paths()["purelib"]), paths.REPO_ROOT]


def become(uid: int, scratch: Path) -> None:
    """Become ``uid`` (and gid), in a session of our own, with no supplementary groups.

    If the interpreter lives under a folder others cannot traverse (e.g. Python under /root, mode 0700), a
    private mount namespace covers that folder with an empty tmpfs showing only the needed subfolder
    (so the rest of it stays hidden). Needs root; raises OSError if that is impossible here.
    """
    blocked = {b for b in map(_blocked, needed_paths()) if b}
    if blocked:
        libc = ctypes.CDLL(None, use_errno=True)

        def check(rc, what):
            if rc != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"{what}: {os.strerror(err)}")
        check(libc.unshare(0x00020000), "unshare(CLONE_NEWNS)")
        check(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "mount --make-rprivate /")  # MS_REC|MS_PRIVATE
        for parent in sorted({b[0] for b in blocked}):
            children = sorted({b[1] for b in blocked if b[0] == parent})
            stages = []
            for i, child in enumerate(children):
                stage = scratch / f".stage{i}"
                stage.mkdir(exist_ok=True)
                check(libc.mount(str(child).encode(), str(stage).encode(), None, 0x1000 | 0x4000, None),
                      f"bind {child}")                                        # MS_BIND|MS_REC
                stages.append(stage)
            check(libc.mount(b"tmpfs", str(parent).encode(), b"tmpfs", 0, b"mode=755"), f"tmpfs on {parent}")
            for child, stage in zip(children, stages):
                child.mkdir()
                check(libc.mount(str(stage).encode(), str(child).encode(), None, 0x1000 | 0x4000, None),
                      f"bind back {child}")
    os.setsid()
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def probe(uid: int = 199_999) -> str | None:
    """None if submissions can run sandboxed here, else why not (tried once in a throwaway process)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        code = ("import sys; from pathlib import Path; from alignlab.grading.sandbox import become; "
                f"become({uid}, Path({tmp!r})); import encodings.idna, torch, nbformat, alignlab.checks")
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                 cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["?"])[-1][:300]


# What a submission's kernel may inherit from the grader's environment: the interpreter's and the libraries'
# settings, never the grader's secrets (ALIGNLAB_DB_URL holds the gradebook's password; the hidden seed is the
# judge's alone).
KERNEL_ENV_PREFIXES = ("PATH", "LANG", "LC_", "TZ", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TMPDIR", "PYTHON",
                       "VIRTUAL_ENV", "CONDA_PREFIX", "OMP_", "MKL_", "OPENBLAS_", "HF_", "TRANSFORMERS_", "TOKENIZERS_",
                       "TORCH_", "CUDA_", "NVIDIA_", "XDG_", "JUPYTER", "IPYTHONDIR", "MPLCONFIGDIR", "NBGRADER_",
                       "ALIGNLAB_")
KERNEL_ENV_NEVER = ("ALIGNLAB_DB_URL", "ALIGNLAB_HIDDEN_SEED")


def kernel_environment(environ: dict[str, str]) -> dict[str, str]:
    """The part of ``environ`` a grading kernel gets (an allow-list of prefixes, minus the grader's secrets)."""
    return {k: v for k, v in environ.items() if k.startswith(KERNEL_ENV_PREFIXES) and k not in KERNEL_ENV_NEVER}


def enter(job: dict, extra_env: dict[str, str]) -> None:
    """The worker's first act: become the submission's uid (if it has one) with home, caches and temporary files in
    its workspace, and keep only :func:`kernel_environment` (plus ``extra_env``) for itself and the kernel."""
    if job.get("uid") is not None:
        home = Path(job["work_dir"])
        become(job["uid"], home)
        os.environ.update(HOME=str(home), USER="alignlab-grader", LOGNAME="alignlab-grader",
                          TMPDIR=str(home), XDG_CACHE_HOME=str(home / ".cache"), MPLCONFIGDIR=str(home / ".mpl"),
                          JUPYTER_RUNTIME_DIR=str(home / ".jupyter-runtime"), IPYTHONDIR=str(home / ".ipython"))
        os.chdir(home)
    kept = kernel_environment(dict(os.environ))
    os.environ.clear()
    os.environ.update(kept)
    os.environ.update(extra_env)


# ------------------------------------------------------------------ enter (the kernel)
# machine: (AUDIT_ARCH, seccomp syscall, clone, clone3, syscalls refused outright)
_SYSCALLS = {
    "x86_64": (0xC000003E, 317, 56, 435, (57, 58, 59, 322)),      # fork, vfork, execve, execveat
    "aarch64": (0xC00000B7, 277, 220, 435, (221, 281)),           # execve, execveat (no fork/vfork there)
}
_KERNEL: list[str] = []


def no_processes_filter(machine: str | None = None) -> bytes:
    """The classic-BPF seccomp program: EPERM for process creation and exec, ENOSYS for clone3 (glibc then falls back
    to clone, whose flags a filter can read), EPERM for any foreign or x32 ABI; everything else allowed."""
    machine = machine or platform.machine()
    arch, _, clone, clone3, refused = _SYSCALLS[machine]
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06           # BPF_LD|W|ABS, BPF_JMP|{JEQ,JGE,JSET}|K, BPF_RET
    ALLOW, ERRNO, EPERM, ENOSYS, CLONE_THREAD = 0x7FFF0000, 0x00050000, 1, 38, 0x00010000
    prog: list[list] = []

    def ins(code, k=0, jt=None, jf=None):
        prog.append([code, k, jt, jf])

    ins(LD, 4)                                             # seccomp_data.arch
    ins(JEQ, arch, None, "deny")
    ins(LD, 0)                                             # seccomp_data.nr
    if machine == "x86_64":
        ins(JGE, 0x40000000, "deny", None)                 # the x32 ABI
    ins(JEQ, clone3, "nosys", None)
    ins(JEQ, clone, "clone", None)
    for nr in refused:
        ins(JEQ, nr, "deny", None)
    ins(RET, ALLOW)
    labels = {"clone": len(prog)}
    ins(LD, 16)                                            # seccomp_data.args[0], low 32 bits: clone's flags
    ins(JSET, CLONE_THREAD, "allow", "deny")
    labels["allow"] = len(prog)
    ins(RET, ALLOW)
    labels["deny"] = len(prog)
    ins(RET, ERRNO | EPERM)
    labels["nosys"] = len(prog)
    ins(RET, ERRNO | ENOSYS)
    out = b""
    for i, (code, k, jt, jf) in enumerate(prog):
        def offset(label):
            return 0 if label is None else labels[label] - i - 1
        out += struct.pack("HBBI", code, offset(jt), offset(jf), k)
    return out


def forbid_processes() -> None:
    """Install the filter on every thread of this process (SECCOMP_FILTER_FLAG_TSYNC); irreversible. Raises OSError."""
    machine = platform.machine()
    if machine not in _SYSCALLS:
        raise OSError(f"no seccomp filter for {machine}")
    program = ctypes.create_string_buffer(no_processes_filter(machine))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program.raw) // 8, ctypes.addressof(program))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:                                     # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.syscall(_SYSCALLS[machine][1], 1, 1, ctypes.byref(fprog)) != 0:  # SECCOMP_SET_MODE_FILTER, TSYNC
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)")


def enter_kernel() -> str:
    """The grading kernel's isolation, before any student code: no process creation, raw threads profiled.
    Returns what was done (or why processes could not be forbidden); never raises."""
    if _KERNEL:
        return _KERNEL[0]
    from ..checks._core import profile_raw_threads     # (lazy: see probe(); the kernel imports the checks anyway)
    profile_raw_threads()
    try:
        forbid_processes()
        _KERNEL.append("processes forbidden")
    except Exception as exc:
        _KERNEL.append(f"processes NOT forbidden: {exc}")
        print(f"grading sandbox: {_KERNEL[0]}")
    return _KERNEL[0]
