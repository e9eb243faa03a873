"""Datasets: detect, validate, normalise, measure and store fine-tuning data.

One job per module:

- `records`: what every reader yields (`Record`, `Problem`) and the pieces readers share.
- `formats`: detecting the file format and reading JSONL, JSON (an object holding the
  rows), CSV/TSV with a header and Parquet as a stream of records, each with its problem
  when it cannot be read; `json_array`: the streaming reader of a JSON array.
- `layouts`: detecting the layout (OpenAI `messages`, ShareGPT `conversations`, Alpaca,
  `prompt`/`completion`, `text`) and normalising a row to chat `messages` or `text`.
- `tokens`: the chosen model's tokenizer and token statistics, counted as the trainer does.
- `ingest`: the streaming pass over a file (`process_file`, `inspect_file`) and its
  `Report`: problems per kind, duplicates, the train/eval split, tokens, samples.
- `service`: stored datasets (add, list, get, rename, delete, preview) over storage and
  the database.

Public API (re-exported here): `inspect_file`, `add_dataset`, `list_datasets`,
`get_dataset`, `rename_dataset`, `delete_dataset`, `preview_rows`, `eval_key`,
`no_eval_split_reason`,
`name_from_filename`, `load_tokenizer`, `token_statistics`, `TokenizerChoice`, `Report`.
Errors: `DatasetUnusable` (with the `report`) when a file cannot be used or has bad rows
and the caller chose to reject them; `InvalidInput` for bad arguments; `NotFound`/`Conflict`
from `core.db.repo`.
"""

from core.datasets.ingest import Report, inspect_file
from core.datasets.service import (
    add_dataset,
    delete_dataset,
    eval_key,
    get_dataset,
    list_datasets,
    name_from_filename,
    no_eval_split_reason,
    preview_rows,
    rename_dataset,
)
from core.datasets.tokens import TokenizerChoice, load_tokenizer, token_statistics

__all__ = [
    "Report",
    "TokenizerChoice",
    "add_dataset",
    "delete_dataset",
    "eval_key",
    "get_dataset",
    "inspect_file",
    "list_datasets",
    "load_tokenizer",
    "name_from_filename",
    "no_eval_split_reason",
    "preview_rows",
    "rename_dataset",
    "token_statistics",
]
