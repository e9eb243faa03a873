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
    assert "trainer/requirements.txt" in text and "HF_HOME=/runpod-volume" in text
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
