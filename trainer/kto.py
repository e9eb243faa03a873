"""KTO data: single answers labelled desirable or undesirable; read, validate, tokenise, batch.

Input: normalised KTO JSONL (what `core.datasets.kto` writes), one answer per line:

    {"prompt": [{"role", "content"}, ...], "completion": [messages], "label": bool}

The prompt is a non-empty conversation that does not end with an assistant message; the
completion is a non-empty list of messages starting with a non-empty assistant message;
`label` is a boolean (true: desirable). A row with tools, tool calls or reasoning is
refused (KTO reads each message's role and text). Any other shape raises `BadInput` naming the file,
the row and the field; so does train data whose answers are all of one label or that has
fewer than two rows (the KL estimate pairs each prompt with another row's answer).

Each row is rendered with the chat template and tokenised as a preference side
(`trainer.shared.tokens.answer_token_masks`, kept from the start up to `max_length`; a row
whose answer has no token left is dropped and counted). Each row also gets its mismatched
sequence, for the KL estimate of KTO (as TRL's `KTOTrainer`): its prompt with the answer
of the row before it (the first row takes the last row's answer), in file order.

Batching: a row is one unit (`KtoSample`), planned by its own sequence's length like an
SFT row; `collate_kto` gives a `KtoBatch`: the rows' sequences (with gradients), and the
mismatched sequences as their own batch (`kl`, scored without gradients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import data as D
from trainer.preference import _messages, _side, read_checked
from trainer.shared.errors import BadInput
from trainer.shared.tokens import answer_token_masks

Messages = list[dict[str, str]]
_MAX_REPORTED = 5


@dataclass
class KtoRow:
    prompt: Messages
    completion: Messages
    label: bool


def check_row(obj: Any) -> tuple[KtoRow | None, str | None]:
    """A normalised KTO row as a `KtoRow`, or what is wrong with it."""
    if not isinstance(obj, dict) or not {"prompt", "completion", "label"} <= set(obj):
        return None, "expected an object with 'prompt' and 'completion' message lists and 'label'"
    if obj.get("tools") or any(
        isinstance(m, dict) and (m.get("tool_calls") or m.get("reasoning_content"))
        for key in ("prompt", "completion")
        for m in (obj[key] if isinstance(obj[key], list) else [])
    ):
        return (
            None,
            "KTO reads each message's role and text: tools, calls and reasoning are not trained",
        )
    if not isinstance(obj["label"], bool):
        return None, "'label' must be true (desirable) or false (undesirable)"
    prompt, problem = _messages(obj["prompt"], "prompt")
    if problem:
        return None, problem
    completion, problem = _messages(obj["completion"], "completion")
    if problem:
        return None, problem
    assert prompt is not None and completion is not None
    if prompt[-1]["role"] == "assistant":
        return None, "the prompt ends with an assistant message: the answer must come next"
    if completion[0]["role"] != "assistant" or not completion[0]["content"].strip():
        return None, "'completion' must start with a non-empty assistant message"
    return KtoRow(prompt, completion, obj["label"]), None


def read_rows(path: Path, what: str) -> list[KtoRow]:
    """Every row of a KTO file; raises `BadInput` naming the first bad rows."""
    rows = read_checked(
        path,
        what,
        check_row,
        "KTO",
        "KTO trains on labelled answers (prompt, completion, label); fix or remove these "
        "rows and upload the dataset again",
    )
    if not rows or (what == "train" and len(rows) < 2):
        raise BadInput(
            f"{what} data has {len(rows)} row(s); KTO trains on at least two",
            "KTO's KL estimate pairs each prompt with another row's answer: add rows",
        )
    return rows


@dataclass
class KtoSample:
    """One labelled answer; `kl` is its prompt with another row's answer; `ref` is the
    reference's log-probabilities of (the answer, the mismatched answer)."""

    seq: D.Sample
    kl: D.Sample
    label: bool
    row: int
    ref: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def n_loss(self) -> int:
        return self.seq.n_loss


@dataclass
class KtoStats:
    rows: int = 0
    desirable: int = 0
    undesirable: int = 0
    tokens: int = 0
    answer_tokens: int = 0
    truncated_rows: int = 0
    dropped_rows: int = 0
    dropped_examples: list[int] = field(default_factory=list)
    max_length: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "desirable": self.desirable,
            "undesirable": self.undesirable,
            "tokens": self.tokens,
            "answer_tokens": self.answer_tokens,
            "truncated_rows": self.truncated_rows,
            "dropped_rows_no_answer_left": self.dropped_rows,
            "dropped_row_examples": self.dropped_examples,
            "max_length": self.max_length,
        }


