"""Playground page (fast, no model): who it serves, and model answers shown literally.

The inference server here is a loopback stand-in for vLLM's OpenAI-compatible API that
lists one base model and streams a scripted answer; the real local server's page test is
tests/inference/test_playground_page.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

BASE = "fake-base"
KEY = "fake-inference-key"
HOSTILE = (
    'Sure! <script>alert("x")</script> see [link](http://x) and ![img](http://x)\n**bold** `code`'
)


class FakeOpenAI(BaseHTTPRequestHandler):
    """GET /v1/models and a streamed POST /v1/chat/completions answering `server.answer`."""

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        base: str = self.server.base  # type: ignore[attr-defined]
        models = [{"id": base, "object": "model", "created": 0, "owned_by": "test"}]
        models += [
            {"id": a, "object": "model", "created": 0, "owned_by": "test", "parent": base}
            for a in self.server.adapters  # type: ignore[attr-defined]
        ]
        self._json({"object": "list", "data": models})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(request)  # type: ignore[attr-defined]
        if request["model"] in self.server.missing:  # type: ignore[attr-defined]
            body = {"object": "error", "message": "no such model", "type": "NotFoundError"}
            data = json.dumps({**body, "code": 404}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        answer: str = self.server.answer  # type: ignore[attr-defined]
        together = self.server.together  # type: ignore[attr-defined]
        if together is not None:  # answer only once every model has asked (or say ALONE)
            try:
                together.wait()
                answer = f"{request['model']}: {answer}"
            except threading.BrokenBarrierError:
                answer = "ALONE"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = [answer[i : i + 7] for i in range(0, len(answer), 7)]
        chunks = [
            {"delta": {"role": "assistant", "content": p}, "finish_reason": None} for p in pieces
        ]
        chunks.append({"delta": {}, "finish_reason": "stop"})
        for c in chunks:
            body = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": request["model"],
                "choices": [{"index": 0, **c}],
            }
            self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
        usage = {
            "prompt_tokens": 3,
            "completion_tokens": len(pieces),
            "total_tokens": 3 + len(pieces),
        }
        last = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": request["model"],
            "choices": [],
            "usage": usage,
        }
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def inference(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    server.answer = HOSTILE  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    server.base = BASE  # type: ignore[attr-defined]
    server.adapters = []  # type: ignore[attr-defined]
    server.together = None  # type: ignore[attr-defined]
    server.missing = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("INFERENCE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.setenv("INFERENCE_API_KEY", KEY)
    yield server
    server.shutdown()
    server.server_close()


def assistant_bubbles(at: AppTest) -> list[tuple[list[str], list[str]]]:
    """Per assistant bubble: (plain-text elements, markdown elements other than captions)."""
    return [
        ([t.value for t in m.text], [md.value for md in m.markdown])
        for m in at.chat_message
        if m.name == "assistant"
    ]


def test_signed_out_playground_asks_to_sign_in(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run alone, as Streamlit may run a page script without app.py: the page takes the user
    from the one session source, which finds nobody signed in."""
    from components import session as ui_session

    ui_session._per_session.clear()  # every AppTest shares one session id
    monkeypatch.setenv("AUTH", "supabase")
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SUPABASE_ANON_KEY", "fake-anon-key")
    at = AppTest.from_file(str(ROOT / "app_pages" / "playground.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == ["Sign in to see your datasets, jobs and adapters."]
    assert not at.chat_input and not at.multiselect
    ui_session._per_session.clear()


def test_an_answer_with_html_links_and_images_is_shown_literally(
    inference: ThreadingHTTPServer,
) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/playground.py").run()
    assert at.multiselect(key="playground.models").value == [f"{BASE} (base)"]
    prompt = "Summarise [this](http://y) *please*"
    at.chat_input(key="playground.prompt").set_value(prompt).run()
    assert not at.exception, at.exception
    assert len(inference.requests) == 1 and inference.requests[0]["stream"] is True
    user = [[t.value for t in m.text] for m in at.chat_message if m.name == "user"]
    assert user == [[prompt]]
    # While streaming: one plain-text element holding the whole answer, nothing as markdown.
    assert assistant_bubbles(at) == [([HOSTILE], [])]
    at.run()  # the kept conversation, drawn again on the next rerun
    assert assistant_bubbles(at) == [([HOSTILE], [])]
    assert not at.get("image")


def test_a_tool_call_written_as_text_points_to_the_tools_tab(
    inference: ThreadingHTTPServer,
) -> None:
    """The Chat tab sends no tools: a tool-trained adapter writes its call as text. It is
    shown literally, with a line saying where calls are shown as calls."""
    from components.chat import TOOL_CALL_HINT

    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    inference.answer = call  # type: ignore[attr-defined]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/playground.py").run()
    at.chat_input(key="playground.prompt").set_value("Weather in Oslo?").run()
    assert not at.exception, at.exception
    assert assistant_bubbles(at) == [([call], [])]
    assert TOOL_CALL_HINT in [c.value for c in at.caption]
    at.run()  # the kept turn says it again
    assert TOOL_CALL_HINT in [c.value for c in at.caption]
    inference.answer = "It is sunny."  # type: ignore[attr-defined]
    at.chat_input(key="playground.prompt").set_value("And now?").run()
    assert [c.value for c in at.caption].count(TOOL_CALL_HINT) == 1  # only under the call


def test_the_chosen_models_answer_at_the_same_time(inference: ThreadingHTTPServer) -> None:
    """Each model's request is answered only once the other model's request has arrived
    too: asked one after the other, the first would wait in vain and answer ALONE."""
    inference.adapters = ["fake-adapter"]  # type: ignore[attr-defined]
    inference.answer = "hello"  # type: ignore[attr-defined]
    inference.together = threading.Barrier(2, timeout=10)  # type: ignore[attr-defined]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/playground.py").run()
    models = at.multiselect(key="playground.models")
    assert models.value == [f"{BASE} (base)", "fake-adapter"]
    at.chat_input(key="playground.prompt").set_value("Hi").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    # Each answer in its own column, in the order the models were chosen.
    assert assistant_bubbles(at) == [([f"{BASE}: hello"], []), (["fake-adapter: hello"], [])]
    at.run()  # the kept turn
    assert assistant_bubbles(at) == [([f"{BASE}: hello"], []), (["fake-adapter: hello"], [])]


def test_one_model_failing_does_not_stop_the_other(inference: ThreadingHTTPServer) -> None:
    inference.adapters = ["fake-adapter"]  # type: ignore[attr-defined]
    inference.answer = "hello"  # type: ignore[attr-defined]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/playground.py").run()
    inference.missing = {"fake-adapter"}  # type: ignore[attr-defined]
    at.chat_input(key="playground.prompt").set_value("Hi").run()
    assert not at.exception, at.exception
    bubbles = assistant_bubbles(at)
    assert bubbles[0] == (["hello"], [])
    assert len(at.error) == 1  # under the adapter's column, in plain words


def test_the_demo_model_is_said_to_have_random_weights(
    inference: ThreadingHTTPServer, data_dir: Path
) -> None:
    from components.chat import DEMO_MODEL_NOTICE

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/playground.py").run()
    assert DEMO_MODEL_NOTICE not in [i.value for i in at.info]  # a real base: no notice
    inference.base = str(data_dir / "models" / "tiny-chat")  # type: ignore[attr-defined]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/playground.py").run()
    assert not at.exception, at.exception
    assert [i.value for i in at.info] == [DEMO_MODEL_NOTICE]
    assert "random weights" in DEMO_MODEL_NOTICE and "gibberish" in DEMO_MODEL_NOTICE
