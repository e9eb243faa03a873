"""Training data: fetch, validate, tokenise, batch.

How a row becomes tokens (chat loss masks, text ids, windows) is `trainer.shared.tokens`,
which the controller's dataset statistics use too; this module applies it to whole files.

Input: normalised JSONL (what `core.datasets` writes), one row per line, each in one of two
shapes:

    {"messages": [{"role", "content"}, ...]}   a conversation (chat fine-tuning)
    {"text": "..."}                            plain text (continued pretraining)

A chat row has roles system/user/assistant/tool, at least one non-empty assistant message,
and something before the first assistant message; a text row has a non-empty string. Any
other shape raises `BadInput` naming the file, the row (1-based line number) and the field.
A file may mix the two shapes; each row is tokenised by its own.

Chat rows: loss is on assistant tokens only: each assistant message's content and the
end-of-turn token the template closes it with. The assistant spans are found by rendering
the conversation up to each assistant turn with and without it (so any chat template
works, with or without `{% generation %}` markers), then mapped to tokens with the fast
tokenizer's offsets. Text rows: tokenised as the model expects a document (the BOS token
when its tokenizer adds one, then the text, then EOS), and every token is a target (all
but the first, which nothing precedes); they need neither a chat template nor a fast
tokenizer.

Length: a text row longer than `max_length` tokens is a long document, split into
consecutive windows of `max_length` tokens (`text_windows`), each its own sample: the BOS
(if any) is only in the first window, the EOS only in the last, and the windows joined are
the document's tokens, none lost. Within a window every token is a target except its first,
which has no earlier token in that window to be predicted from (attention and positions
restart per window). A window is never a single token: when the remainder would be one
token, the window before it ends one token early. Split documents and their windows are
counted (`split_rows`, `windows`). A chat row longer than `max_length` is truncated (kept
from the start) and counted; a chat row with no loss token left after truncation is dropped
and counted.

Each sample stores `targets` already shifted (`targets[t]` is the token to predict at
position t, or -100), so samples can be concatenated without a label crossing from one
sample into the next; text rows and chat rows are packed alike.

Batching modes (see `trainer.shared.arch`):
- packed (`position_ids`/`seq_boundaries`): samples go into bins of `max_length` tokens by
  best-fit decreasing; one micro-batch is `micro_batch_size` bins concatenated into one
  padding-free row, with position ids restarting per sample and the boundaries
  (`cu_seqlens`) alongside.
- padded: samples grouped by length into micro-batches of `micro_batch_size`, padded to
  the longest, with an attention mask.
The order of bins/groups is shuffled per epoch from the seed, so a resumed job sees the
same batches.
"""

from __future__ import annotations

import bisect
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.shared.errors import BadInput, DownloadFailed
from trainer.shared.tokens import (
    Conversation,
    TemplateRefused,
    chat_token_masks,
    text_token_ids,
    text_windows,
)

IGNORE = -100
ROLES = ("system", "user", "assistant", "tool")
_MAX_REPORTED = 5


