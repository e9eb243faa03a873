"""Small reusable widgets and the text formats every page shares.

User data (dataset rows, messages, file names, error messages carrying them) is always
shown as text (`st.text`, `st.code`, dataframes), never as markdown or HTML; errors go
through `show_error`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

# Material icons and plain words only: emoji depend on the viewer's fonts.
ROLE_AVATARS = {
    "system": ":material/settings:",
    "user": "user",
    "assistant": "assistant",
    "tool": ":material/build:",
}
STATUS_COLOURS = {
    "QUEUED": "gray",
    "IN_QUEUE": "gray",
    "IN_PROGRESS": "blue",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "orange",
    "TIMED_OUT": "orange",
}


def share(fraction: float) -> str:
    """A share as a percentage; an unbounded one (spend against a $0 budget) as "over"."""
    return f"{fraction:.0%}" if fraction != float("inf") else "over 100%"


def money(usd: float | None) -> str:
    """Dollars with the precision small jobs need: 4 decimals under a cent, 3 under a dollar
    (a tiny job costs $0.015, not "$0.02"), cents above."""
    if usd is None:
        return "–"
    if 0 < abs(usd) < 0.01:
        return f"${usd:,.4f}"
    if abs(usd) < 1:
        text = f"${usd:,.3f}"
        return text[:-1] if text.endswith("0") else text
    return f"${usd:,.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s" if m else f"{s}s"


def size(n: int | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def when(t: dt.datetime | None) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if t else "–"


def loss(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def status(s: str) -> str:
    """A job status as words (for tables and progress bars)."""
    return s.replace("_", " ").lower()


def status_badge(s: str) -> str:
    """A job status as a coloured markdown badge."""
    return f":{STATUS_COLOURS.get(s, 'gray')}-badge[{status(s)}]"


def chat_bubbles(row: Mapping[str, Any]) -> None:
    """A normalised row as chat bubbles (a preference pair: the prompt, then each answer
    under its label); contents shown as plain text only."""
    if "text" in row:
        with st.chat_message("assistant", avatar=":material/description:"):
            st.caption("text (loss on every token)")
            st.text(row["text"])
        return
    if "chosen" in row and "rejected" in row:
        _bubbles(row.get("prompt") or [])
        _bubbles(row.get("chosen") or [], "chosen")
        _bubbles(row.get("rejected") or [], "rejected")
        return
    _bubbles(row.get("messages") or [])


def _bubbles(messages: Sequence[Mapping[str, Any]], side: str = "") -> None:
    for m in messages:
        role = str(m.get("role", ""))
        with st.chat_message(
            role if role in ("user", "assistant") else "ai", avatar=ROLE_AVATARS.get(role)
        ):
            st.caption(f"{role} ({side} answer)" if side else role)
            _message_body(m)


def _message_body(m: Mapping[str, Any]) -> None:
    """A message's reasoning, text and tool calls (an assistant turn that only calls has
    no text: its calls are what it says), all as plain text."""
    reasoning = m.get("reasoning_content") or m.get("reasoning")
    if reasoning:
        with st.expander("Reasoning", expanded=False):
            st.text(str(reasoning))
    if m.get("content") or not m.get("tool_calls"):
        st.text(str(m.get("content") or ""))
    for call in m.get("tool_calls") or []:
        fn = call.get("function") or call
        args = fn.get("arguments")
        st.caption(f"calls {plain(str(fn.get('name', '')))}")
        st.code(args if isinstance(args, str) else json.dumps(args, indent=1), language="json")


def problems_table(examples: Sequence[Mapping[str, Any]], counts: Mapping[str, int]) -> None:
    """Problems grouped by kind, each with its offending rows."""
    for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        rows = [e for e in examples if e.get("kind") == kind]
        with st.expander(f"{kind.replace('_', ' ')}: {n} row(s)", expanded=len(counts) == 1):
            st.dataframe(
                [
                    {"row": e["row"], "field": e.get("field", ""), "problem": e["message"]}
                    for e in rows
                ],
                hide_index=True,
                width="stretch",
            )
            if n > len(rows):
                st.caption(f"showing the first {len(rows)} of {n}")


def confirm(key: str, what: str, target: str) -> bool:
    """Two-step confirmation stored under `key`: True when the user confirmed `target`."""
    if st.session_state.get(key) != target:
        return False
    st.warning(f"Delete {plain(what)}? This cannot be undone.", icon=":material/warning:")
    yes, no = st.columns(2)
    if no.button("Keep it", key=f"{key}.no.{target}"):
        st.session_state[key] = None
        st.rerun()
    return yes.button(f"Yes, delete {plain(what)}", key=f"{key}.yes.{target}", type="primary")


_MD_SPECIAL = set("\\`*_{}[]()#+-.!|<>~$:")


def plain(text: object) -> str:
    """`text` escaped for places that render markdown (labels, st.error): shown literally."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in str(text))


def show_error(e: BaseException | str, *, stop: bool = False) -> None:
    """The one way a page shows an error: `str(e)` as plain text (never markdown, so a
    message that carries user data shows it literally); `stop` ends the run here."""
    st.error(plain(e))
    if stop:
        st.stop()
