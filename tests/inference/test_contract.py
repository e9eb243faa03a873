"""The inference contract: the vLLM API subset BrightRun relies on, over loopback HTTP, as a
user of the playground would notice it, and the wire format itself (status codes, error
bodies, load answers, /v1/models, SSE chunks). Every test that takes `server` runs twice:
against real vLLM's CPU build (`[vllm]`, the reference) and against BrightRun's local
server (`[local]`), which must answer the same. What differs on purpose is in
docs/inference.md."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from core.clients.inference import (
    AdapterBaseMismatch,
    AdapterLoadFailed,
    InferenceAuthError,
    InferenceClient,
    InferenceUnavailable,
    LoadMode,
    ModelNotServed,
    RequestRejected,
    RuntimeLoadingDisabled,
    Sampling,
    compare,
    compare_on_set,
    conversation_messages,
    export_conversation_jsonl,
    parse_prompt_set,
)
from core.errors import InvalidInput
from tests.inference.conftest import API_KEY, Server, free_port, settings_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(both_servers: Server) -> Server:
    return both_servers


HI = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = Sampling(temperature=0.0, max_tokens=12)


def test_models_lists_the_base_without_parent(client: InferenceClient, server: Server) -> None:
    models = client.models()
    assert models[0].id == server.base and models[0].parent is None
    assert client.base_model() == server.base


def test_non_streamed_chat_answers_and_counts_tokens(
    client: InferenceClient, server: Server
) -> None:
    r = client.chat(server.base, HI, GREEDY)
    assert r.text
    assert r.finish_reason in ("length", "stop")
    assert 0 < r.completion_tokens <= 12 and r.prompt_tokens > 5
    assert client.chat(server.base, HI, GREEDY).text == r.text  # greedy is deterministic


def test_streaming_yields_pieces_that_add_up_to_the_answer(
    client: InferenceClient, server: Server
) -> None:
    whole = client.chat(server.base, HI, GREEDY)
    stream = client.stream_chat(server.base, HI, GREEDY)
    pieces = list(stream)
    assert len(pieces) > 1, "tokens arrive one by one, not as one block"
    assert "".join(pieces) == stream.text == whole.text
    assert stream.finish_reason == whole.finish_reason
    assert stream.completion_tokens == whole.completion_tokens


def test_max_tokens_caps_the_answer(client: InferenceClient, server: Server) -> None:
    r = client.chat(server.base, HI, Sampling(temperature=0.0, max_tokens=3))
    assert r.completion_tokens == 3 and r.finish_reason == "length"


def test_seed_makes_sampling_repeatable(client: InferenceClient, server: Server) -> None:
    s1 = Sampling(temperature=1.0, top_p=1.0, max_tokens=16, seed=1234)
    a, b = client.chat(server.base, HI, s1).text, client.chat(server.base, HI, s1).text
    c = client.chat(
        server.base, HI, Sampling(temperature=1.0, top_p=1.0, max_tokens=16, seed=99)
    ).text
    assert a == b
    assert a != c


def test_stop_string_ends_the_answer_before_it(client: InferenceClient, server: Server) -> None:
    sampled = {"temperature": 1.0, "top_p": 1.0, "seed": 7, "max_tokens": 24}
    full = client.chat(server.base, HI, Sampling(**sampled)).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), f"need a visible stop string from {full!r}"
    cut = full.index(stop)
    for stream in (False, True):
        s = Sampling(**sampled, stop=(stop,))
        if stream:
            st = client.stream_chat(server.base, HI, s)
            text, finish = "".join(st), st.finish_reason
        else:
            r = client.chat(server.base, HI, s)
            text, finish = r.text, r.finish_reason
        assert text == full[:cut]
        assert finish == "stop"


def test_load_switch_and_unload_adapters(
    client: InferenceClient, server: Server, adapters: dict[str, Path], unique_name: str
) -> None:
    base_before = client.chat(server.base, HI, GREEDY).text
    a, b = f"{unique_name}-a", f"{unique_name}-b"
    got = client.load_adapter(a, str(adapters["a"]))
    assert got.mode is LoadMode.RUNTIME
    client.load_adapter(b, str(adapters["b"]))
    listed = {m.id: m for m in client.models()}
    assert listed[a].parent == server.base and listed[a].root == str(adapters["a"])
    assert listed[b].parent == server.base

    answers = compare(client, [server.base, a, b], HI, GREEDY)
    assert answers[server.base].text == base_before, "the base is untouched by loaded adapters"
    assert answers[a].text != base_before and answers[b].text != base_before
    assert answers[a].text != answers[b].text
    # switching back and forth per request gives the same answers again
    assert client.chat(a, HI, GREEDY).text == answers[a].text
    assert client.chat(server.base, HI, GREEDY).text == base_before

    client.unload_adapter(a)
    assert a not in {m.id for m in client.models()}
    with pytest.raises(ModelNotServed, match=a):
        client.chat(a, HI, GREEDY)
    with pytest.raises(ModelNotServed):
        client.unload_adapter(a)
    assert client.chat(b, HI, GREEDY).text == answers[b].text
    client.unload_adapter(b)
    assert client.chat(server.base, HI, GREEDY).text == base_before  # back to the plain base


def test_loading_a_name_twice_is_refused_unless_replacing(
    client: InferenceClient, adapters: dict[str, Path], unique_name: str
) -> None:
    client.load_adapter(unique_name, str(adapters["a"]))
    first = client.chat(unique_name, HI, GREEDY).text
    with pytest.raises(Exception) as info:
        client.load_adapter(unique_name, str(adapters["b"]))
    assert "already been loaded" in str(info.value)
    client.load_adapter(unique_name, str(adapters["b"]), replace=True)
    assert client.chat(unique_name, HI, GREEDY).text != first
    client.unload_adapter(unique_name)


def test_unknown_adapter_gives_a_clear_error(client: InferenceClient, server: Server) -> None:
    with pytest.raises(ModelNotServed) as info:
        client.chat("no-such-adapter", HI, GREEDY)
    msg = str(info.value)
    assert "no-such-adapter" in msg and "base_model_name_or_path" in msg
    with pytest.raises(ModelNotServed, match="nowhere"):
        client.load_adapter("ghost", str(server.work / "nowhere"))
    with pytest.raises(ModelNotServed):
        client.stream_chat("no-such-adapter", HI, GREEDY)


def test_adapter_for_another_base_is_refused_by_the_client_before_the_call(
    client: InferenceClient, adapters: dict[str, Path], unique_name: str
) -> None:
    """vLLM's runtime loading would take it (see test_runtime_loading_does_not_check_the_base):
    the client refuses it first."""
    with pytest.raises(AdapterBaseMismatch, match="Qwen/Qwen2.5-7B-Instruct"):
        client.ensure_adapter(unique_name, str(adapters["other-base"]))
    with pytest.raises(AdapterBaseMismatch, match="Qwen/Qwen2.5-7B-Instruct"):
        client.load_adapter(unique_name, str(adapters["other-base"]))
    assert unique_name not in {m.id for m in client.models()}


def test_resolver_loads_a_named_folder_on_first_use(
    server: Server, data_dir: Path, adapters: dict[str, Path], unique_name: str
) -> None:
    shutil.copytree(adapters["a"], server.adapters_dir / unique_name)
    with InferenceClient(settings_for(server, data_dir, inference_lora_loading="resolver")) as c:
        got = c.ensure_adapter(unique_name)
        assert got.mode is LoadMode.RESOLVER and "resolver" in got.detail
        assert unique_name not in {m.id for m in c.models()}
        answer = c.chat(unique_name, HI, GREEDY).text
        assert answer != c.chat(server.base, HI, GREEDY).text
        assert {m.id: m.parent for m in c.models()}[unique_name] == server.base
        assert c.ensure_adapter(unique_name).mode is LoadMode.SERVED
        c.unload_adapter(unique_name)


def test_a_checkpoint_is_chatted_with_through_the_resolver_under_its_served_name(
    server: Server, data_dir: Path, adapters: dict[str, Path], unique_name: str
) -> None:
    """A checkpoint's folder (here: outside the resolver folder, under another name) is
    served as `ckpt-<version id>`: in resolver mode the client copies it into the resolver
    folder under that name, and it answers as the same adapter loaded at run time."""
    served = f"ckpt-{unique_name}"
    with InferenceClient(settings_for(server, data_dir, inference_lora_loading="resolver")) as c:
        got = c.ensure_adapter(served, str(adapters["a"]))
        assert (
            got.mode is LoadMode.RESOLVER
            and (server.adapters_dir / served / "adapter_config.json").is_file()
        )
        answer = c.chat(served, HI, GREEDY).text
    with InferenceClient(settings_for(server, data_dir)) as c:
        c.load_adapter(f"{unique_name}-rt", str(adapters["a"]))
        assert (
            answer
            == c.chat(f"{unique_name}-rt", HI, GREEDY).text
            != c.chat(server.base, HI, GREEDY).text
        )
        c.unload_adapter(f"{unique_name}-rt")


def test_resolver_refuses_a_folder_trained_on_another_base(
    server: Server, data_dir: Path, adapters: dict[str, Path], unique_name: str
) -> None:
    """The resolver's rule (base_model_name_or_path must equal the served name): the server
    says only "not found"; the client, which can read the folder, says why first."""
    shutil.copytree(adapters["other-base"], server.adapters_dir / unique_name)
    with InferenceClient(settings_for(server, data_dir, inference_lora_loading="resolver")) as c:
        with pytest.raises(AdapterBaseMismatch, match="Qwen/Qwen2.5-7B-Instruct"):
            c.ensure_adapter(unique_name)
        with pytest.raises(ModelNotServed, match="base_model_name_or_path"):
            c.chat(unique_name, HI, GREEDY)


@pytest.fixture(scope="module")
def no_runtime_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same server in-process without load/unload routes, as vLLM without
    VLLM_ALLOW_RUNTIME_LORA_UPDATING."""
    import uvicorn

    from local.inference import Engine, create_app

    root = tmp_path_factory.mktemp("noruntime")
    (root / "resolver").mkdir()
    engine = Engine(
        base=str(tiny_model),
        served_name=str(tiny_model),
        adapters_dir=root / "resolver",
        device="cpu",
    )
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(engine, API_KEY, runtime_loading=False),
            host="127.0.0.1",
            port=port,
            log_level="error",
        )
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    import time

    while not srv.started:
        time.sleep(0.05)
    yield Server(f"http://127.0.0.1:{port}/v1", str(tiny_model), root / "resolver", root)
    srv.should_exit = True
    t.join(timeout=10)


