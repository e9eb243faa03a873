"""Python graders, run apart: `run_python(source, sample, item, limits) -> Score`.

Each call starts a fresh `python -I -S` process (isolated: no site packages' hooks, no
PYTHON* variables, no current folder on the path) with an empty environment (no secrets,
no proxies), in a new session, in an empty temporary folder, under resource limits set
before it runs anything: CPU seconds, address space, file size, open files, and no new
processes (RLIMIT_NPROC 0). Before the grader's source is compiled the child installs an
audit hook that refuses sockets, subprocesses, fork and exec, `os.system`, signals to other
processes, ctypes, and opening anything under /proc or /sys (another process's
environment), so a grader can neither reach the network nor start anything;
an audit hook cannot be removed. The grader's own printing goes nowhere; the child
answers on a pipe of its own, one JSON line, and at most `MAX_ANSWER` bytes of it are read.

A grader that runs past `wall_s`, crashes, is killed by a limit, tries what is refused, or
returns anything but a finite number scores 0, and the `Score` says why (`error`). Never
raises on what the grader does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from trainer.shared.graders import Score

MAX_ANSWER = 64 * 1024


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0
    cpu_s: int = 5
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20


_CHILD = r"""
import json, math, os, sys
answer = os.fdopen(int(sys.argv[1]), "w")
payload = json.loads(sys.stdin.read())
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)
os.dup2(devnull, 2)
REFUSED = ("socket.", "subprocess.", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn",
           "os.spawn", "os.system", "os.kill", "os.putenv", "os.unsetenv", "ctypes.",
           "_posixsubprocess.", "pty.")
def guard(event, args):
    if event.startswith(REFUSED):
        raise PermissionError(f"{event} is not allowed in a grader")
    if event == "open" and str(args[0]).startswith(("/proc", "/dev/mem", "/sys")):
        raise PermissionError(f"opening {args[0]} is not allowed in a grader")
os.environ.clear()
sys.addaudithook(guard)
def reply(obj):
    answer.write(json.dumps(obj))
    answer.flush()
try:
    scope = {"__name__": "grader"}
    exec(compile(payload["source"], "<grader>", "exec"), scope)
    value = scope["grade"](payload["sample"], payload["item"])
except BaseException as e:
    reply({"error": f"{type(e).__name__}: {e}"[:500]})
else:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and math.isfinite(value):
        reply({"score": float(value)})
    else:
        reply({"error": f"grade() returned {type(value).__name__}, not a finite number"})
"""


def _limit(limits: Limits) -> None:
    """In the child, before it runs: its resource limits."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(source: str, sample: dict[str, Any], item: Any, limits: Limits = Limits()) -> Score:
    """The grader's score of one sample (see the module docstring)."""
    payload = json.dumps({"source": source, "sample": sample, "item": item}, default=str)
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryDirectory(prefix="grader-") as folder:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _CHILD, str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={},
                cwd=folder,
                pass_fds=(write_fd,),
                start_new_session=True,
                preexec_fn=lambda: _limit(limits),  # noqa: PLW1509 (no threads run user code here)
            )
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, "rb") as answers:
            try:
                proc.communicate(payload.encode(), timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return Score(0.0, f"the grader ran past {limits.wall_s:g} s and was stopped")
            finally:
                _kill(proc)
            raw = answers.read(MAX_ANSWER + 1)
    return _answer(raw, proc.returncode, limits)


def _kill(proc: subprocess.Popen) -> None:
    """The grader's whole session, killed (it may not start processes, but be sure)."""
    if proc.poll() is None:
        # it may exit between poll and kill: an already-gone session is what we wanted
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _answer(raw: bytes, returncode: int | None, limits: Limits) -> Score:
    if not raw and returncode == -signal.SIGXCPU:
        return Score(0.0, f"the grader used up its {limits.cpu_s} s of CPU and was stopped")
    if not raw:
        how = f"signal {-returncode}" if returncode and returncode < 0 else f"exit {returncode}"
        return Score(0.0, f"the grader died without answering ({how}; a limit, or a crash)")
    if len(raw) > MAX_ANSWER:
        return Score(0.0, "the grader's answer is too long")
    try:
        answer = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return Score(0.0, "the grader's answer is not readable")
    if "error" in answer:
        return Score(0.0, str(answer["error"]))
    value = answer.get("score")
    if not isinstance(value, float) or not math.isfinite(value):
        return Score(0.0, "the grader's answer is not a finite number")
    return Score(value)
