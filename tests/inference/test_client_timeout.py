"""The real openai client, built with BrightRun's settings, takes BrightRun's timeout in the
form its own HTTP library accepts, and a server that never answers ends in a clear error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from core.clients.inference import InferenceClient, InferenceUnavailable
from core.settings import Settings


def test_the_client_is_built_with_the_timeout_of_its_settings(data_dir: Path) -> None:
    import openai

    with InferenceClient(Settings(), url="http://127.0.0.1:9/v1", timeout_s=42.0) as c:
        timeout = c._openai.timeout
        assert isinstance(timeout, openai.Timeout)
        assert (timeout.connect, timeout.read, timeout.write) == (5.0, 42.0, 42.0)
        assert c._openai.max_retries == 0


def test_a_server_that_never_answers_times_out_with_a_clear_error(data_dir: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        with InferenceClient(Settings(), url=url, timeout_s=0.5) as c:
            with pytest.raises(InferenceUnavailable, match="did not answer in time"):
                c.models()