def tokenize_rows(
    tokenizer: Any, rows: list[KtoRow], max_length: int
) -> tuple[list[KtoSample], KtoStats]:
    """Samples of every usable row (with its mismatched sequence), and what was cut."""
    prompts = [r.prompt for r in rows]
    answers = [r.completion for r in rows]
    matched = answer_token_masks(tokenizer, prompts, answers)
    mismatched = answer_token_masks(tokenizer, prompts, answers[-1:] + answers[:-1])
    stats = KtoStats(rows=len(rows), max_length=max_length)
    samples: list[KtoSample] = []
    for i, ((ids, mask), (kl_ids, kl_mask)) in enumerate(zip(matched, mismatched, strict=True)):
        row = i + 1
        seq, kl = _side(ids, mask, row, max_length), _side(kl_ids, kl_mask, row, max_length)
        stats.truncated_rows += len(ids) > max_length
        if not seq.n_loss or not kl.n_loss:
            stats.dropped_rows += 1
            if len(stats.dropped_examples) < _MAX_REPORTED:
                stats.dropped_examples.append(row)
            continue
        samples.append(KtoSample(seq, kl, rows[i].label, row))
        stats.tokens += len(seq)
        stats.answer_tokens += seq.n_loss
    stats.desirable = sum(s.label for s in samples)
    stats.undesirable = len(samples) - stats.desirable
    if not samples:
        raise BadInput(
            f"no row has an answer within max_length {max_length}",
            "raise max_length or shorten the prompts",
        )
    return samples, stats


def load_kto(
    spec: Any, tokenizer: Any, work: Path
) -> tuple[list[KtoSample], list[KtoSample], dict[str, Any]]:
    """Train and eval rows (an eval file, or a share of the train rows), and the dataset
    facts for the `started` event (as `trainer.preference.load_pairs`)."""
    data, max_length = spec.data, spec.training.max_length
    train_file = D.fetch(data.train_url, data.train_path, work / "train.jsonl", "train")
    samples, stats = tokenize_rows(tokenizer, read_rows(train_file, "train"), max_length)
    if not stats.desirable or not stats.undesirable:
        raise BadInput(
            f"every KTO answer in the train data is {'un' * (not stats.desirable)}desirable",
            "KTO learns from both kinds: add answers with the other label",
        )
    dataset: dict[str, Any] = {"kind": "labelled", "train": stats.as_dict()}
    if data.eval_url or data.eval_path:
        eval_file = D.fetch(data.eval_url, data.eval_path, work / "eval.jsonl", "eval")
        eval_samples, eval_stats = tokenize_rows(
            tokenizer, read_rows(eval_file, "eval"), max_length
        )
        dataset["eval"] = eval_stats.as_dict()
        train_samples = samples
    else:
        train_samples, eval_samples = D.split_eval(samples, data.eval_fraction, spec.training.seed)  # type: ignore[arg-type]
    dataset["train_samples"], dataset["eval_samples"] = len(train_samples), len(eval_samples)
    return train_samples, eval_samples, dataset  # type: ignore[return-value]


@dataclass
class KtoBatch(D.Batch):
    """A micro-batch of labelled answers: the batch is their sequences; `kl` the batch of
    their mismatched sequences; `seq_index` / `kl_index` say which row each position is."""

    seq_index: Any = None
    kl: D.Batch | None = None
    kl_index: Any = None
    labels: Any = None  # [n_rows] bool
    ref: Any = None  # [n_rows, 2] float32 reference log-probs, or None before the pass
    n_rows: int = 0


def _index(seqs: list[D.Sample], packed: bool, width: int, device: Any) -> Any:
    import torch

    if packed:
        return torch.tensor([[k for k, s in enumerate(seqs) for _ in range(len(s))]], device=device)
    rows = [[k] * len(s) + [-1] * (width - len(s)) for k, s in enumerate(seqs)]
    return torch.tensor(rows, device=device)


def collate_kto(
    samples: list[KtoSample], idx: list[int], *, packed: bool, pad_id: int, device: Any
) -> KtoBatch:
    """The rows `idx` as one micro-batch (see the module docstring)."""
    import torch

    seqs = [samples[i].seq for i in idx]
    kls = [samples[i].kl for i in idx]
    every = list(range(len(idx)))
    base = D.collate(seqs, every, packed=packed, pad_id=pad_id, device=device)
    kl = D.collate(kls, every, packed=packed, pad_id=pad_id, device=device)
    refs = [samples[i].ref for i in idx]
    return KtoBatch(
        **vars(base),
        seq_index=_index(seqs, packed, base.input_ids.shape[1], device),
        kl=kl,
        kl_index=_index(kls, packed, kl.input_ids.shape[1], device),
        labels=torch.tensor([samples[i].label for i in idx], device=device),
        ref=None
        if any(r is None for r in refs)
        else torch.tensor(refs, dtype=torch.float32, device=device),
        n_rows=len(idx),
    )
