"""Graders in OpenAI's JSON: each type scores what it says, templates fill from the row and
the sample, a broken grader is refused naming its field, a failing one scores 0 with its
reason, and a grader failing on most samples stops the job."""

from __future__ import annotations

import pytest

from trainer.shared import graders as G

ITEM = {"answer": "42", "meta": {"unit": "km"}, "tags": ["a", "b"]}


def _score(obj: dict, text: str, item: dict = ITEM, runners: G.Runners | None = None) -> G.Score:
    return G.grade(G.parse(obj), G.make_sample(text), item, runners or G.Runners())


def _check(op: str, ref: str = "{{item.answer}}") -> dict:
    return {
        "type": "string_check",
        "name": "exact",
        "input": "{{sample.output_text}}",
        "reference": ref,
        "operation": op,
    }


@pytest.mark.parametrize(
    ("op", "text", "want"),
    [
        ("eq", "42", 1.0),
        ("eq", "42 ", 0.0),
        ("ne", "41", 1.0),
        ("ne", "42", 0.0),
        ("like", "it is 42.", 1.0),
        ("like", "it is 4 2", 0.0),
        ("ilike", "THE ANSWER", 1.0),
    ],
)
def test_string_check_operations(op: str, text: str, want: float) -> None:
    item = {"answer": "42"} if op != "ilike" else {"answer": "the answer"}
    assert _score(_check(op), text, item) == G.Score(want)


def test_templates_reach_nested_fields_and_the_sample_json() -> None:
    sample = G.make_sample('{"distance": 42, "unit": "km"}')
    text, missing = G.render(
        "{{item.meta.unit}} {{item.tags.1}} {{sample.output_json.distance}} {{ item.answer }}",
        sample,
        ITEM,
    )
    assert (text, missing) == ("km b 42 42", [])
    grader = _check("eq", "{{item.meta.unit}}") | {"input": "{{sample.output_json.unit}}"}
    assert _score(grader, '{"unit": "km"}') == G.Score(1.0)
    failed = _score(_check("eq", "{{item.nothing}}"), "42")
    assert failed.value == 0.0 and "item.nothing" in (failed.error or "")


@pytest.mark.parametrize("metric", G.METRICS)
def test_text_similarity_is_1_for_the_same_text_and_lower_for_another(metric: str) -> None:
    grader = {
        "type": "text_similarity",
        "name": "sim",
        "input": "{{sample.output_text}}",
        "reference": "{{item.ref}}",
        "evaluation_metric": metric,
    }
    item = {"ref": "the quick brown fox jumps over the lazy dog today"}
    same = _score(grader, item["ref"], item)
    near = _score(grader, "the quick brown fox jumps over a lazy cat today", item)
    far = _score(grader, "completely unrelated words here", item)
    assert same.value == pytest.approx(1.0) and not same.error
    assert 0.0 <= far.value < near.value < 1.0


def test_multi_combines_named_graders_by_its_formula() -> None:
    grader = {
        "type": "multi",
        "name": "both",
        "graders": {
            "exact": _check("eq"),
            "has": _check("like"),
        },
        "calculate_output": "0.75 * exact + 0.25 * has - min(exact, 0)",
    }
    assert _score(grader, "42") == G.Score(1.0)
    assert _score(grader, "it is 42") == G.Score(0.25)


def test_score_model_takes_the_last_number_clamped_to_its_range() -> None:
    seen = []

    def model(g, messages):
        seen.append(messages)
        return "Reasoning... 7 out of 10, so: 0.7" if "42" in messages[0]["content"] else "none"

    grader = {
        "type": "score_model",
        "name": "judge",
        "model": "judge-model",
        "input": [{"role": "user", "content": "Score {{sample.output_text}} vs {{item.answer}}"}],
        "range": [0, 1],
    }
    runners = G.Runners(model=model)
    assert _score(grader, "42", runners=runners) == G.Score(0.7)
    assert seen[0] == [{"role": "user", "content": "Score 42 vs 42"}]
    assert "no number" in (_score(grader, "x", {"answer": "x"}, runners).error or "")
    assert "no model endpoint" in (_score(grader, "42").error or "")


def test_a_python_grader_outside_the_worker_is_not_run() -> None:
    grader = {"type": "python", "name": "py", "source": "def grade(sample, item):\n    return 1"}
    score = _score(grader, "42")
    assert score.value == 0.0 and "only in the worker" in (score.error or "")


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        ("{not json", "not valid JSON"),
        ({"type": "regex"}, "type 'regex'"),
        ({"type": "string_check", "input": "x", "reference": "y", "operation": "gt"}, "operation"),
        ({"type": "text_similarity", "input": "x", "reference": "y"}, "evaluation_metric"),
        ({"type": "python", "source": "def nope(:"}, "does not parse"),
        ({"type": "python", "source": "def score(s, i): return 1"}, "no grade(sample, item)"),
        ({"type": "score_model", "model": "m", "input": "text"}, "'input'"),
        (
            {"type": "multi", "graders": {"a": _check("eq")}, "calculate_output": "a + b"},
            "names 'b'",
        ),
        (
            {
                "type": "multi",
                "graders": {"a": _check("eq")},
                "calculate_output": "__import__('os').system('x')",
            },
            "calculate_output",
        ),
        ({"type": "multi", "graders": {"a": {"type": "nope"}}, "calculate_output": "a"}, "'a'"),
    ],
)
def test_a_broken_grader_is_refused_naming_what_is_wrong(obj, says: str) -> None:
    with pytest.raises(G.BadGrader, match=says.replace("(", r"\(").replace(")", r"\)")):
        G.parse(obj)


def test_a_grader_failing_on_most_samples_stops_the_job() -> None:
    health = G.Health(min_samples=4)
    for _ in range(3):
        health.record("py", G.Score(0.0, "TypeError: boom"))
    health.check()  # too few samples to judge
    health.record("py", G.Score(1.0))
    health.record("ok", G.Score(1.0))
    with pytest.raises(G.GraderFailing, match="'py' failed on 3 of 4 samples: TypeError: boom"):
        health.check()
    assert health.report()["ok"] == {"scored": 1, "failed": 0, "reasons": []}


def test_the_worker_asks_its_grader_endpoint_for_score_model_graders() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from trainer.env import WorkerEnv
    from trainer.grpo import score_model_client

    seen: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.headers["Authorization"], body))
            answer = {"choices": [{"message": {"role": "assistant", "content": "score: 0.8"}}]}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        env = WorkerEnv.from_environ({"GRADER_BASE_URL": url, "GRADER_API_KEY": "sekrit"})
        assert "sekrit" not in repr(env) and "sekrit" not in str(env.public_view())
        grader = {
            "type": "score_model",
            "name": "judge",
            "model": "judge-model",
            "input": [{"role": "user", "content": "Grade {{sample.output_text}}"}],
            "sampling_params": {"temperature": 0},
        }
        runners = G.Runners(model=score_model_client(env))
        assert _score(grader, "42", runners=runners) == G.Score(0.8)
        auth, body = seen[0]
        assert auth == "Bearer sekrit" and body["model"] == "judge-model"
        assert body["messages"] == [{"role": "user", "content": "Grade 42"}]
        assert body["temperature"] == 0
        assert score_model_client(WorkerEnv.from_environ({})) is None
    finally:
        server.shutdown()
