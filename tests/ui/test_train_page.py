"""Train page: settings grouped with defaults and presets; the plan (memory, verdict per GPU,
time and cost) follows the settings; Launch is disabled with the reason when the plan
cannot run, and launches the job when it can."""

from __future__ import annotations

import json
import threading

import pytest

from components.widgets import plain
from core import actions, datasets, db, jobs
from core.clients.storage import make_blob_store
from core.db import repo
from core.errors import QuotaExceeded
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import seed_job, text_of


@pytest.fixture
def dataset(settings: Settings) -> str:
    from trainer.shared.tiny import build_tiny_chat_model

    build_tiny_chat_model(settings.data_dir / "models" / "tiny-chat")
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(40)
    ]
    path = settings.data_dir / "toy.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    tok = datasets.load_tokenizer("brightrun/tiny-chat", settings.data_dir / "models")
    with db.session_scope(settings) as s:
        ds, _ = datasets.add_dataset(
            LOCAL_ACTOR, s, make_blob_store(settings), path, "toy", tokenizer=tok
        )
        return ds.id


def _launch(at) -> object:
    return at.button(key="train.launch")


def test_plan_follows_the_settings_and_launch_is_refused_with_the_reason(
    dataset: str, open_page
) -> None:
    at = open_page("train")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Peak memory"].endswith("GiB") and " – " in metrics["Cost"]
    verdicts = at.dataframe[0].value
    assert len(verdicts) == 7 and set(verdicts["verdict"]) == {"fits"}
    assert "licence apache-2.0" in text_of(at) and "context 4,096 tokens" in text_of(at)
    assert not _launch(at).disabled

    at.number_input(key="train.budget").set_value(0.01).run()
    assert _launch(at).disabled
    assert "give at least $0.07 (one minute)" in text_of(at)

    at.number_input(key="train.budget").set_value(10.0).run()
    at.selectbox(key="train.model").select("Qwen/Qwen2.5-72B-Instruct").run()
    at.selectbox(key="train.quantization").select("none").run()
    assert _launch(at).disabled
    assert "it does not fit an H100 PCIe 80 GB" in text_of(at)
    assert "Qwen2.5 72B Instruct" in text_of(at) and "context 32,768 tokens" in text_of(at)
    before = float(next(m for m in at.metric if m.label == "Peak memory").value.split()[0])
    at.selectbox(key="train.quantization").select("nf4").run()
    after = float(next(m for m in at.metric if m.label == "Peak memory").value.split()[0])
    assert after < before / 2

    at.number_input(key="train.max_length").set_value(65536).run()
    assert (
        "max length 65536 is beyond Qwen/Qwen2.5-72B-Instruct's context of 32768 tokens"
        in text_of(at)
    )


def test_presets_set_lora_and_training_values(dataset: str, open_page) -> None:
    at = open_page("train")
    assert at.number_input(key="train.lora_r").value == 16  # the spec's default
    at.selectbox(key="train.preset").select("Thorough").run()
    assert at.number_input(key="train.lora_r").value == 64
    assert at.number_input(key="train.epochs").value == 3.0
    at.selectbox(key="train.preset").select("Quick try").run()
    assert (
        at.number_input(key="train.lora_r").value,
        at.number_input(key="train.max_length").value,
    ) == (8, 1024)


def test_launch_submits_the_form_settings_and_opens_the_job(
    settings: Settings, dataset: str, endpoint, open_page
) -> None:
    at = open_page("train")
    at.number_input(key="train.lora_r").set_value(4).run()
    at.number_input(key="train.learning_rate").set_value(5e-4).run()
    at.text_input(key="train.adapter_name").input("toy-bot").run()
    _launch(at).click().run()
    assert not at.exception
    assert at.title[0].value == "Jobs"
    with db.session_scope(settings) as s:
        (job,) = repo.list_jobs(LOCAL_ACTOR, s)
    assert at.query_params["job"] == job.id  # the address names the job: a reload keeps it
    assert (
        job.adapter_name == "toy-bot"
        and job.spec["lora"]["r"] == 4
        and job.spec["training"]["learning_rate"] == 5e-4
    )
    (sent,) = endpoint.jobs.values()
    assert sent.input["job_id"] == job.id and sent.input["lora"]["r"] == 4
    # the title is markdown with the user's name escaped (it renders as "toy-bot")
    assert at.session_state["jobs.selected"] == job.id and plain("toy-bot") in [
        h.value for h in at.subheader
    ]


