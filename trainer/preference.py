"""Preference data for DPO and ORPO: read, validate, tokenise, batch.

Input: normalised preference JSONL (what `core.datasets` writes for preference layouts),
one pair per line:

    {"prompt": [{"role", "content"}, ...], "chosen": [messages], "rejected": [messages]}

The prompt is a non-empty conversation that does not end with an assistant message; each
answer is a non-empty list of messages starting with an assistant message; the two answers
differ. Any other shape raises `BadInput` naming the file, the row and the field.

Each side (prompt + chosen, prompt + rejected) is rendered with the chat template and
tokenised (`trainer.shared.tokens.answer_token_masks`); the answer's tokens carry the
score, the prompt's do not. A side longer than `max_length` tokens is truncated (kept
from the start), so a pair takes at most twice `max_length`. A pair whose answers have no
token left, or whose answers are the same up to the cut (they differ only past it, and so
teach nothing), is dropped and counted (`cut_pairs`, `same_after_cut_pairs`).

Batching: a pair is one unit (`PairSample`): its chosen and rejected sequences always go
into the same micro-batch, in that order, so one forward pass scores both. Packed mode
puts pairs into bins of 2 x `max_length` tokens by best-fit decreasing (the same planner
as SFT rows, `trainer.data.plan_micro_batches`), each sequence with its own positions and
`cu_seqlens` boundary, so no sequence attends to another; padded mode pads every sequence
to the longest of the micro-batch. `PairBatch.seq_index` says which sequence (2i chosen,
2i + 1 rejected of the batch's i-th pair) each position belongs to.

Shared prompts (packed mode, models whose every layer is softmax attention;
`trainer.shared.arch.shares_prompts`): chosen and rejected begin with the same tokens (the
rendered prompt, often more), and a causal model computes those tokens the same way for
both. So a pair is laid out once as [shared prefix][chosen tail][rejected tail]: the
rejected tail attends to the shared prefix and to itself, not to the chosen tail
(`trainer.kernels`), with the positions the rejected sequence has on its own. Every answer
token keeps its own prediction (`PairBatch.pick`: the position whose output predicts it,
which for the first token after the prefix is the prefix's last, for both answers), so
the log-probabilities are those of the two sequences computed apart, from fewer tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import data as D
from trainer.shared.errors import BadInput
from trainer.shared.tokens import answer_token_masks

Messages = list[dict[str, str]]
_MAX_REPORTED = 5


@dataclass
class PairRow:
    prompt: Messages
    chosen: Messages
    rejected: Messages


def _messages(value: Any, what: str) -> tuple[Messages | None, str | None]:
    if not isinstance(value, list) or not value:
        return None, f"'{what}' must be a non-empty list of messages"
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in D.ROLES:
            return None, f"{what}[{j}] needs a role (one of {', '.join(D.ROLES)})"
        if not isinstance(m.get("content"), str):
            return None, f"{what}[{j}].content must be a string"
        out.append({"role": m["role"], "content": m["content"]})
    return out, None


def check_pair(obj: Any) -> tuple[PairRow | None, str | None]:
    """A normalised preference row as a `PairRow`, or what is wrong with it."""
    if not isinstance(obj, dict) or not {"prompt", "chosen", "rejected"} <= set(obj):
        return None, "expected an object with 'prompt', 'chosen' and 'rejected' message lists"
    parts = {}
    for key in ("prompt", "chosen", "rejected"):
        msgs, problem = _messages(obj[key], key)
        if problem:
            return None, problem
        parts[key] = msgs
    if parts["prompt"][-1]["role"] == "assistant":
        return None, "the prompt ends with an assistant message: the answer must come next"
    for key in ("chosen", "rejected"):
        if parts[key][0]["role"] != "assistant" or not parts[key][0]["content"].strip():
            return None, f"'{key}' must start with a non-empty assistant message"
    if parts["chosen"] == parts["rejected"]:
        return None, "'chosen' and 'rejected' are identical: nothing to prefer"
    return PairRow(**parts), None


def read_checked(
    path: Path, what: str, check: Callable[[Any], tuple[Any, str | None]], kind: str, fix: str
) -> list[Any]:
    """Every row of a JSONL file that `check(obj) -> (row, problem)` accepts; raises
    `BadInput` naming the first bad rows ("<what> data has N invalid <kind> row(s)", `fix`)."""
    rows: list[Any] = []
    errors: list[str] = []
    n_bad = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise BadInput(f"{what} data is not UTF-8 text ({e.reason})") from e
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row, problem = check(json.loads(line))
        except json.JSONDecodeError as e:
            row, problem = None, f"not valid JSON ({e.msg})"
        if row is None:
            n_bad += 1
            if len(errors) < _MAX_REPORTED:
                errors.append(f"row {lineno}: {problem}")
            continue
        rows.append(row)
    if n_bad:
        raise BadInput(f"{what} data has {n_bad} invalid {kind} row(s): " + "; ".join(errors), fix)
    return rows


def read_pairs(path: Path, what: str) -> list[PairRow]:
    """Every pair of a preference file; raises `BadInput` naming the first bad rows."""
    pairs = read_checked(
        path,
        what,
        check_pair,
        "preference",
        "DPO and ORPO train on preference rows (prompt, chosen, rejected); fix or remove "
        "these rows and upload the dataset again",
    )
    if not pairs:
        raise BadInput(f"{what} data has no rows", "upload a dataset with at least one pair")
    return pairs


@dataclass
class PairSample:
    """One pair as two samples; `ref` is the reference's log-probabilities (DPO)."""

    chosen: D.Sample
    rejected: D.Sample
    row: int
    ref: tuple[float, float] | None = None
    shared: int = 0  # leading tokens laid out once for both sides (`share_prompts`)

    def __len__(self) -> int:
        return len(self.chosen) + len(self.rejected) - self.shared

    @property
    def n_loss(self) -> int:
        return self.chosen.n_loss + self.rejected.n_loss


