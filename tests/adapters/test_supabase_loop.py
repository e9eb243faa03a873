"""The whole loop on Supabase with the project's new-format keys: a person signs up and in
through Supabase Auth (AUTH=supabase, the publishable key `sb_publishable_...`), adds a
dataset that BrightRun stores in Supabase Storage (the secret key `sb_secret_...`),
launches a short SFT job on the local endpoint (the real trainer handler, tiny model, CPU),
whose worker downloads the dataset and uploads the adapter and its log through URLs the
Storage stand-in signed, and chats with the new version on the local inference server.

Against the loopback project of `tests.state.supabase_project` (the Storage and Auth
stand-ins under one SUPABASE_URL), it shows:
- the job completes and its adapter files and log are in the `adapters` bucket under the
  person's folder (their dataset in `datasets`, under it too);
- the Playground's choice for v1 is the folder the worker left on the shared volume (the
  product chats from there, not from Storage), and it holds the bytes the bucket holds;
- the adapter answers the trained questions with the trained answers, the base does not;
- every storage request carries the secret key as `apikey` and bearer, except the signed
  URL requests, which carry no key at all; every auth request carries the publishable key
  and no request to Auth carries the secret key; neither key is in the job's payload, and
  the secret key is in no file the run left (database, endpoint and worker logs, the
  uploaded job log, the volume);
- every exchange both stand-ins recorded holds to Supabase's published documents
  (`tests.supabase_contract`), apart from the answers those documents say nothing of.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cli.stack import stop_all
from core import db
from core.adapters import PEFT_FILES
from core.clients import auth
from core.clients.inference import InferenceClient, Sampling, find_choice, model_choices
from core.clients.runpod import RunPodClient
from core.clients.storage import adapter_prefix, job_key, make_blob_store
from core.datasets import add_dataset
from core.db import repo
from core.db.tables import Job
from core.jobs.spec import LOG_FILES
from core.settings import Settings, supabase_key_kind
from core.users import Actor
from tests.adapters.conftest import LEARN_QA, QA, chat_rows
from tests.inference.conftest import API_KEY, start_server
from tests.jobs.stack import Stack, make_stack
from tests.security.test_gotrue_contract import _as_documented
from tests.state.supabase_project import SupabaseProject
from tests.supabase_contract import (
    AUTH_DOC,
    STORAGE_DOC,
    Exchange,
    SupabaseContract,
    load_auth,
    load_storage,
    skip_reason,
)

STORAGE, AUTH = load_storage(), load_auth()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(STORAGE is None, reason=skip_reason(STORAGE_DOC)),
    pytest.mark.skipif(AUTH is None, reason=skip_reason(AUTH_DOC)),
]

SECRET = "sb_secret_" + "s7Kq2vXw" * 4
PUBLISHABLE = "sb_publishable_" + "p3Lm9aZc" * 4
EMAIL, PASSWORD = "ada@example.com", "a-long-enough-password"

# The answers the published document describes nothing of (method, path template, status):
# a download's bytes, by signed URL (the worker's dataset) or with the key (the stored
# adapter, read back here).
STORAGE_SILENT = {
    ("GET", "/object/sign/{bucketName}/{wildcard}", 200),
    ("GET", "/object/{bucketName}/{wildcard}", 200),
}

TRAINING = LEARN_QA


def _sign_up_and_in(settings: Settings) -> Actor:
    """Sign up (signed in at once: the project does not confirm emails), sign out, sign in
    again with a new client, as the dashboard's sign-in page does; the person's Actor."""
    first = auth.make_client(settings)
    assert auth.sign_up(first, EMAIL, PASSWORD).signed_in
    auth.sign_out(first)
    client = auth.make_client(settings)
    identity = auth.sign_in(client, EMAIL, PASSWORD)
    assert auth.current_identity(client) == identity
    with db.session_scope(settings) as s:
        return auth.actor_for(s, identity)


def _contract_errors(
    contract: SupabaseContract, exchanges: list[Exchange]
) -> tuple[set[tuple[str, str, int]], list[str]]:
    silent, errors = set(), []
    for ex in exchanges:
        for e in contract.errors(ex):
            if e.startswith("SILENT: "):
                found = contract.operation(ex.method, ex.path)
                silent.add((ex.method, found[0] if found else ex.path, ex.status))
            else:
                errors.append(f"{ex}: {e}")
    return silent, errors


@dataclass
class Loop:
    project: SupabaseProject
    stack: Stack  # its settings point at the inference server too
    actor: Actor  # the person who signed in
    job: Job  # their completed job
    sent: list[dict[str, Any]]  # every payload the controller sent to the endpoint
    root: Path  # everything the run wrote


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """Sign up and in, add the dataset, train v1 of `secret-words` and start the inference
    server, all on the loopback Supabase project."""
    root = tmp_path_factory.mktemp("supabase-loop")
    sent: list[dict[str, Any]] = []
    run = RunPodClient.run

    def recording_run(self: RunPodClient, payload: dict[str, Any], **kw: Any) -> Any:
        sent.append(json.loads(json.dumps(payload)))
        return run(self, payload, **kw)

    person: dict[str, Actor] = {}

    def dataset(settings: Settings) -> str:
        person["actor"] = actor = _sign_up_and_in(settings)
        rows = root / "secret-words.jsonl"
        rows.write_text("".join(json.dumps(r) + "\n" for r in chat_rows()), encoding="utf-8")
        with db.session_scope(settings) as s:
            row, _report = add_dataset(
                actor, s, make_blob_store(settings), rows, "secret-words", eval_fraction=0.0
            )
            return row.id

    with (
        pytest.MonkeyPatch.context() as mp,
        SupabaseProject(root / "supabase", SECRET, PUBLISHABLE) as project,
    ):
        mp.setattr(RunPodClient, "run", recording_run)
        stacked = make_stack(root / "stack", training=TRAINING, dataset=dataset, supabase=project)
        stack = next(stacked)
        procs = []
        try:
            actor = person["actor"]
            # Without S3 keys a job must end within Supabase's 2-hour upload URLs.
            job = stack.submit(actor, adapter_name="secret-words", budget_usd=1.0)
            job = stack.wait_end(job.id, timeout_s=300, actor=actor)
            assert job.status == "COMPLETED", job.failure_message
            proc, server = start_server(stack.model, root / "inference")
            procs.append(proc)
            stack.settings = stack.settings.model_copy(
                update={"inference_url": server.url, "inference_api_key": SecretStr(API_KEY)}
            )
            yield Loop(project, stack, actor, job, sent, root)
        finally:
            stop_all(procs)
            stacked.close()


def test_the_job_completes_with_its_adapter_and_log_in_the_persons_storage_folder(
    loop: Loop,
) -> None:
    project, actor, job = loop.project, loop.actor, loop.job
    assert actor.user_id == project.auth.accounts[EMAIL].id and not actor.is_admin
    assert job.status == "COMPLETED" and job.owner_id == actor.user_id
    with db.session_scope(loop.stack.settings) as s:
        (v,) = repo.list_versions(actor, s, job_id=job.id)
    assert v.version == 1 and v.storage_prefix == adapter_prefix(actor.user_id, v.id)
    stored = {name for bucket, name in project.storage.meta if bucket == "adapters"}
    assert {v.storage_prefix + f for f in PEFT_FILES} <= stored
    assert {job_key(actor.user_id, job.id, f) for f in LOG_FILES} <= stored
    datasets = {name for bucket, name in project.storage.meta if bucket == "datasets"}
    assert datasets and all(name.startswith(f"{actor.user_id}/") for name in stored | datasets), (
        stored | datasets
    )


def test_the_playground_answers_with_the_stored_adapter(loop: Loop) -> None:
    settings, actor = loop.stack.settings, loop.actor
    greedy = Sampling(temperature=0.0, max_tokens=8)
    with InferenceClient(settings) as client, db.session_scope(settings) as s:
        (v,) = repo.list_versions(actor, s, job_id=loop.job.id)
        choice = find_choice(model_choices(actor, s, settings, client), "secret-words v1")
        assert choice.path is not None and choice.served_name != client.base_model()
        client.ensure_adapter(choice.served_name, choice.path)
        store = make_blob_store(settings)
        for f in PEFT_FILES:  # the folder the server loads holds what the bucket holds
            held = (Path(choice.path) / f).read_bytes()
            assert store.get_bytes("adapters", v.storage_prefix + f) == held, f

        def answers(model: str) -> list[str]:
            return [
                client.chat(model, [{"role": "user", "content": q}], greedy).text.strip()
                for q, _ in QA
            ]

        tuned, base = answers(choice.served_name), answers(client.base_model())
    want = [a for _, a in QA]
    print(f"\nadapter: {tuned}\nbase:    {base}")
    assert sum(t == w for t, w in zip(tuned, want, strict=True)) >= len(QA) - 1
    assert not any(b == w for b, w in zip(base, want, strict=True))


def test_storage_calls_carry_the_secret_key_and_auth_calls_the_publishable_key(
    loop: Loop,
) -> None:
    assert (supabase_key_kind(SECRET), supabase_key_kind(PUBLISHABLE)) == (
        "secret",
        "publishable",
    )
    storage_ex = list(loop.project.storage.exchanges)
    keyed = [ex for ex in storage_ex if "apikey" in ex.headers]
    signed = [ex for ex in storage_ex if "token=" in ex.url]
    assert keyed and signed and len(keyed) + len(signed) == len(storage_ex)
    for ex in keyed:
        assert ex.headers["apikey"] == SECRET, ex
        assert ex.headers["authorization"] == f"Bearer {SECRET}", ex
    for ex in signed:  # the worker's download and uploads: the URL is the credential
        assert "authorization" not in ex.headers and "apikey" not in ex.headers, ex
    assert {(ex.method, ex.path.split("/")[4]) for ex in signed} == {
        ("GET", "sign"),  # the dataset
        ("PUT", "upload"),  # the adapter files and the job's log
    }
    auth_ex = list(loop.project.auth.exchanges)
    assert {ex.path for ex in auth_ex} == {"/auth/v1/signup", "/auth/v1/logout", "/auth/v1/token"}
    for ex in auth_ex:
        assert ex.headers["apikey"] == PUBLISHABLE, ex
        assert SECRET not in json.dumps(ex.headers) + ex.body.decode(), ex


def test_no_key_is_in_the_job_payload_and_the_secret_key_in_no_log_or_file(loop: Loop) -> None:
    assert len(loop.sent) == 1
    for key in (SECRET, PUBLISHABLE):
        assert key not in json.dumps(loop.sent)
        assert key not in json.dumps(loop.stack.endpoint.env)  # the endpoint and its workers
        assert key not in json.dumps([e.data for e in loop.stack.events(loop.job.id, loop.actor)])
    assert loop.stack.endpoint.log()  # the worker's output, among the files scanned below
    held = [p for p in loop.root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert held == []


def test_every_exchange_holds_to_supabases_published_documents(loop: Loop) -> None:
    assert STORAGE is not None and AUTH is not None
    storage_ex, auth_ex = list(loop.project.storage.exchanges), list(loop.project.auth.exchanges)
    ops = {(ex.method, STORAGE.operation(ex.method, ex.path)[0]) for ex in storage_ex}
    assert ops >= {
        ("POST", "/object/{bucketName}/{wildcard}"),  # the dataset's files
        ("POST", "/object/sign/{bucketName}/{wildcard}"),  # its download URL
        ("POST", "/object/upload/sign/{bucketName}/{wildcard}"),  # upload URLs
        ("GET", "/object/sign/{bucketName}/{wildcard}"),  # the worker's download
        ("PUT", "/object/upload/sign/{bucketName}/{wildcard}"),  # its uploads
        ("POST", "/object/list/{bucketName}"),  # the version's files, at sync
    }, ops
    silent, errors = _contract_errors(STORAGE, storage_ex)
    assert errors == [] and silent <= STORAGE_SILENT, (errors, silent)
    silent, errors = _contract_errors(AUTH, [_as_documented(ex) for ex in auth_ex])
    assert errors == [] and silent == set(), (errors, silent)