def fetch(url: str | None, path: str | None, dest: Path, what: str) -> Path:
    """The dataset as a local file: `path` as is, or `url` streamed to `dest`."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise BadInput(f"{what} file {path!r} does not exist", "check the dataset path")
        return p
    assert url is not None
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as r:
            if r.status_code >= 400:
                raise DownloadFailed(f"downloading the {what} data failed: HTTP {r.status_code}")
            with dest.open("wb") as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
    except (httpx.HTTPError, httpx.InvalidURL) as e:  # the type only: the text may quote the URL
        raise DownloadFailed(f"downloading the {what} data failed: {type(e).__name__}") from e
    return dest


# One row's content: a conversation (its messages, or {"messages", "tools"} when the row
# defines functions), or a plain text.
Row = Conversation | str
# What a message may carry besides role and content (`core.datasets` writes these).
MESSAGE_EXTRAS = ("tool_calls", "tool_call_id", "name", "reasoning_content", "loss_weight")


def _message_of(m: dict[str, Any]) -> dict[str, Any]:
    out = {"role": m["role"], "content": m["content"]}
    out.update({k: m[k] for k in MESSAGE_EXTRAS if m.get(k) is not None})
    return out


def _row_of(obj: dict[str, Any]) -> Row:
    if "messages" not in obj:
        return obj["text"]
    msgs = [_message_of(m) for m in obj["messages"]]
    return {"messages": msgs, "tools": obj["tools"]} if obj.get("tools") else msgs


def _check_row(obj: Any) -> str | None:
    if isinstance(obj, dict) and "text" in obj and "messages" not in obj:
        text = obj["text"]
        if not isinstance(text, str):
            return f"'text' must be a string, not {type(text).__name__}"
        if not text.strip():
            return "'text' is empty: nothing to learn from this row"
        return None
    if isinstance(obj, dict) and "text" in obj:
        return "a row has either 'messages' or 'text', not both"
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return "expected an object with a 'messages' list or a 'text' string"
    msgs = obj["messages"]
    if not msgs:
        return "'messages' is empty"
    seen_assistant = False
    for j, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"messages[{j}] is not an object"
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            return f"messages[{j}].role {role!r} is not one of {', '.join(ROLES)}"
        if not isinstance(content, str):
            return f"messages[{j}].content must be a string"
        if role == "assistant":
            if j == 0:
                return "messages[0] is an assistant message: start with a system or user message"
            produces = bool(content.strip() or m.get("tool_calls") or m.get("reasoning_content"))
            seen_assistant = seen_assistant or produces
    if not seen_assistant:
        return "no non-empty assistant message: nothing to learn from this row"
    return None


def read_rows(path: Path, what: str) -> list[Row]:
    """Every row's messages (chat) or text; raises `BadInput` naming the first bad rows."""
    rows: list[Row] = []
    errors: list[str] = []
    n_bad = 0
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    problem: str | None = f"not valid JSON ({e.msg})"
                else:
                    problem = _check_row(obj)
                if problem:
                    n_bad += 1
                    if len(errors) < _MAX_REPORTED:
                        errors.append(f"row {lineno}: {problem}")
                    continue
                rows.append(_row_of(obj))
    except UnicodeDecodeError as e:
        raise BadInput(f"{what} data is not UTF-8 text ({e.reason})") from e
    if n_bad:
        raise BadInput(
            f"{what} data has {n_bad} invalid row(s): " + "; ".join(errors),
            'fix or remove these rows (JSONL of {"messages": [{"role", "content"}]} or '
            '{"text": "..."}) and upload the dataset again',
        )
    if not rows:
        raise BadInput(f"{what} data has no rows", "upload a dataset with at least one row")
    return rows


@dataclass
class Sample:
    input_ids: list[int]
    targets: list[int]
    n_loss: int
    row: int  # 1-based row in the file it came from

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DataStats:
    rows: int = 0
    samples: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    truncated_rows: int = 0  # chat rows cut at max_length
    truncated_examples: list[int] = field(default_factory=list)
    split_rows: int = 0  # text rows (long documents) split into windows
    split_examples: list[int] = field(default_factory=list)
    windows: int = 0  # the samples the split documents became
    dropped_rows: int = 0
    dropped_examples: list[int] = field(default_factory=list)
    max_length: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "samples": self.samples,
            "tokens": self.tokens,
            "loss_tokens": self.loss_tokens,
            "loss_token_share": round(self.loss_tokens / self.tokens, 4) if self.tokens else 0.0,
            "truncated_rows": self.truncated_rows,
            "truncated_row_examples": self.truncated_examples,
            "split_rows": self.split_rows,
            "split_row_examples": self.split_examples,
            "windows_from_split_rows": self.windows,
            "dropped_rows": self.dropped_rows,
            "dropped_row_examples": self.dropped_examples,
            "max_length": self.max_length,
        }


def _chat_masks(
    tokenizer: Any, chat: dict[int, Conversation], train_on_reasoning: bool
) -> list[tuple[list[int], list[bool]]]:
    """The chat rows' ids and loss masks; a row the chat template refuses is a `BadInput`
    naming it (1-based)."""
    try:
        return chat_token_masks(
            tokenizer, list(chat.values()), train_on_reasoning=train_on_reasoning
        )
    except TemplateRefused as e:
        row = list(chat)[e.index or 0] + 1
        raise BadInput(f"row {row}: {e.message}", e.suggestion) from e