@dataclass
class PairStats:
    rows: int = 0
    pairs: int = 0
    tokens: int = 0
    answer_tokens: int = 0
    truncated_pairs: int = 0
    truncated_examples: list[int] = field(default_factory=list)
    cut_pairs: int = 0  # an answer with no token left after the cut
    same_after_cut_pairs: int = 0  # answers identical up to the cut
    dropped_examples: list[int] = field(default_factory=list)
    max_length: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "pairs": self.pairs,
            "tokens": self.tokens,
            "answer_tokens": self.answer_tokens,
            "truncated_pairs": self.truncated_pairs,
            "truncated_pair_examples": self.truncated_examples,
            "dropped_pairs_no_answer_left": self.cut_pairs,
            "dropped_pairs_same_after_cut": self.same_after_cut_pairs,
            "dropped_pair_examples": self.dropped_examples,
            "max_length": self.max_length,
        }


def _side(ids: list[int], mask: list[bool], row: int, max_length: int) -> D.Sample:
    ids, mask = ids[:max_length], mask[:max_length]
    targets = [ids[t + 1] if mask[t + 1] else D.IGNORE for t in range(len(ids) - 1)] + [D.IGNORE]
    return D.Sample(ids, targets, sum(1 for x in targets if x != D.IGNORE), row)


def _answer(s: D.Sample) -> list[int]:
    return [x for x in s.targets if x != D.IGNORE]


def tokenize_pairs(
    tokenizer: Any, pairs: list[PairRow], max_length: int
) -> tuple[list[PairSample], PairStats]:
    """Samples of every usable pair, and the counts of what was cut or dropped."""
    prompts = [p.prompt for p in pairs]
    chosen = answer_token_masks(tokenizer, prompts, [p.chosen for p in pairs])
    rejected = answer_token_masks(tokenizer, prompts, [p.rejected for p in pairs])
    stats = PairStats(rows=len(pairs), max_length=max_length)
    samples: list[PairSample] = []
    for i, ((c_ids, c_mask), (r_ids, r_mask)) in enumerate(zip(chosen, rejected, strict=True)):
        row = i + 1
        c, r = _side(c_ids, c_mask, row, max_length), _side(r_ids, r_mask, row, max_length)
        if max(len(c_ids), len(r_ids)) > max_length:
            stats.truncated_pairs += 1
            if len(stats.truncated_examples) < _MAX_REPORTED:
                stats.truncated_examples.append(row)
        if not c.n_loss or not r.n_loss or _answer(c) == _answer(r):
            if not c.n_loss or not r.n_loss:
                stats.cut_pairs += 1
            else:
                stats.same_after_cut_pairs += 1
            if len(stats.dropped_examples) < _MAX_REPORTED:
                stats.dropped_examples.append(row)
            continue
        samples.append(PairSample(c, r, row))
        stats.tokens += len(c) + len(r)
        stats.answer_tokens += c.n_loss + r.n_loss
    stats.pairs = len(samples)
    if not samples:
        raise BadInput(
            f"no pair has answers that differ within max_length {max_length}",
            "raise max_length or shorten the prompts",
        )
    return samples, stats


