"""Isolation of a submission while it is graded, in one place: prepare (grade process), enter (worker, kernel), reap.

(Phase 1: the kernel's side. The workspace, uid and reaping still live in batch.py and worker.py.)

- :func:`enter_kernel` runs in the grading kernel before any student code (``GradingExecute``'s exec_lines): a
  seccomp filter on every thread of the kernel refuses ``fork``, ``vfork``, ``execve``, ``execveat`` and any
  ``clone`` that does not make a thread, so a submission can start no process (the reference cannot be run in a
  subprocess, out of the profiler's sight, and nothing outlives the kernel); threads stay allowed, and threads
  started with ``_thread`` run under the check's profiler like ``threading.Thread``'s.
"""
from __future__ import annotations

import ctypes
import platform
import struct

from ..checks._core import profile_raw_threads

# machine: (AUDIT_ARCH, seccomp syscall, clone, clone3, syscalls refused outright)
_SYSCALLS = {
    "x86_64": (0xC000003E, 317, 56, 435, (57, 58, 59, 322)),      # fork, vfork, execve, execveat
    "aarch64": (0xC00000B7, 277, 220, 435, (221, 281)),           # execve, execveat (no fork/vfork there)
}
_STATUS: list[str] = []

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
    if _STATUS:
        return _STATUS[0]
    profile_raw_threads()
    try:
        forbid_processes()
        _STATUS.append("processes forbidden")
    except Exception as exc:
        _STATUS.append(f"processes NOT forbidden: {exc}")
        print(f"grading sandbox: {_STATUS[0]}")
    return _STATUS[0]