def test_auto_mode_falls_back_to_the_resolver_and_says_why(
    no_runtime_server: Server, data_dir: Path, adapters: dict[str, Path]
) -> None:
    srv = no_runtime_server
    shutil.copytree(adapters["b"], srv.adapters_dir / "support-bot-v1")
    with InferenceClient(settings_for(srv, data_dir)) as c:
        with pytest.raises(RuntimeLoadingDisabled, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            c.load_adapter("support-bot-v1", str(srv.adapters_dir / "support-bot-v1"))
        got = c.ensure_adapter("support-bot-v1")
        assert got.mode is LoadMode.RESOLVER
        assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in got.detail
        assert c.chat("support-bot-v1", HI, GREEDY).text
    with InferenceClient(settings_for(srv, data_dir, inference_lora_loading="runtime")) as c:
        with pytest.raises(RuntimeLoadingDisabled):
            c.ensure_adapter("other-name", str(adapters["a"]))


def test_wrong_key_and_unreachable_server_are_told_apart(server: Server, data_dir: Path) -> None:
    with InferenceClient(settings_for(server, data_dir, inference_api_key="wrong")) as c:
        with pytest.raises(InferenceAuthError, match="INFERENCE_API_KEY"):
            c.models()
    down = settings_for(server, data_dir, inference_url=f"http://127.0.0.1:{free_port()}/v1")
    with InferenceClient(down) as c:
        with pytest.raises(InferenceUnavailable, match="brightrun up"):
            c.chat("anything", HI, GREEDY)
    not_v1 = settings_for(server, data_dir, inference_url=server.url.removesuffix("/v1"))
    with InferenceClient(not_v1) as c:
        with pytest.raises(InferenceUnavailable, match="/v1"):
            c.models()


def test_context_overflow_is_rejected_with_the_limit(
    client: InferenceClient, server: Server
) -> None:
    limit = server.max_model_len
    with pytest.raises(RequestRejected, match=f"max_model_len={limit}"):
        client.chat(server.base, HI, Sampling(max_tokens=limit + 1))
    long_prompt = [{"role": "user", "content": "cat " * limit}]
    with pytest.raises(RequestRejected, match=f"maximum context length is {limit} tokens"):
        client.chat(server.base, long_prompt, Sampling(max_tokens=5))
    # an answer that would run past the context is shortened, not refused
    r = client.chat(server.base, HI, Sampling(temperature=0.0, max_tokens=limit - 5))
    assert r.prompt_tokens + r.completion_tokens <= limit


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": -1}, "seed"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_bad_sampling_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        Sampling(**kwargs)


def test_compare_on_set_gives_one_row_per_prompt(
    client: InferenceClient, server: Server, adapters: dict[str, Path], unique_name: str
) -> None:
    client.load_adapter(unique_name, str(adapters["a"]))
    cases = parse_prompt_set(
        "What is the capital of France?\tParis\n\nHow many legs does a spider have?\n"
    )
    seen = []
    rows = compare_on_set(
        client, cases, [server.base, unique_name], GREEDY, on_row=lambda i, r: seen.append(i)
    )
    assert [r.prompt for r in rows] == [
        "What is the capital of France?",
        "How many legs does a spider have?",
    ]
    assert [r.reference for r in rows] == ["Paris", None]
    assert rows[0].answers[server.base] == client.chat(server.base, HI, GREEDY).text
    assert rows[0].answers[unique_name] != rows[0].answers[server.base]
    assert seen == [0, 1]
    client.unload_adapter(unique_name)


def test_prompt_set_parsing_names_the_bad_line() -> None:
    cases = parse_prompt_set(
        '{"prompt": "hi", "reference": "hello"}\n'
        '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},'
        ' {"role": "assistant", "content": "a"}]}\n'
    )
    assert (cases[0].prompt, cases[0].reference) == ("hi", "hello")
    assert (
        cases[1].prompt == "q"
        and cases[1].reference == "a"
        and cases[1].messages[0]["role"] == "system"
    )
    with pytest.raises(InvalidInput, match="line 2"):
        parse_prompt_set('plain prompt\n{"prompt": 3}\n')
    with pytest.raises(InvalidInput, match="line 1"):
        parse_prompt_set("{not json")
    with pytest.raises(InvalidInput, match="empty"):
        parse_prompt_set("\n  \n")


def test_conversation_export_is_one_chat_dataset_row_per_model() -> None:
    turns = [
        {"user": "hi", "answers": {"base": "hello", "bot": "hey there"}},
        {"user": "and you?", "answers": {"base": "fine", "bot": "great"}},
    ]
    assert conversation_messages("be brief", turns, "bot", next_user="bye") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hey there"},
        {"role": "user", "content": "and you?"},
        {"role": "assistant", "content": "great"},
        {"role": "user", "content": "bye"},
    ]
    lines = export_conversation_jsonl(
        "be brief", turns, ["base", "bot"], {"bot": "support-bot v1"}
    ).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["model"] for r in rows] == ["base", "bot"]
    assert rows[1]["label"] == "support-bot v1"
    assert [m["content"] for m in rows[0]["messages"]] == [
        "be brief",
        "hi",
        "hello",
        "and you?",
        "fine",
    ]