def tokenize_rows(
    tokenizer: Any, rows: list[Row], max_length: int, *, train_on_reasoning: bool = True
) -> tuple[list[Sample], DataStats]:
    """Samples with their targets (assistant tokens of chat rows, every token of text rows);
    long text rows become several windows, long chat rows are truncated; splits, truncation
    and drops are counted in the stats. `train_on_reasoning` off: an assistant turn's
    <think> block carries no loss."""
    encoded: list[tuple[list[int], list[bool]]] = [([], [])] * len(rows)
    chat = {i: r for i, r in enumerate(rows) if not isinstance(r, str)}
    text = {i: r for i, r in enumerate(rows) if isinstance(r, str)}
    if chat:
        for i, pair in zip(chat, _chat_masks(tokenizer, chat, train_on_reasoning), strict=True):
            encoded[i] = pair
    if text:
        for i, ids in zip(text, text_token_ids(tokenizer, list(text.values())), strict=True):
            encoded[i] = (ids, [True] * len(ids))
    stats = DataStats(rows=len(rows), max_length=max_length)
    samples: list[Sample] = []
    for idx, (ids, mask) in enumerate(encoded):
        row = idx + 1
        pieces = [(ids, mask)]
        if len(ids) > max_length and idx in text:
            pieces = [(ids[a:b], mask[a:b]) for a, b in text_windows(len(ids), max_length)]
            stats.split_rows += 1
            stats.windows += len(pieces)
            if len(stats.split_examples) < _MAX_REPORTED:
                stats.split_examples.append(row)
        elif len(ids) > max_length:
            stats.truncated_rows += 1
            if len(stats.truncated_examples) < _MAX_REPORTED:
                stats.truncated_examples.append(row)
            pieces = [(ids[:max_length], mask[:max_length])]
        kept = 0
        for p_ids, p_mask in pieces:
            targets = [p_ids[t + 1] if p_mask[t + 1] else IGNORE for t in range(len(p_ids) - 1)] + [
                IGNORE
            ]
            n_loss = sum(1 for x in targets if x != IGNORE)
            if n_loss == 0:
                continue
            samples.append(Sample(p_ids, targets, n_loss, row))
            stats.tokens += len(p_ids)
            stats.loss_tokens += n_loss
            kept += 1
        if kept == 0:
            stats.dropped_rows += 1
            if len(stats.dropped_examples) < _MAX_REPORTED:
                stats.dropped_examples.append(row)
    stats.samples = len(samples)
    if not samples:
        raise BadInput(
            f"no row has a token to learn from within max_length {max_length}",
            "raise max_length or check that rows contain assistant answers",
        )
    return samples, stats


