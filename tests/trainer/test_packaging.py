"""The trainer image's dependencies agree with the dashboard's, and the handler imports
with the CPU torch of this machine without the RunPod runtime."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)")


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-r")):
            continue
        m = PIN.match(line)
        assert m, f"{path.name}: {line!r} is not an exact pin"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_trainer_pins_match_the_dashboard_for_shared_packages() -> None:
    trainer = _pins(ROOT / "trainer" / "requirements.txt")
    main = _pins(ROOT / "requirements.txt")
    shared = set(trainer) & set(main)
    assert {"torch", "transformers", "peft", "bitsandbytes", "accelerate"} <= shared
    assert {k: trainer[k] for k in shared} == {k: main[k] for k in shared}
    assert "runpod" in trainer
    assert not {"streamlit", "plotly", "sqlalchemy", "supabase", "trl"} & set(trainer)


def test_dockerfile_runs_the_handler_and_carries_no_secrets() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-u", "-m", "trainer.handler"]' in text
    assert "trainer/requirements.lock" in text and "HF_HOME=/runpod-volume" in text
    assert not re.search(r"(HF_TOKEN|API_KEY|SUPABASE_KEY)\s*=", text)


def test_handler_imports_with_cpu_torch_and_without_runpod() -> None:
    code = (
        "import sys, trainer.handler, torch; "
        "print(torch.version.cuda is None, 'runpod' in sys.modules, 'core' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "False", "False"]


def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` out of the build context: its .dockerignore rules (Go
    globs, `**` for any number of folders, `!` to re-include), the last matching rule
    winning, a rule that matches a parent folder matching the files inside it."""

    def regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    parts = path.split("/")
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        rx = regex(raw.removeprefix("!").strip("/"))
        if any(rx.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def test_the_build_context_is_the_trainer_only() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    left_out = [
        ".env",
        "trainer/.env",
        ".venv/bin/python",
        "data/datasets/rows.jsonl",
        "core/settings.py",
        "trainer/__pycache__/handler.cpython-311.pyc",
        ".git/config",
    ]
    for path in left_out:
        assert _dockerignore_excludes(patterns, path), f"{path} would reach the build context"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    sent = [p for p in tracked.stdout.split() if not _dockerignore_excludes(patterns, p)]
    assert "trainer/requirements.lock" in sent and "trainer/handler.py" in sent
    assert all(p.startswith("trainer/") for p in sent), [
        p for p in sent if not p.startswith("trainer/")
    ]


def test_dockerfile_installs_pins_first_and_refuses_a_second_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    # Dependencies are a layer of their own, before the code, installed from the lock alone.
    reqs = text.index("COPY trainer/requirements-build.lock trainer/requirements.lock")
    install = text.index("--require-hashes --no-deps -r /app/trainer/requirements.lock")
    code = text.index("COPY trainer /app/trainer")
    assert reqs < install < code < text.index("python -m compileall -q /app/trainer")
    # The torch check names the pinned version and the base image's CUDA.
    base = re.search(r"ARG BASE_IMAGE=pytorch/pytorch:([\d.]+)-cuda([\d.]+)-", text)
    assert base, "the base image is no longer a pytorch/pytorch CUDA tag: update this test"
    torch_version, cuda = base.groups()
    assert _pins(ROOT / "trainer" / "requirements.txt")["torch"] == torch_version
    assert f"torch.__version__.startswith('{torch_version}')" in text[install:code]
    assert f"torch.version.cuda == '{cuda}'" in text[install:code]
    # Fast hub downloads: hf-xet next to huggingface_hub, hf_transfer gone.
    pins = _pins(ROOT / "trainer" / "requirements.txt")
    assert "hf-xet" in pins and "huggingface-hub" in pins
    assert "HF_XET_HIGH_PERFORMANCE=1" in text
    assert "hf_transfer" not in text.lower() and "hf-transfer" not in pins


def test_trainer_requirements_resolve_together() -> None:
    """Every pinned package's own requirements (its installed metadata) are met by the
    other pins: the image's pin set is one consistent resolution, checked offline."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {
        canonicalize_name(k): v for k, v in _pins(ROOT / "trainer" / "requirements.txt").items()
    }
    conflicts = []
    for name, version in pins.items():
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            conflicts.append(f"{name}=={version} is not installed here to read its requirements")
            continue
        assert dist.version.split("+")[0] == version, (
            f"{name}: pinned {version}, installed {dist.version}"
        )
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue  # an optional extra or another platform
            dep = canonicalize_name(req.name)
            if dep in pins and not req.specifier.contains(pins[dep], prereleases=True):
                conflicts.append(f"{name}=={version} needs {req}, pinned {dep}=={pins[dep]}")
    assert not conflicts, "\n".join(conflicts)