def test_a_broken_adapter_is_refused_and_leaves_the_server_serving(
    client: InferenceClient,
    server: Server,
    adapters: dict[str, Path],
    tmp_path: Path,
    unique_name: str,
) -> None:
    """vLLM 0.32.0 itself loads such an adapter and answers with it: the client refuses it
    before the call (core.clients.inference.fit), the local server refuses it too."""
    from tests.inference.conftest import make_adapter
    from trainer.shared.tiny import build_tiny_chat_model

    base_before = client.chat(server.base, HI, GREEDY).text
    wrong_modules = tmp_path / "wrong-modules"
    shutil.copytree(adapters["a"], wrong_modules)
    cfg = json.loads((wrong_modules / "adapter_config.json").read_text())
    (wrong_modules / "adapter_config.json").write_text(
        json.dumps({**cfg, "target_modules": ["no_such_proj"]})
    )
    # Same recorded base name, but weights of another shape (a narrower model).
    narrow = build_tiny_chat_model(tmp_path / "narrow", hidden_size=32)
    wrong_shape = make_adapter(narrow, tmp_path / "wrong-shape", base_name=server.base)
    good = f"{unique_name}-good"
    for with_another_loaded in (False, True):  # the plain base, then a PEFT-wrapped one
        if with_another_loaded:
            client.load_adapter(good, str(adapters["a"]))
            good_before = client.chat(good, HI, GREEDY).text
        for folder in (wrong_modules, wrong_shape):
            with pytest.raises(AdapterLoadFailed, match="could not be loaded"):
                client.load_adapter(unique_name, str(folder))
            assert unique_name not in {m.id for m in client.models()}
        assert client.chat(server.base, HI, GREEDY).text == base_before
        if with_another_loaded:
            assert client.chat(good, HI, GREEDY).text == good_before
    # Asked directly, vLLM takes it (200) and the local server refuses it (400): the
    # difference in docs/inference.md that the client's check covers.
    with raw(server) as h:
        r = h.post(
            "/load_lora_adapter", json={"lora_name": unique_name, "lora_path": str(wrong_shape)}
        )
        assert r.status_code == {"vllm": 200, "local": 400}[server.engine], r.text
        if r.status_code == 200:
            h.post("/unload_lora_adapter", json={"lora_name": unique_name})
    client.load_adapter(unique_name, str(adapters["b"]))  # a good one still loads
    assert client.chat(unique_name, HI, GREEDY).text != base_before
    client.unload_adapter(unique_name)
    client.unload_adapter(good)
    assert client.chat(server.base, HI, GREEDY).text == base_before


