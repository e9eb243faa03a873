"""Python graders run apart (`trainer.sandbox`): a hostile grader scores 0 with its reason
and harms nothing, an honest one scores what it returns."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from trainer.sandbox import Limits, run_python

SAMPLE = {"output_text": "42", "output_json": 42}
ITEM = {"answer": "42"}
LIMITS = Limits(wall_s=1.5, cpu_s=1)


def _run(body: str, head: str = "") -> tuple[float, str]:
    source = f"{head}\ndef grade(sample, item):\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )
    score = run_python(source, SAMPLE, ITEM, LIMITS)
    return score.value, score.error or ""


def test_an_honest_grader_scores_what_it_returns() -> None:
    assert _run("return float(sample['output_text'] == item['answer'])") == (1.0, "")
    assert _run("return 0.25 + len(sample['output_json'].__class__.__name__)") == (3.25, "")


@pytest.mark.parametrize(
    ("body", "head", "says"),
    [
        ("while True: pass", "", "s of CPU and was stopped"),
        ("time.sleep(60)", "import time", "ran past"),
        ("os.fork()\nreturn 1.0", "import os", "os.fork is not allowed"),
        ("subprocess.run(['true'])\nreturn 1.0", "import subprocess", "not allowed"),
        ("os.system('true')\nreturn 1.0", "import os", "not allowed"),
        ("x = bytearray(8 << 30)\nreturn 1.0", "", "MemoryError"),
        ("return 'high'", "", "returned str"),
        ("return None", "", "returned NoneType"),
        ("return True", "", "returned bool"),
        ("return float('inf')", "", "not a finite number"),
        ("os._exit(3)", "import os", "died without answering (exit 3"),
        ("raise ValueError('no')", "", "ValueError: no"),
        ("open('f', 'wb').write(b'x' * (64 << 20))\nreturn 1.0", "", "File too large"),
        (
            "return float(len(open(f'/proc/{os.getppid()}/environ').read()))",
            "import os",
            "not allowed",
        ),
    ],
)
def test_a_hostile_grader_scores_0_with_its_reason(body: str, head: str, says: str) -> None:
    value, error = _run(body, head)
    assert value == 0.0 and says in error


def test_a_grader_reaches_no_network() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    got: list[object] = []
    threading.Thread(target=lambda: got.append(_accept(server)), daemon=True).start()
    value, error = _run(
        f"socket.create_connection(('127.0.0.1', {port}), timeout=1)\nreturn 1.0",
        "import socket",
    )
    assert value == 0.0 and "socket" in error and "not allowed" in error
    server.close()


def _accept(server: socket.socket) -> object:
    try:
        return server.accept()
    except OSError:
        return None


def test_a_grader_sees_no_environment_and_its_printing_goes_nowhere() -> None:
    os.environ["BRIGHTRUN_TEST_SECRET"] = "s3cret"
    try:
        assert _run("return float(len(os.environ))", "import os") == (0.0, "")
        assert _run("print('x' * 10_000_000)\nreturn 2.0") == (2.0, "")
    finally:
        del os.environ["BRIGHTRUN_TEST_SECRET"]
