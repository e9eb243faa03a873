"""Comparing models on prompts: one set of messages through several models, prompt sets
pasted or taken from a dataset's eval split, and conversations exported as JSONL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.clients.inference.client import InferenceClient
from core.clients.inference.types import ChatResult, Sampling
from core.errors import InvalidInput

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.users import Actor


def compare(
    client: InferenceClient,
    models: Sequence[str],
    messages: Sequence[Mapping[str, str]],
    sampling: Sampling | None = None,
) -> dict[str, ChatResult]:
    """The same messages through each model (base and adapter, or two adapters)."""
    return {m: client.chat(m, messages, sampling) for m in models}


@dataclass(frozen=True)
class PromptCase:
    """One prompt of a comparison set: the messages sent, and the expected answer."""

    messages: tuple[Mapping[str, str], ...]
    reference: str | None = None

    @property
    def prompt(self) -> str:
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


def parse_prompt_set(text: str) -> list[PromptCase]:
    """Pasted prompts: one per line, `prompt<TAB>reference` to give a reference, or JSON
    lines `{"prompt": ..., "reference": ...}` (or `{"messages": [...]}`, whose last
    assistant turn is the reference). Blank lines are skipped; a bad line raises
    InvalidInput naming its line number."""
    cases: list[PromptCase] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"line {n}: not valid JSON ({e.msg})") from e
            if isinstance(row, dict) and "messages" in row:
                cases.extend(_cases_from_rows([row], first_line=n))
                continue
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("prompt"), str)
                or not row["prompt"].strip()
            ):
                raise InvalidInput(f'line {n}: a JSON line needs a non-empty "prompt" string')
            ref = row.get("reference")
            if ref is not None and not isinstance(ref, str):
                raise InvalidInput(f'line {n}: "reference" must be a string')
            cases.append(PromptCase(({"role": "user", "content": row["prompt"]},), ref))
            continue
        prompt, _, ref = line.partition("\t")
        cases.append(
            PromptCase(({"role": "user", "content": prompt.strip()},), ref.strip() or None)
        )
    if not cases:
        raise InvalidInput("the prompt set is empty: paste at least one prompt")
    return cases


def cases_from_conversations(rows: Iterable[Mapping[str, Any]]) -> list[PromptCase]:
    """Chat-`messages` rows (a dataset's eval split): everything before the last assistant
    turn is sent, the last assistant turn is the reference."""
    return _cases_from_rows(rows, first_line=1)


def _cases_from_rows(rows: Iterable[Mapping[str, Any]], first_line: int) -> list[PromptCase]:
    cases = []
    for n, row in enumerate(rows, start=first_line):
        msgs = row.get("messages")
        if not isinstance(msgs, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("content"), str) and m.get("role")
            for m in msgs
        ):
            raise InvalidInput(f'row {n}: "messages" must be a list of {{role, content}}')
        last_assistant = max(
            (i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None
        )
        context = msgs if last_assistant is None else msgs[:last_assistant]
        if not any(m["role"] == "user" for m in context):
            raise InvalidInput(f"row {n}: no user message before the answer")
        ref = None if last_assistant is None else msgs[last_assistant]["content"]
        cases.append(
            PromptCase(tuple({"role": m["role"], "content": m["content"]} for m in context), ref)
        )
    return cases


def eval_split_datasets(actor: Actor, session: Session) -> dict[str, str]:
    """The actor's datasets that have an eval split, as {name: dataset id}."""
    from core import datasets

    return {d.name: d.id for d in datasets.list_datasets(actor, session) if datasets.eval_key(d)}


def eval_split_cases(
    actor: Actor, session: Session, store: Any, dataset_id: str, limit: int = 200
) -> list[PromptCase]:
    """The first `limit` rows of the actor's dataset's eval split as prompt cases (the
    last assistant turn is the reference; a preference pair's prompt and chosen answer). Raises InvalidInput when the dataset has
    no eval split or no chat rows, NotFound for another user's dataset."""
    from core import datasets

    rows = datasets.preview_rows(
        actor, session, store, dataset_id, n=limit, split="eval", max_chars=1_000_000
    )
    if not rows:
        ds = datasets.get_dataset(actor, session, dataset_id)
        raise InvalidInput(datasets.no_eval_split_reason(ds))
    chat = [{"messages": c} for c in map(_conversation, rows) if c]
    if not chat:
        raise InvalidInput("this dataset holds plain text rows: there are no prompts to compare")
    return cases_from_conversations(chat)


def _conversation(row: Mapping[str, Any]) -> list[Any] | None:
    """A normalised row as a conversation to compare on: chat rows as they are; a
    preference pair's prompt with its chosen answer (the reference); a labelled (KTO)
    row's prompt, with its completion as the reference when it is desirable; a prompts
    row's prompt alone. None for a text row."""
    if "messages" in row:
        return list(row["messages"])
    prompt = row.get("prompt")
    if not isinstance(prompt, list):
        return None
    answer = row.get("chosen") or (row.get("completion") if row.get("label") else None)
    return [*prompt, *(answer or [])]


@dataclass(frozen=True)
class CompareRow:
    prompt: str
    reference: str | None
    answers: dict[str, str] = field(default_factory=dict)  # model → answer


def compare_on_set(
    client: InferenceClient,
    cases: Sequence[PromptCase],
    models: Sequence[str],
    sampling: Sampling | None = None,
    system: str = "",
    on_row: Any = None,
) -> list[CompareRow]:
    """Every case through every model; one row per case. `on_row(i, row)` is called as
    each row completes (for a progress bar)."""
    rows = []
    for i, case in enumerate(cases):
        msgs = list(case.messages)
        if system and not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": system}, *msgs]
        answers = {m: client.chat(m, msgs, sampling).text for m in models}
        row = CompareRow(case.prompt, case.reference, answers)
        rows.append(row)
        if on_row is not None:
            on_row(i, row)
    return rows


# A conversation is kept as plain data (a session's state): a list of turns, each
# {"user": str, "answers": {model: str}}. Each model sees its own earlier answers.


def conversation_messages(
    system: str, turns: Sequence[Mapping[str, Any]], model: str, next_user: str | None = None
) -> list[dict[str, str]]:
    """The messages to send to `model`: system, the earlier turns with that model's own
    answers, then `next_user` if given."""
    msgs = [{"role": "system", "content": system}] if system else []
    for t in turns:
        msgs.append({"role": "user", "content": t["user"]})
        answer = t.get("answers", {}).get(model)
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
    if next_user is not None:
        msgs.append({"role": "user", "content": next_user})
    return msgs


def export_conversation_jsonl(
    system: str,
    turns: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    labels: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
) -> str:
    """One JSON line per model: `{"model", "label", "exported_at", "messages"}`; the
    `messages` are in the chat format BrightRun imports as a dataset. `model` is
    `names[m]` when given (`ModelChoice.name`: no folder for a member), else `m`."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = []
    for m in models:
        row = {
            "model": (names or {}).get(m, m),
            "label": (labels or {}).get(m, m),
            "exported_at": now,
            "messages": conversation_messages(system, turns, m),
        }
        lines.append(json.dumps(row, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")


def export_set_jsonl(rows: Sequence[CompareRow], labels: Mapping[str, str] | None = None) -> str:
    """A compare-on-a-set run, one JSON line per case: `{"prompt", "reference", "answers":
    {label: answer}}` (the playground's export and `brightrun chat-set --out`)."""
    lines = [
        json.dumps(
            {
                "prompt": r.prompt,
                "reference": r.reference,
                "answers": {(labels or {}).get(m, m): a for m, a in r.answers.items()},
            },
            ensure_ascii=False,
        )
        for r in rows
    ]
    return "\n".join(lines) + ("\n" if lines else "")