def test_generation_stops_when_the_reader_goes_away(tiny_model: Path) -> None:
    """What the server does when a streaming client disconnects: the generation thread sees
    the cancel flag at the next token, ends with finish reason `abort` and frees the lock."""
    from local.inference import ChatRequest, Engine

    engine = Engine(base=str(tiny_model), served_name="tiny", device="cpu")
    req = ChatRequest(model="tiny", messages=HI, max_tokens=500, temperature=1.0, seed=1)
    cancel = threading.Event()
    deltas = []
    for d in engine.generate(engine.prepare(req), cancel):
        deltas.append(d)
        if len(deltas) == 3:
            cancel.set()
    assert deltas[-1].finish_reason == "abort"
    assert deltas[-1].completion_tokens < 20
    assert engine.lock.acquire(blocking=False)


# --------------------------------------------------------------------------- the wire format
# What vLLM 0.32.0 answers, byte for byte where BrightRun reads it: both servers must agree.


def raw(server: Server):
    import httpx

    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120
    )


def error_of(r) -> tuple[int, str, str | None, int]:
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return r.status_code, err["type"], err["param"], err["code"]


def test_errors_come_in_vllms_envelope_with_its_status_type_and_param(
    server: Server, adapters: dict[str, Path], unique_name: str
) -> None:
    chat = {"model": server.base, "messages": HI, "max_tokens": 2}
    with raw(server) as h:
        assert error_of(h.post("/chat/completions", json={**chat, "model": "nope"})) == (
            404,
            "NotFoundError",
            "model",
            404,
        )
        assert error_of(h.post("/chat/completions", json={**chat, "temperature": 3})) == (
            400,
            "BadRequestError",
            "temperature",
            400,
        )
        assert error_of(h.post("/chat/completions", json={**chat, "top_p": 0})) == (
            400,
            "BadRequestError",
            "top_p",
            400,
        )
        assert error_of(h.post("/chat/completions", json={"model": server.base})) == (
            400,
            "Bad Request",
            "body.messages",
            400,
        )
        assert error_of(h.post("/load_lora_adapter", json={})) == (
            400,
            "Bad Request",
            "body.lora_name",
            400,
        )
        missing = {"lora_name": unique_name, "lora_path": str(server.work / "nowhere")}
        assert error_of(h.post("/load_lora_adapter", json=missing)) == (
            404,
            "NotFoundError",
            None,
            404,
        )
        big = {"lora_name": unique_name, "lora_path": str(adapters["rank-32"])}
        r = h.post("/load_lora_adapter", json=big)
        assert error_of(r) == (500, "InternalServerError", None, 500)
        assert "LoRA rank 32 is greater than max_lora_rank 16" in r.json()["error"]["message"]
        base_name = {"lora_name": server.base, "lora_path": str(adapters["a"])}
        assert error_of(h.post("/load_lora_adapter", json=base_name)) == (
            400,
            "InvalidUserInput",
            None,
            400,
        )
        assert error_of(h.post("/unload_lora_adapter", json={"lora_name": unique_name})) == (
            404,
            "NotFoundError",
            None,
            404,
        )
        good = {"lora_name": unique_name, "lora_path": str(adapters["a"])}
        assert h.post("/load_lora_adapter", json=good).status_code == 200
        assert error_of(h.post("/load_lora_adapter", json=good)) == (
            400,
            "InvalidUserInput",
            None,
            400,
        )
        assert h.post("/unload_lora_adapter", json={"lora_name": unique_name}).status_code == 200
        wrong_key = h.get("/models", headers={"Authorization": "Bearer wrong"})
        assert (wrong_key.status_code, wrong_key.json()) == (401, {"error": "Unauthorized"})