def load_pairs(
    spec: Any, tokenizer: Any, work: Path
) -> tuple[list[PairSample], list[PairSample], dict[str, Any]]:
    """Train and eval pairs (an eval file, or a share of the train rows), and the dataset
    facts for the `started` event (as `trainer.setup.load_data` for SFT rows)."""
    data, max_length = spec.data, spec.training.max_length
    train_file = D.fetch(data.train_url, data.train_path, work / "train.jsonl", "train")
    samples, stats = tokenize_pairs(tokenizer, read_pairs(train_file, "train"), max_length)
    dataset: dict[str, Any] = {"kind": "preference", "train": stats.as_dict()}
    if data.eval_url or data.eval_path:
        eval_file = D.fetch(data.eval_url, data.eval_path, work / "eval.jsonl", "eval")
        eval_samples, eval_stats = tokenize_pairs(
            tokenizer, read_pairs(eval_file, "eval"), max_length
        )
        dataset["eval"] = eval_stats.as_dict()
        train_samples = samples
    else:
        train_samples, eval_samples = D.split_eval(samples, data.eval_fraction, spec.training.seed)
    dataset["train_samples"], dataset["eval_samples"] = len(train_samples), len(eval_samples)
    return train_samples, eval_samples, dataset


def share_prompts(samples: list[PairSample]) -> int:
    """Set each pair's `shared` to the tokens its two sides begin with (at least one token
    of each side is left to it); returns the tokens saved."""
    saved = 0
    for s in samples:
        c, r = s.chosen.input_ids, s.rejected.input_ids
        limit, k = min(len(c), len(r)) - 1, 0
        while k < limit and c[k] == r[k]:
            k += 1
        s.shared = k
        saved += k
    return saved


@dataclass
class PairBatch(D.SharedPromptBatch):
    """A micro-batch of pairs: `seq_index` has the shape of `targets` (-1 on padding).

    With shared prompts, `pick` / `pick_targets` / `pick_seq` list each answer token: the
    flattened position whose output predicts it, the token, and its sequence (2i, 2i + 1);
    `layout` gives each pair's (start, shared, chosen tail, rejected tail) in the row."""

    seq_index: Any = None
    n_pairs: int = 0
    n_chosen_loss: int = 0  # the chosen answers' tokens (ORPO's cross-entropy)
    ref: Any = None  # [n_pairs, 2] float32 reference log-probs, or None (ORPO)
    pick_seq: Any = None


def _collate_shared(samples: list[PairSample], idx: list[int], device: Any) -> PairBatch:
    """The pairs `idx` as one row of [shared][chosen tail][rejected tail] per pair."""
    import torch

    ids: list[int] = []
    pos: list[int] = []
    layout, pick, pick_targets, pick_seq = [], [], [], []
    for j, i in enumerate(idx):
        c, r, k = samples[i].chosen, samples[i].rejected, samples[i].shared
        start = len(ids)
        ids += c.input_ids + r.input_ids[k:]
        pos += [*range(len(c)), *range(k, len(r))]
        layout.append((start, k, len(c) - k, len(r) - k))
        r_tail = start + len(c) - k  # where the rejected side's position k is
        for seq, side, tail in ((2 * j, c, start), (2 * j + 1, r, r_tail)):
            for t, y in enumerate(side.targets):
                if y != D.IGNORE:
                    pick.append(start + t if t < k else tail + t)
                    pick_targets.append(y)
                    pick_seq.append(seq)
    return PairBatch.laid_out(
        ids,
        pos,
        pick,
        pick_targets,
        layout,
        device,
        n_pairs=len(idx),
        n_chosen_loss=sum(samples[i].chosen.n_loss for i in idx),
        ref=_refs(samples, idx, device),
        pick_seq=torch.tensor(pick_seq, device=device),
    )


def _refs(samples: list[PairSample], idx: list[int], device: Any) -> Any:
    import torch

    refs = [samples[i].ref for i in idx]
    if any(r is None for r in refs):
        return None
    return torch.tensor(refs, dtype=torch.float32, device=device)


def collate_pairs(
    samples: list[PairSample],
    idx: list[int],
    *,
    packed: bool,
    pad_id: int,
    device: Any,
    share: bool = False,
) -> PairBatch:
    """The pairs `idx` as one micro-batch: chosen then rejected of each pair, in order;
    `share` (packed only): each pair's shared prefix laid out once (module docstring)."""
    import torch

    if share and packed:
        return _collate_shared(samples, idx, device)
    seqs = [s for i in idx for s in (samples[i].chosen, samples[i].rejected)]
    base = D.collate(seqs, list(range(len(seqs))), packed=packed, pad_id=pad_id, device=device)
    if packed:
        index = [k for k, s in enumerate(seqs) for _ in range(len(s))]
        seq_index = torch.tensor([index], device=device)
    else:
        width = base.input_ids.shape[1]
        rows = [[k] * len(s) + [-1] * (width - len(s)) for k, s in enumerate(seqs)]
        seq_index = torch.tensor(rows, device=device)
    n_chosen = sum(samples[i].chosen.n_loss for i in idx)
    return PairBatch(
        **vars(base),
        seq_index=seq_index,
        n_pairs=len(idx),
        n_chosen_loss=n_chosen,
        ref=_refs(samples, idx, device),
    )
