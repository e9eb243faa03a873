"""The SQL in docs/supabase.md, run as written on the real PostgreSQL after BrightRun's
migrations, with Supabase's roles, default grants, `auth.uid()` and `storage` schema
stood up the way Supabase has them. A user would notice if the documented SQL failed, left
a table open to the Data API, locked BrightRun itself out, or forgot a table.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from core import db
from core.db.tables import Base
from tests.state.db_fixtures import postgres_database, settings_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "supabase.md"

SUPABASE_LIKE = """
do $$ begin
  create role anon nologin;
exception when duplicate_object then null; end $$;
do $$ begin
  create role authenticated nologin;
exception when duplicate_object then null; end $$;
grant usage on schema public to anon, authenticated;
grant all on all tables in schema public to anon, authenticated;
grant all on all sequences in schema public to anon, authenticated;
create schema auth;
grant usage on schema auth to anon, authenticated;
create function auth.uid() returns uuid language sql stable as
  $f$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $f$;
create schema storage;
grant usage on schema storage to anon, authenticated;
create table storage.buckets (id text primary key, name text not null, public boolean default false);
create table storage.objects (id bigserial primary key, bucket_id text references storage.buckets(id), name text);
alter table storage.objects enable row level security;
grant select on storage.objects to anon, authenticated;
create function storage.foldername(name text) returns text[] language sql immutable as
  $f$ select (string_to_array(name, '/'))[1:array_length(string_to_array(name, '/'), 1) - 1] $f$;
"""


def sql_blocks() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    tagged = {}
    for block in blocks:
        m = re.match(r"-- brightrun: ([a-z-]+)\n", block)
        assert m, f"every SQL block in {DOC.name} starts with a '-- brightrun: <tag>' line"
        tagged[m.group(1)] = block
    return tagged


def test_docs_name_every_table_and_protect_each_one():
    blocks = sql_blocks()
    tables = set(Base.metadata.tables) | {"alembic_version"}
    for table in tables:
        assert f"`{table}`" in DOC.read_text(), f"{table} missing from the owner-column table"
        assert f"alter table public.{table} " in blocks["rls"], f"RLS not enabled on {table}"
        assert f"public.{table}" in blocks["rls"].split("revoke", 1)[1], f"{table} not revoked"


@pytest.fixture(scope="module")
def supabase_like_db(tmp_path_factory: pytest.TempPathFactory):
    psycopg = pytest.importorskip("psycopg")
    with postgres_database() as url:
        db.upgrade(settings_for(tmp_path_factory.mktemp("data"), url))
        db.dispose_engines()
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SUPABASE_LIKE)
            blocks = sql_blocks()
            for tag in ("buckets", "rls", "owner-reads", "storage-owner-reads"):
                conn.execute(blocks[tag])
            yield conn


def _as(conn, role: str, user: str | None, sql: str, *params):
    import psycopg

    with conn.transaction():
        conn.execute(f"set local role {role}")
        if user:
            conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (user,))
        try:
            return conn.execute(sql, params).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            return "denied"


def test_the_documented_sql_closes_the_data_api_and_leaves_brightrun_in(supabase_like_db):
    conn = supabase_like_db
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    for uid, email in ((alice, "alice@example.com"), (bob, "bob@example.com")):
        conn.execute(
            "insert into users (id, email, role, created_at) values (%s, %s, 'member', now())",
            (uid, email),
        )
        conn.execute(
            "insert into datasets (id, owner_id, name, original_filename, file_format, layout, rows, "
            "valid_rows, size_bytes, sha256, stats, original_key, normalized_key, created_at) "
            "values (%s, %s, 'd', '', 'jsonl', 'messages', 1, 1, 1, '', '{}', '', '', now())",
            (f"ds-{uid[:8]}", uid),
        )

    # the check query of the docs: every BrightRun table has RLS on and anon cannot select
    rows = conn.execute(sql_blocks()["check"]).fetchall()
    mine = {
        r[0]: (r[1], r[2]) for r in rows if r[0] in set(Base.metadata.tables) | {"alembic_version"}
    }
    assert len(mine) == len(Base.metadata.tables) + 1
    assert set(mine.values()) == {(True, False)}, mine

    # the Data API's anonymous role sees nothing anywhere; BrightRun (the owner) sees all
    for table in sorted(Base.metadata.tables):
        assert _as(conn, "anon", None, f"select * from {table}") == "denied", table
    assert len(conn.execute("select * from datasets").fetchall()) == 2

    # with the optional owner-read policies, a signed-in user sees their own rows only
    seen = _as(conn, "authenticated", alice, "select owner_id from datasets")
    assert seen == [(alice,)]
    assert _as(conn, "authenticated", bob, "select id from users") == [(bob,)]
    assert _as(conn, "authenticated", alice, "delete from datasets") == "denied"

    # buckets are private
    buckets = dict(conn.execute("select id, public from storage.buckets").fetchall())
    assert buckets == {"datasets": False, "adapters": False}
    conn.execute(
        "insert into storage.objects (bucket_id, name) values ('datasets', %s), ('datasets', %s)",
        (f"{alice}/ds-1/original", f"{bob}/ds-2/original"),
    )
    assert _as(conn, "authenticated", alice, "select name from storage.objects") == [
        (f"{alice}/ds-1/original",)
    ]
    assert _as(conn, "anon", None, "select name from storage.objects") == []