def test_page_and_submit_refuse_a_full_quota_with_the_same_message(
    settings: Settings, dataset: str, open_page
) -> None:
    for _ in range(settings.max_concurrent_jobs):
        seed_job(settings, dataset, status="IN_PROGRESS")
    with pytest.raises(QuotaExceeded) as refused:
        jobs.submit(LOCAL_ACTOR, settings, dataset_id=dataset, model="brightrun/tiny-chat")
    at = open_page("train")
    assert (
        str(refused.value)
        == "you have 2 unfinished job(s) and may run 2 at once; wait for one to finish or cancel one"
    )
    assert [e.value.replace("\\", "") for e in at.error] == [
        str(refused.value)
    ]  # shown escaped, reads the same
    assert _launch(at).disabled


def test_no_dataset_yet_points_to_the_datasets_page(open_page) -> None:
    at = open_page("train")
    assert "Upload a dataset first." in text_of(at)
    assert [e.proto.page for e in at.get("page_link")] == ["datasets"]


def test_model_cache_status_with_the_command_when_not_cached(
    settings: Settings, dataset: str, open_page
) -> None:
    at = open_page("train")  # the tiny demo model is a local folder
    assert "Model files are on this machine: nothing to download." in text_of(at) and not at.code
    qwen = "Qwen/Qwen2.5-7B-Instruct"
    at.selectbox(key="train.model").select(qwen).run()
    assert "Not cached on the volume: every job downloads the model first" in text_of(at)
    assert [c.value for c in at.code] == [f"brightrun cache-model {qwen}"]
    with db.session_scope(settings) as s:
        job = repo.create_job(LOCAL_ACTOR, s, base_model=qwen, spec={}, action="cache_model")
        repo.update_job(LOCAL_ACTOR, s, job.id, status="COMPLETED")
    at.run()
    assert (
        "Cached on the volume: jobs start without downloading the model." in text_of(at)
        and not at.code
    )


