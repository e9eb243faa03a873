"""Every environment installs from a complete lock (tools/lock.py), and a lock that no longer
agrees with the requirements file it was made from fails here."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools import lock


def test_every_lock_agrees_with_its_requirements() -> None:
    assert lock.check() == []


def test_every_requirements_file_has_a_lock() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "*requirements*.txt"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert tracked, "git ls-files found no requirements files"
    assert sorted(tracked) == sorted(env.source for env in lock.ENVS)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The requirements files and locks, copied to be edited."""
    for env in lock.ENVS:
        for name in (env.source, env.lock):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, tmp_path / name)
    assert lock.check(tmp_path) == []
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_changed_pin_fails(copy: Path) -> None:
    _edit(copy / "requirements.txt", "pandas==3.1.1", "pandas==3.1.2")
    problems = lock.check(copy)
    assert any(
        "pandas==3.1.2" in p and "requirements.lock has pandas==3.1.1" in p for p in problems
    )
    # the dev environment includes requirements.txt, so its lock disagrees too
    assert any(p.startswith("requirements-dev.txt asks for pandas==3.1.2") for p in problems)


def test_an_added_requirement_fails(copy: Path) -> None:
    (copy / "requirements-vllm.txt").write_text(
        (copy / "requirements-vllm.txt").read_text() + "plotly==7.1.0\n"
    )
    problems = lock.check(copy)
    assert problems == [
        "requirements-vllm.txt asks for plotly==7.1.0, which requirements-vllm.lock lacks: "
        "run `make lock`"
    ]


def test_a_removed_requirement_fails(copy: Path) -> None:
    _edit(copy / "trainer/requirements.txt", "psutil==7.2.2\n", "")
    problems = lock.check(copy)
    assert problems == [
        "trainer/requirements.lock pins psutil because trainer/requirements.txt asked for it, "
        "which no longer does: run `make lock`"
    ]


def test_an_entry_without_hashes_or_a_left_out_package_fails(copy: Path) -> None:
    text = (copy / "requirements.lock").read_text()
    text = re.sub(r"(rich==15\.0\.0) \\\n(\s+--hash=\S+ \\\n)*\s+--hash=\S+\n", r"\1\n", text)
    (copy / "requirements.lock").write_text(text)
    (copy / "trainer/requirements.lock").write_text(
        (copy / "trainer/requirements.lock").read_text()
        + "torch==2.13.0 \\\n    --hash=sha256:"
        + "0" * 64
        + "\n    # via -r trainer/requirements.txt\n"
    )
    problems = lock.check(copy)
    assert "requirements.lock: rich==15.0.0 has no hashes" in problems
    assert "trainer/requirements.lock: torch is to be left out of this lock" in problems


def test_locks_resolved_under_the_runtime_lock_share_its_versions(copy: Path) -> None:
    _edit(copy / "trainer/requirements.lock", "idna==3.21", "idna==3.20")
    assert lock.check(copy) == [
        "trainer/requirements.lock has idna==3.20, requirements.lock has 3.21: run `make lock`"
    ]


def test_make_and_the_image_install_from_the_locks_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [ln.strip() for ln in makefile.splitlines() if "pip install" in ln]
    assert installs
    for line in installs:
        from_lock = "$(LOCKED) requirements" in line or "$(BUILT) requirements" in line
        assert from_lock or line.endswith("--no-build-isolation -e ."), line
    assert "LOCKED := --require-hashes --no-deps -r" in makefile
    assert re.search(r"^lock:", makefile, re.M)
    # The build tools first, then what is built on them without fetching its own.
    assert installs[0] == "$(BIN)/pip install -q $(LOCKED) requirements-build.lock"
    assert "BUILT := --no-build-isolation $(LOCKED)" in makefile
    venv = [ln for ln in installs[1:] if ln.startswith("$(BIN)/pip")]
    assert venv and all("$(BUILT)" in ln or "--no-build-isolation" in ln for ln in venv), venv
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    docker_installs = [" ".join(i.split()) for i in re.findall(r"pip install[^\n&]*", dockerfile)]
    assert docker_installs[:2] == [
        "pip install --require-hashes --no-deps -r /app/trainer/requirements-build.lock",
        "pip install --no-build-isolation --require-hashes --no-deps "
        "-r /app/trainer/requirements.lock",
    ]


def test_this_environment_is_exactly_the_dev_lock() -> None:
    """What the tests run on is what the lock says (a package installed by hand shows here)."""
    wrong = []
    for name, entry in lock.read_lock(ROOT / "requirements-dev.lock").items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name}=={entry.version} is not installed")
            continue
        if installed != entry.version:
            wrong.append(f"{name}: locked {entry.version}, installed {installed}")
    assert not wrong, "\n".join(wrong)


def test_the_vllm_environment_is_exactly_its_lock() -> None:
    """.venv-vllm holds its lock's versions and none of the packages the lock leaves out."""
    import json

    python = ROOT / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        pytest.skip(".venv-vllm is not installed (`make vllm`); the inference tests say so too")
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {lock.canonicalize_name(p["name"]): p["version"] for p in json.loads(listed)}
    env = next(e for e in lock.ENVS if e.lock == "requirements-vllm.lock")
    wrong = [
        f"{name}: locked {entry.version}, installed {installed.get(name, 'nothing')}"
        for name, entry in lock.read_lock(ROOT / env.lock).items()
        if installed.get(name) != entry.version
    ]
    wrong += [
        f"{name} is installed, the lock leaves it out" for name in env.left_out if name in installed
    ]
    assert not wrong, "\n".join(wrong)