def split_eval(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """A seeded split by row: (train, eval). The windows of one long document stay on the
    same side; at least one row stays on each side."""
    rows = list(dict.fromkeys(s.row for s in samples))
    if fraction <= 0 or len(rows) < 2:
        return samples, []
    random.Random(seed).shuffle(rows)
    n_eval = min(len(rows) - 1, max(1, round(fraction * len(rows))))
    held = set(rows[:n_eval])
    return (
        [s for s in samples if s.row not in held],
        [s for s in samples if s.row in held],
    )


def pack_bfd(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices grouped into bins whose lengths sum to <= capacity."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (remaining capacity, bin id), sorted
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"sample of {n} tokens exceeds bin capacity {capacity}")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            rem, b = free.pop(k)
        else:
            rem, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        rem -= n
        if rem > 0:
            bisect.insort(free, (rem, b))
    return bins


def plan_micro_batches(
    samples: list[Sample],
    *,
    packed: bool,
    micro_batch_size: int,
    max_length: int,
    seed: int,
    epoch: int | None,
) -> list[list[int]]:
    """Sample indices per micro-batch, for one epoch (`epoch=None`: unshuffled, for eval)."""
    lengths = [len(s) for s in samples]
    if packed:
        groups = pack_bfd(lengths, max_length)
    else:
        order = sorted(range(len(samples)), key=lambda i: (lengths[i], i))
        groups = [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
    if epoch is not None:
        random.Random(seed * 1_000_003 + epoch).shuffle(groups)
    if packed:
        groups = [
            [i for g in groups[k : k + micro_batch_size] for i in g]
            for k in range(0, len(groups), micro_batch_size)
        ]
    return groups


@dataclass
class Batch:
    """One micro-batch as tensors, plus the counts the loop needs."""

    input_ids: Any
    position_ids: Any
    targets: Any
    attention_mask: Any | None
    cu_seqlens: Any | None
    max_seqlen: int
    n_loss: int
    n_tokens: int  # real tokens (padding excluded)
    n_slots: int  # token slots computed (padding included)

    def model_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"input_ids": self.input_ids, "position_ids": self.position_ids}
        if self.attention_mask is not None:
            kw["attention_mask"] = self.attention_mask
        if self.cu_seqlens is not None:
            # The flash-attention varlen convention; `brightrun_varlen` reads the same keys.
            kw.update(
                cu_seq_lens_q=self.cu_seqlens,
                cu_seq_lens_k=self.cu_seqlens,
                max_length_q=self.max_seqlen,
                max_length_k=self.max_seqlen,
            )
        return kw


@dataclass
class SharedPromptBatch(Batch):
    """A batch that may lay each prompt out once before its answers (DPO's pairs, GRPO's
    groups): `pick` / `pick_targets` list each answer token's predicting position in the
    flattened rows and the token; `layout` gives each prompt's (start, prompt length, each
    answer's length), which `brightrun_varlen` reads
    (`trainer.kernels.shared_prompt_attention`). Without a layout it is a plain batch."""

    pick: Any = None
    pick_targets: Any = None
    layout: list[tuple[int, ...]] | None = None

    def model_kwargs(self) -> dict[str, Any]:
        if self.layout is None:
            return super().model_kwargs()
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "brightrun_pairs": self.layout,
        }

    @classmethod
    def laid_out(
        cls,
        ids: list[int],
        pos: list[int],
        pick: list[int],
        pick_targets: list[int],
        layout: list[tuple[int, ...]],
        device: Any,
        **fields: Any,
    ) -> Any:
        """One row of token `ids` at positions `pos`, each prompt once (`layout`), the loss
        read at the `pick` positions only; `fields` are the subclass's own."""
        import torch

        n = len(ids)
        return cls(
            input_ids=torch.tensor([ids], device=device),
            position_ids=torch.tensor([pos], device=device),
            targets=torch.full((1, n), IGNORE, device=device),
            attention_mask=None,
            cu_seqlens=None,
            max_seqlen=max(k + max(tails) for _, k, *tails in layout),
            n_loss=len(pick),
            n_tokens=n,
            n_slots=n,
            pick=torch.tensor(pick, device=device),
            pick_targets=torch.tensor(pick_targets, device=device),
            layout=layout,
            **fields,
        )


def collate(
    samples: list[Sample], idx: list[int], *, packed: bool, pad_id: int, device: Any
) -> Batch:
    import torch

    chosen = [samples[i] for i in idx]
    n_loss = sum(s.n_loss for s in chosen)
    n_tokens = sum(len(s) for s in chosen)
    if packed:
        ids = [t for s in chosen for t in s.input_ids]
        tgt = [t for s in chosen for t in s.targets]
        pos = [p for s in chosen for p in range(len(s))]
        cu = [0]
        for s in chosen:
            cu.append(cu[-1] + len(s))
        return Batch(
            input_ids=torch.tensor([ids], device=device),
            position_ids=torch.tensor([pos], device=device),
            targets=torch.tensor([tgt], device=device),
            attention_mask=None,
            cu_seqlens=torch.tensor(cu, dtype=torch.int32, device=device),
            max_seqlen=max(len(s) for s in chosen),
            n_loss=n_loss,
            n_tokens=n_tokens,
            n_slots=n_tokens,
        )
    width = max(len(s) for s in chosen)
    ids_rows, tgt_rows, mask_rows = [], [], []
    for s in chosen:
        pad = width - len(s)
        ids_rows.append(s.input_ids + [pad_id] * pad)
        tgt_rows.append(s.targets + [IGNORE] * pad)
        mask_rows.append([1] * len(s) + [0] * pad)
    return Batch(
        input_ids=torch.tensor(ids_rows, device=device),
        position_ids=torch.arange(width, device=device).expand(len(chosen), width),
        targets=torch.tensor(tgt_rows, device=device),
        attention_mask=torch.tensor(mask_rows, device=device),
        cu_seqlens=None,
        max_seqlen=width,
        n_loss=n_loss,
        n_tokens=n_tokens,
        n_slots=width * len(chosen),
    )