def test_load_and_unload_answer_plain_text(
    server: Server, adapters: dict[str, Path], unique_name: str
) -> None:
    with raw(server) as h:
        r = h.post(
            "/load_lora_adapter", json={"lora_name": unique_name, "lora_path": str(adapters["a"])}
        )
        assert (r.status_code, r.text) == (
            200,
            f"Success: LoRA adapter '{unique_name}' added successfully.",
        )
        assert "json" not in r.headers.get("content-type", "")
        again = {"lora_name": unique_name, "lora_path": str(adapters["b"]), "load_inplace": True}
        assert h.post("/load_lora_adapter", json=again).text == r.text
        r = h.post("/unload_lora_adapter", json={"lora_name": unique_name})
        assert (r.status_code, r.text) == (
            200,
            f"Success: LoRA adapter '{unique_name}' removed successfully.",
        )


def test_runtime_loading_does_not_check_the_base(
    server: Server, adapters: dict[str, Path], unique_name: str
) -> None:
    """vLLM takes an adapter recorded for another base at run time (its shapes fit here):
    the base check is the client's (test_adapter_for_another_base_is_refused_...)."""
    with raw(server) as h:
        r = h.post(
            "/load_lora_adapter",
            json={"lora_name": unique_name, "lora_path": str(adapters["other-base"])},
        )
        assert r.status_code == 200
        assert h.post("/unload_lora_adapter", json={"lora_name": unique_name}).status_code == 200


