"""The dependency locks: every environment BrightRun installs comes from one of them.

A lock is a complete pip requirements file: every package, transitive ones included, at an
exact version with the sha256 of each of its files. `make run`, `make test`, `make vllm` and
the trainer image install only from locks (`pip install --require-hashes --no-deps -r LOCK`),
so a package published after the lock was written can never reach an install. The few
packages with no wheel for this platform are built from source on the build tools of
`requirements-build.lock`, installed first (`--no-build-isolation`), so a build fetches
nothing either.

| environment | what it pins (edit this) | lock (generated) |
|---|---|---|
| `.venv` for `make run` | `requirements.txt` | `requirements.lock` |
| the tools that build what has no wheel, installed first | `requirements-build.txt` | `requirements-build.lock` |
| `.venv` for `make test` | `requirements-dev.txt` | `requirements-dev.lock` |
| `.venv-vllm` | `requirements-vllm.txt` | `requirements-vllm.lock` |
| the trainer image | `trainer/requirements.txt` | `trainer/requirements.lock` |
| the image's build tools (the same list; its build context is `trainer/` alone) | `trainer/requirements-build.txt` | `trainer/requirements-build.lock` |

`python tools/lock.py` (`make lock`) brings every lock in line with its `.txt` with uv,
keeping the locked version of every package it can (like `pip-compile`); `--upgrade`
(`make lock-upgrade`) resolves everything to the newest versions the `.txt` files admit;
`--check` (and
`tests/test_locks.py`) compares each lock with what it was made from, offline:
- every requirement of the `.txt` is in the lock at a version its specifier admits;
- every package the lock says a `.txt` asked for is still asked for there;
- every entry has hashes, and no left-out package slipped in;
- the dev lock and the trainer lock use the runtime lock's version of every package they
  share (they are resolved under it as a constraint), so `make run`, `make test` and the
  image run the same code.

torch: the CPU build this machine's pip finds in its local wheel folder (`/opt/wheels`,
`PIP_FIND_LINKS`) is the one locked for the two virtual environments. The trainer image
keeps the CUDA torch of its base image, so its lock leaves torch out (and torch's CUDA
libraries with it); the Dockerfile checks that pip left that torch alone. vLLM's CPU build
pulls CUDA builds of torchvision, torchaudio and torchcodec that fail to import on a CPU
machine: its lock leaves them out, as text serving needs none of them.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
WHEELS = "/opt/wheels"  # this kind of machine's local wheels (torch's CPU build)
PLATFORM = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28")


@dataclass(frozen=True)
class Env:
    source: str  # the hand-edited requirements file, relative to the root
    lock: str  # the generated lock beside it
    left_out: tuple[str, ...] = ()  # packages never written to the lock
    under: str | None = None  # a lock whose versions this one must reuse (a constraint)


ENVS = (
    Env("requirements.txt", "requirements.lock"),
    Env("requirements-build.txt", "requirements-build.lock", under="requirements.lock"),
    Env("requirements-dev.txt", "requirements-dev.lock", under="requirements.lock"),
    Env(
        "requirements-vllm.txt",
        "requirements-vllm.lock",
        left_out=("torchvision", "torchaudio", "torchcodec"),
    ),
    Env(
        "trainer/requirements.txt",
        "trainer/requirements.lock",
        left_out=("torch",),
        under="requirements.lock",
    ),
    Env(
        "trainer/requirements-build.txt",
        "trainer/requirements-build.lock",
        under="requirements.lock",
    ),
)

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*(?:\[[^\]]*\])?)==(\S+)")


@dataclass
class Locked:
    version: str
    hashes: int
    via: set[str]  # what asked for it: package names, or "-r FILE" for a requirements file


def read_requirements(path: Path) -> dict[str, Requirement]:
    """The requirements of a pip requirements file and the files it includes with `-r`."""
    out: dict[str, Requirement] = {}
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            out.update(read_requirements(path.parent / line.split(None, 1)[1]))
            continue
        req = Requirement(line)
        out[canonicalize_name(req.name)] = req
    return out


def read_lock(path: Path) -> dict[str, Locked]:
    """A uv/pip-tools lock: `name==version \\` lines, `--hash=` lines and `# via` notes."""
    out: dict[str, Locked] = {}
    current: Locked | None = None
    in_via = False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        m = _ENTRY.match(raw)
        if m:
            name = canonicalize_name(m.group(1).split("[")[0])
            current = out[name] = Locked(m.group(2).rstrip("\\").strip(), 0, set())
            in_via = False
        elif current is None:
            continue
        elif line.startswith("--hash="):
            current.hashes += 1
        elif line.startswith("# via"):
            in_via = True
            rest = line.removeprefix("# via").strip()
            if rest:
                current.via.add(rest)
        elif in_via and line.startswith("#   "):
            current.via.add(line.removeprefix("#").strip())
        else:
            in_via = False
    return out


def check(root: Path = ROOT, envs: tuple[Env, ...] = ENVS) -> list[str]:
    """Every way a lock disagrees with what it was made from, as sentences (empty: agreed)."""
    problems: list[str] = []
    locks: dict[str, dict[str, Locked]] = {}
    for env in envs:
        if not (root / env.lock).is_file():
            problems.append(f"{env.lock} is missing: run `make lock`")
            continue
        locks[env.lock] = lock = read_lock(root / env.lock)
        wanted = read_requirements(root / env.source)
        left_out = {canonicalize_name(n) for n in env.left_out}
        for name, req in wanted.items():
            if name in left_out:
                continue
            if name not in lock:
                problems.append(
                    f"{env.source} asks for {req}, which {env.lock} lacks: run `make lock`"
                )
            elif not req.specifier.contains(Version(lock[name].version), prereleases=True):
                problems.append(
                    f"{env.source} asks for {req}, {env.lock} has {name}=={lock[name].version}: "
                    "run `make lock`"
                )
        sources = {f"-r {p}" for p in _included(root / env.source, root)}
        for name, entry in lock.items():
            if entry.hashes == 0:
                problems.append(f"{env.lock}: {name}=={entry.version} has no hashes")
            if name in left_out:
                problems.append(f"{env.lock}: {name} is to be left out of this lock")
            direct = entry.via & sources
            if direct and name not in wanted:
                problems.append(
                    f"{env.lock} pins {name} because {sorted(direct)[0][3:]} asked for it, "
                    "which no longer does: run `make lock`"
                )
    for env in envs:
        if env.under and env.lock in locks and env.under in locks:
            base, lock = locks[env.under], locks[env.lock]
            for name in sorted(set(base) & set(lock)):
                if base[name].version != lock[name].version:
                    problems.append(
                        f"{env.lock} has {name}=={lock[name].version}, {env.under} has "
                        f"{base[name].version}: run `make lock`"
                    )
    return problems


def _included(path: Path, root: Path) -> list[str]:
    """A requirements file and the files it includes, as the lock's `# via -r` names them."""
    names = [path.relative_to(root).as_posix()]
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith(("-r ", "--requirement ")):
            names += _included(path.parent / line.split(None, 1)[1], root)
    return names


def compile_all(root: Path = ROOT, *, upgrade: bool = False) -> None:
    """Resolve every lock (keeping locked versions unless `upgrade`), in table order so that
    a lock resolved under another reads that one's new versions."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is not installed: `make lock` installs it with the dev tools")
    for env in ENVS:
        cmd = [uv, "pip", "compile", env.source, "-o", env.lock, "--generate-hashes"]
        cmd += ["--quiet", "--custom-compile-command", "make lock", *PLATFORM]
        if upgrade:
            cmd.append("--upgrade")
        cmd += ["--find-links", WHEELS]
        for name in env.left_out:
            cmd += ["--no-emit-package", name]
        if env.under:
            cmd += ["--constraint", env.under]
        print("locking", env.source, "->", env.lock, flush=True)
        subprocess.run(cmd, cwd=root, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare, do not resolve")
    parser.add_argument("--upgrade", action="store_true", help="newest versions allowed")
    args = parser.parse_args(argv)
    if not args.check:
        compile_all(upgrade=args.upgrade)
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
