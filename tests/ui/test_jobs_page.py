"""Jobs page: the history table (filter, sort, pages) and a job's detail: live numbers and
curves refreshed through core's sync, event log, resolved settings, cancel, retry, and
after a failure its kind, message and fix with a one-click relaunch; the worker's cold
start and the job's checkpoints, each promotable to a version."""

from __future__ import annotations

import time

from components.widgets import plain
from core import db, jobs
from core.db import repo
from core.settings import Settings, load_settings
from core.users import LOCAL_ACTOR
from tests.jobs.conftest import wait_until
from tests.ui.conftest import seed_dataset, seed_job, text_of

OOM = {
    "type": "failed",
    "data": {
        "kind": "out_of_memory",
        "message": "CUDA out of memory at step 2",
        "suggestion": "try micro_batch_size 2 with grad_accum 8",
    },
}


def _wait_for(at, predicate, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not predicate(at):
        assert time.monotonic() < deadline, text_of(at)
        time.sleep(0.3)
        at.run()
    return at


def test_table_filters_sorts_and_pages(settings: Settings, open_page) -> None:
    ds = seed_dataset(settings)
    for i in range(30):
        seed_job(
            settings,
            ds,
            cost=i / 10,
            status="FAILED" if i % 10 == 3 else "COMPLETED",
            adapter=f"bot-{i}",
        )
    at = open_page("jobs")
    table = at.dataframe[0].value
    assert len(table) == 25 and list(table.columns[:4]) == ["job", "status", "model", "dataset"]
    assert "Page 1 of 2 · 30 job(s)" in text_of(at)
    at.button(key="jobs.next").click().run()
    assert len(at.dataframe[0].value) == 5 and "Page 2 of 2" in text_of(at)

    at.multiselect(key="jobs.statuses").select("FAILED").run()
    table = at.dataframe[0].value
    assert table["adapter"].tolist() and set(table["status"]) == {"failed"} and len(table) == 3
    assert "Page 1 of 1 · 3 job(s)" in text_of(at)  # a filter starts again on page 1

    at.multiselect(key="jobs.statuses").unselect("FAILED").run()
    at.selectbox(key="jobs.sort").select("cost").run()
    assert at.dataframe[0].value["cost ($)"].tolist()[:3] == [2.9, 2.8, 2.7]
    at.toggle(key="jobs.descending").set_value(False).run()
    assert at.dataframe[0].value["cost ($)"].tolist()[:3] == [0.0, 0.1, 0.2]
    at.text_input(key="jobs.search").input("bot-17").run()
    assert at.dataframe[0].value["adapter"].tolist() == ["bot-17"]


def test_detail_of_a_long_job_draws_downsampled_curves(settings: Settings, open_page) -> None:
    job = seed_job(
        settings,
        seed_dataset(settings),
        metrics=2000,
        spec={"lora": {"r": 8}},
        eval_loss=0.91,
        step=2000,
        total_steps=2000,
        progress=1.0,
    )
    at = open_page("jobs", {"job": job})
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert (
        metrics["Eval loss"] == "0.9100"
        and metrics["Learning rate"] == "2.00e-04"
        and metrics["Tokens/s"] == "1,000"
    )
    assert metrics["Cost"] == "$0.50" and metrics["ETA"] == "done"
    (chart,) = at.get("plotly_chart")
    assert "eval loss" in chart.proto.spec and "learning rate" in chart.proto.spec
    assert "2,000 logged steps drawn as 400 bucket means." in text_of(at)
    assert at.json[0].value == '{"lora": {"r": 8}}'
    log = at.dataframe[0].value
    assert log["seq"].tolist()[0] == 1999 and len(log) == 200
    assert not [b for b in at.button if b.key in ("jobs.cancel", "jobs.retry")]
    at.button(key="jobs.back").click().run()
    assert "Page 1 of 1 · 1 job(s)" in text_of(at)
    at.selectbox(key="jobs.open").select(job).run()
    assert at.query_params["job"] == job  # a link to this page opens the same job
    assert [h.value for h in at.subheader] == [plain("support-bot")]  # markdown, escaped


def test_live_detail_syncs_until_the_job_ends(settings: Settings, endpoint, open_page) -> None:
    endpoint.script = lambda spec: {"chunks": 4, "interval_s": 0.5}
    ds = seed_dataset(settings)
    job = jobs.submit(
        LOCAL_ACTOR, load_settings(), dataset_id=ds, model="Qwen/Qwen2.5-0.5B-Instruct"
    )
    at = open_page("jobs", {"job": job.id})
    assert at.get("progress")
    # the live section timed its redraw: the next one waits at least three times as long
    assert at.session_state["jobs.progress.render_s"] > 0
    _wait_for(at, lambda a: "failed" in str([p.proto.text for p in a.get("progress")]))
    # the fake worker ends without a final event: the page tells what happened and what to do
    assert "the worker ended without reporting a result" in text_of(at)
    assert len(at.dataframe[0].value) == 4  # the 4 events synced from the stream
    assert at.button(key="jobs.retry") and not [b for b in at.button if b.key == "jobs.cancel"]


def test_cancel_a_running_job(settings: Settings, endpoint, open_page) -> None:
    endpoint.script = lambda spec: {"chunks": 1000, "interval_s": 1.0}
    job = jobs.submit(
        LOCAL_ACTOR,
        load_settings(),
        dataset_id=seed_dataset(settings),
        model="Qwen/Qwen2.5-0.5B-Instruct",
    )
    at = open_page("jobs", {"job": job.id})
    at.button(key="jobs.cancel").click().run()
    assert not at.exception
    with db.session_scope(settings) as s:
        assert repo.get_job(LOCAL_ACTOR, s, job.id).status == "CANCELLED"
    assert "cancelled" in str([p.proto.text for p in at.get("progress")])
    at.button(key="jobs.retry").click().run()  # resume under the same id
    with db.session_scope(settings) as s:
        again = repo.get_job(LOCAL_ACTOR, s, job.id)
    assert (
        again.attempt == 1
        and again.status in ("IN_QUEUE", "IN_PROGRESS")
        and len(endpoint.jobs) == 2
    )


def test_failure_shows_kind_and_fix_and_relaunches_with_lighter_settings(
    settings: Settings, endpoint, open_page
) -> None:
    endpoint.script = lambda spec: (
        {"chunks": 2, "interval_s": 0.01, "final": OOM}
        if spec["training"]["micro_batch_size"] == 4
        else {"chunks": 100, "interval_s": 1}
    )
    job = jobs.submit(
        LOCAL_ACTOR,
        load_settings(),
        dataset_id=seed_dataset(settings),
        model="Qwen/Qwen2.5-0.5B-Instruct",
        adapter_name="oom-bot",
        training={"micro_batch_size": 4, "grad_accum": 4},
    )
    wait_until(
        lambda: jobs.sync(LOCAL_ACTOR, load_settings(), job.id).status == "FAILED",
        what="the job to run out of memory",
    )
    at = open_page("jobs", {"job": job.id})
    _wait_for(at, lambda a: bool([b for b in a.button if b.key == "jobs.relaunch"]))
    text = text_of(at)
    assert "out of memory: CUDA out of memory at step 2" in text  # plain text, no markdown
    assert "Suggested fix: try micro_batch_size 2 with grad_accum 8" in text
    assert (
        '"micro_batch_size": 2' in text and '"grad_accum": 8' in text
    )  # what the relaunch will use
    at.button(key="jobs.relaunch").click().run()
    assert not at.exception
    with db.session_scope(settings) as s:
        new = next(j for j in repo.list_jobs(LOCAL_ACTOR, s) if j.id != job.id)
    assert new.parent_job_id == job.id and new.adapter_name == "oom-bot"
    assert (new.spec["training"]["micro_batch_size"], new.spec["training"]["grad_accum"]) == (2, 8)
    assert at.session_state["jobs.selected"] == new.id


def test_another_users_job_id_is_not_found(settings: Settings, open_page) -> None:
    from core.users import Actor

    with db.session_scope(settings) as s:
        other = repo.create_job(Actor(user_id="u2"), s, base_model="m", spec={"secret": 1}).id
    at = open_page("jobs", {"job": other})
    assert f"job '{other}' not found" in text_of(at) and not at.json


def test_detail_shows_cold_start_and_promotes_a_checkpoint(settings: Settings, open_page) -> None:
    job = seed_job(settings, seed_dataset(settings), adapter="ck-bot")
    with db.session_scope(settings) as s:
        repo.append_events(
            LOCAL_ACTOR,
            s,
            job,
            [
                {
                    "seq": 0,
                    "type": "started",
                    "ts": time.time(),
                    "data": {"cold_start_s": 42.0, "model": {"source": "runpod_cached"}},
                }
            ],
        )
        repo.create_adapter_version(
            LOCAL_ACTOR, s, adapter_name="ck-bot", base_model="m", job_id=job
        )  # the job's v1
        for step, loss in ((4, 2.5), (8, 1.75)):
            repo.create_adapter_version(
                LOCAL_ACTOR,
                s,
                adapter_name="ck-bot",
                base_model="m",
                job_id=job,
                is_checkpoint=True,
                step=step,
                final_loss=loss,
                volume_path=f"/ck/step-{step}",
            )
    at = open_page("jobs", {"job": job})
    assert "Cold start 42s: from the worker taking the job until it was ready to work" in text_of(
        at
    )
    assert "Base model from RunPod's cached models on the worker's host" in text_of(at)
    rows = [t.value for t in at.text]
    assert rows[:4] == ["step 8", "loss 1.7500", "step 4", "loss 2.5000"]  # newest first
    promote = [b for b in at.button if b.label == "Promote to version"]
    assert len(promote) == 2
    promote[0].click().run()  # step 8
    assert not at.exception, at.exception
    rows = [t.value for t in at.text]
    assert rows[:5] == ["step 8", "loss 1.7500", "version v2", "step 4", "loss 2.5000"]
    assert (
        len([b for b in at.button if b.label == "Promote to version"]) == 1
    )  # step 4 still can be
    with db.session_scope(settings) as s:
        assert [
            (v.step, v.version)
            for v in repo.list_versions(LOCAL_ACTOR, s, job_id=job)
            if v.is_checkpoint
        ] == [(8, 2), (4, None)]


def test_cold_start_not_reported_yet_while_the_worker_loads(
    settings: Settings, endpoint, open_page
) -> None:
    endpoint.script = lambda spec: {
        "chunks": 1000,
        "interval_s": 1.0,
    }  # metrics only, no `started` yet
    job = jobs.submit(
        LOCAL_ACTOR,
        load_settings(),
        dataset_id=seed_dataset(settings),
        model="Qwen/Qwen2.5-0.5B-Instruct",
    ).id
    at = open_page("jobs", {"job": job})
    assert not at.warning  # the page reached the endpoint and synced
    assert "Cold start: not reported yet" in text_of(at)
    assert not [b for b in at.button if b.label == "Promote to version"]


def test_an_early_stopped_job_says_why_it_stopped_and_what_it_saved(
    settings: Settings, open_page
) -> None:
    saved = {
        "step": 40,
        "total_steps": 100,
        "steps_left": 60,
        "seconds_per_step": 2.5,
        "saved_usd": 0.174,
        "best_step": 30,
        "best_eval_loss": 1.2345,
        "patience": 2,
        "min_delta": 0.0,
    }
    job = seed_job(
        settings,
        seed_dataset(settings),
        step=40,
        total_steps=100,
        progress=0.4,
        stop_reason="early_stopping",
        result={"early_stopping": saved},
    )
    at = open_page("jobs", {"job": job})
    assert not at.exception
    assert [i.value.replace("\\", "") for i in at.info if "Stopped" in i.value] == [
        "Stopped early at step 40 of 100: the eval loss did not improve for 2 evaluations in a "
        "row. The adapter is the best checkpoint, step 30 (eval loss 1.2345). Saved about "
        "$0.1740 against running to the end (60 more steps at 2.50s each)."
    ]
    finished = seed_job(settings, None, adapter="other")
    at = open_page("jobs", {"job": finished})
    assert not [i for i in at.info if "Stopped" in i.value]