def test_resolver_errors_are_not_found_or_not_loadable(
    server: Server, adapters: dict[str, Path], unique_name: str
) -> None:
    other, big = f"{unique_name}-other", f"{unique_name}-big"
    shutil.copytree(adapters["other-base"], server.adapters_dir / other)
    shutil.copytree(adapters["rank-32"], server.adapters_dir / big)
    chat = {"messages": HI, "max_tokens": 2}
    with raw(server) as h:
        assert error_of(h.post("/chat/completions", json={**chat, "model": other})) == (
            404,
            "NotFoundError",
            "model",
            404,
        )
        r = h.post("/chat/completions", json={**chat, "model": big})
        assert error_of(r) == (400, "BadRequestError", None, 400)
        assert r.json()["error"]["message"].startswith(
            f"LoRA adapter '{big}' was found but could not be loaded"
        )


def test_models_list_root_and_parent(
    server: Server, adapters: dict[str, Path], unique_name: str
) -> None:
    with raw(server) as h:
        h.post(
            "/load_lora_adapter", json={"lora_name": unique_name, "lora_path": str(adapters["a"])}
        )
        body = h.get("/models").json()
        h.post("/unload_lora_adapter", json={"lora_name": unique_name})
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    base, adapter = cards[server.base], cards[unique_name]
    assert (base["object"], base["root"], base["parent"], base["max_model_len"]) == (
        "model",
        server.base,
        None,
        server.max_model_len,
    )
    assert (adapter["root"], adapter["parent"], adapter["max_model_len"]) == (
        str(adapters["a"]),
        server.base,
        None,
    )
    assert (
        base["owned_by"] == {"vllm": "vllm", "local": "brightrun"}[server.engine]
    )  # how health tells them apart