def test_a_cache_check_that_hangs_shows_unknown_and_the_page_goes_on(
    dataset: str, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(*args: object, **kwargs: object) -> str:  # a database or volume that never answers
        release.wait(30)
        return "cached"

    monkeypatch.setattr(actions, "cache_status", stuck)
    monkeypatch.setattr(actions, "CACHE_STATUS_TIMEOUT_S", 0.2)
    try:
        at = open_page("train")
        assert (
            "Model cache: unknown (no answer within 0.2s); a job downloads the model if it is not cached."
            in text_of(at)
        )
        assert not _launch(at).disabled and "Peak memory" in [m.label for m in at.metric]
    finally:
        release.set()


def test_time_estimate_says_it_rests_on_the_users_finished_jobs_once_there_are_some(
    settings: Settings, dataset: str, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = open_page("train")  # the local endpoint: the job runs on this machine's CPU
    assert "Priced as: runs on LOCAL_CPU (this machine's CPU), billed at $4.18/h" in text_of(local)
    # the memory is planned for the GPU it is priced as, and the plan says so under the chart
    memory = [c.proto.spec for c in local.get("plotly_chart") if "Peak GPU memory" in c.proto.spec]
    assert len(memory) == 1 and "on H100 PCIe" in memory[0]
    assert "the GPU the job is priced as; it runs on this machine's CPU" in text_of(local)
    monkeypatch.setenv("GPU_CLUSTER_API_URL", "https://api.runpod.ai/v2/abc123")
    at = open_page("train")  # the tiny demo model, nf4, on an H100 PCIe
    assert "Time estimate: default utilisation 30% of the GPU's bf16 peak" in text_of(at)
    for rate in (1000.0, 2000.0):
        seed_job(
            settings,
            dataset,
            model="brightrun/tiny-chat",
            spec={"quantization": "nf4"},
            tokens_per_s=rate,
        )
    seed_job(
        settings,
        dataset,
        model="brightrun/tiny-chat",
        spec={"quantization": "nf4"},
        tokens_per_s=5.0,
        gpu_type="LOCAL_CPU",
        price_tier="local",
    )  # a CPU run does not count
    at.run()
    assert (
        "Time estimate: measured: median of 2 finished jobs on this GPU (1,500 tokens/s)"
        in text_of(at)
    )


def test_early_stopping_needs_evaluations_during_training_then_goes_into_the_spec(
    settings: Settings, dataset: str, endpoint, open_page
) -> None:
    at = open_page("train")
    assert at.number_input(key="train.early_stopping_patience").value == 0  # off by default
    at.number_input(key="train.early_stopping_patience").set_value(2).run()
    assert "early stopping compares evaluations made during training: set eval_every" in text_of(at)
    at.number_input(key="train.eval_every").set_value(5).run()
    at.number_input(key="train.early_stopping_min_delta").set_value(0.01).run()
    _launch(at).click().run()
    assert not at.exception and at.title[0].value == "Jobs"
    with db.session_scope(settings) as s:
        (job,) = repo.list_jobs(LOCAL_ACTOR, s)
    assert job.spec["training"]["eval_every"] == 5
    assert job.spec["training"]["early_stopping"] == {"patience": 2, "min_delta": 0.01}
    (sent,) = endpoint.jobs.values()
    assert sent.input["training"]["early_stopping"]["patience"] == 2


def test_the_price_range_over_the_endpoints_gpus_is_shown_in_one_line(
    dataset: str, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_CLUSTER_API_URL", "https://api.runpod.ai/v2/abc123")
    monkeypatch.setenv("GPU_TYPE", "H100_80GB_PCIE")
    monkeypatch.setenv("ENDPOINT_GPU_TYPES", '["A40_48GB","H100_80GB_PCIE"]')
    at = open_page("train")
    (line,) = [c.value for c in at.caption if "the endpoint may run it on" in c.value]
    assert "H100_80GB_PCIE, A40_48GB: $1.22-$4.18/h" in line and "dearest" in line


def test_the_page_says_when_a_gpu_type_is_scarce_and_where_prices_come_from(
    dataset: str, open_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.deploy.contract import SKIP_REASON, load_contract
    from tests.deploy.fake_runpod import FakeRunPod
    from tests.deploy.test_catalog import GPUS

    contract = load_contract()
    if contract is None:
        pytest.skip(SKIP_REASON)
    fake = FakeRunPod(api_key="rp-key", contract=contract, gpus=GPUS).start()
    try:
        monkeypatch.setenv("GPU_CLUSTER_API_URL", "https://api.runpod.ai/v2/abc123")
        monkeypatch.setenv("GPU_TYPE", "H100_80GB_PCIE")
        monkeypatch.setenv("ENDPOINT_GPU_TYPES", '["A40_48GB"]')
        monkeypatch.setenv("RUNPOD_API_KEY", "rp-key")
        monkeypatch.setenv("RUNPOD_REST_URL", fake.rest_url)
        at = open_page("train")
    finally:
        fake.stop()
    assert fake.violations == []
    assert "Prices: RunPod catalog, read" in text_of(at)
    (warning,) = [x.value for x in at.warning if "scarce" in x.value]
    assert "A40_48GB (low)" in warning
    # The catalog's prices: $1.10-$4.00/h over the endpoint's two GPU types.
    assert any("$1.10-$4.00/h" in c.value for c in at.caption)


def test_without_an_account_key_prices_come_from_the_dated_table(dataset: str, open_page) -> None:
    at = open_page("train")
    assert "Prices: built-in price table of 2026-11-26" in text_of(at)


def test_a_preference_dataset_trains_with_dpo_or_orpo(
    settings: Settings, endpoint, open_page
) -> None:
    from trainer.shared.tiny import build_tiny_chat_model

    build_tiny_chat_model(settings.data_dir / "models" / "tiny-chat")
    rows = [
        {"prompt": f"q{i}?", "chosen": f"good answer {i}", "rejected": f"bad {i}"}
        for i in range(40)
    ]
    path = settings.data_dir / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    tok = datasets.load_tokenizer("brightrun/tiny-chat", settings.data_dir / "models")
    with db.session_scope(settings) as s:
        datasets.add_dataset(
            LOCAL_ACTOR, s, make_blob_store(settings), path, "pairs", tokenizer=tok
        )
    at = open_page("train")
    method = at.selectbox(key="train.method")
    assert method.options == ["DPO: prefer the chosen answer", "ORPO: SFT and preference in one"]
    assert at.number_input(key="train.learning_rate").value == pytest.approx(5e-5)
    assert not _launch(at).disabled
    method.set_value("orpo").run()
    assert at.number_input(key="train.learning_rate").value == pytest.approx(8e-5)
    _launch(at).click().run()
    with db.session_scope(settings) as s:
        (job,) = repo.list_jobs(LOCAL_ACTOR, s)
        assert job.spec["method"] == "orpo" and job.spec["preference"]["orpo_lambda"] == 0.1


def test_the_gpu_table_gives_names_and_suggestions_room(dataset: str, open_page) -> None:
    at = open_page("train")
    (table,) = [d for d in at.dataframe if "suggestion" in d.value.columns]
    config = json.loads(table.proto.columns)
    assert config["suggestion"]["width"] == "large" and config["GPU"]["width"] == "medium"