def test_sse_chunks(server: Server) -> None:
    req = {"model": server.base, "messages": HI, "temperature": 0, "max_tokens": 5}
    with raw(server) as h:
        whole = h.post("/chat/completions", json=req).json()
        with h.stream(
            "POST",
            "/chat/completions",
            json={**req, "stream": True, "stream_options": {"include_usage": True}},
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith(
                "text/event-stream"
            )
            events = [line.removeprefix("data: ") for line in r.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len(
        {c["id"] for c in chunks}
    ) == 1
    *answer, usage = chunks
    assert answer[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finishes = [c["choices"][0]["finish_reason"] for c in answer]
    assert finishes[:-1] == [None] * (len(answer) - 1) and finishes[-1] == "length"
    assert answer[-1]["choices"][0]["delta"]["content"], (
        "the last piece comes with the finish reason"
    )
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in answer)
        == whole["choices"][0]["message"]["content"]
    )
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert {k: usage["usage"][k] for k in counts} == {k: whole["usage"][k] for k in counts}


def test_health_says_which_engine_answers(
    client: InferenceClient, settings, server: Server
) -> None:
    """What the Settings page shows for the inference part."""
    from core.queries import health

    class Down:
        def __getattr__(self, name: str):
            raise RuntimeError("not looked at here")

    part = {p.part: p for p in health(settings, store=Down(), runpod=Down(), inference=client)}[
        "inference"
    ]
    engine = {"vllm": "vLLM 0.32.0", "local": "BrightRun's local server (imitates vLLM's API)"}[
        server.engine
    ]
    assert part.ok and part.detail.startswith(f"{engine} answering, serving {server.base}"), (
        part.detail
    )
