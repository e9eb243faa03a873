"""The part of the trainer the controller may use: torch-free modules, shared on purpose.

The rule: `core` (and `components`, `pages`, `cli`) may import `trainer.shared` and its
modules, and nothing else of `trainer`. Every module here imports no torch, transformers,
peft or bitsandbytes at import time, and imports nothing of `trainer` outside
`trainer.shared` (and nothing of `core`).

- `trainer.shared.spec`: the contract. `JobSpec` (what the controller sends), `Event`
  (what the worker reports), `SPEC_VERSION`, the event types and failure kinds.
- `trainer.shared.export_spec`: the `merge` and `gguf` jobs' sections (which adapter,
  what to make of it).
- `trainer.shared.files`: the names of the files a worker writes (the keys of
  `OutputSpec.upload_urls`), `upload_names` for a merge's shards, `gguf_names` for a GGUF
  export's files.
- `trainer.shared.gguf_write` and `trainer.shared.modelfile`: the GGUF writer (the `gguf`
  library's writer and tensor names, llama.cpp's quantiser) and the Ollama Modelfile, which
  the controller's export and the worker's `gguf` action both use; `gguf` and `llama_cpp`
  are imported when called.
- `trainer.shared.errors`: the typed failures (`BadInput`, ...), each with its failure
  kind, and `describe_failure`.
- `trainer.shared.tokens`: how a row becomes tokens (chat loss masks, text ids, windows),
  so the controller's dataset statistics count what the trainer will train on.
- `trainer.shared.arch`: what each architecture can do (`ArchCaps`), bits per quantised
  parameter; the planner and the trainer read the same table.
- `trainer.shared.moe_facts`: MoE parameter and NF4 byte counts from a config.
- `trainer.shared.tiny`: builds the tiny random Qwen2 chat model the local setup and the
  tests use (`python -m trainer.shared.tiny OUT_DIR`); torch is imported when it is called.

`local/` (the local stand-ins for RunPod and vLLM) runs the trainer's own stack and may use
more of it (`trainer.handler`, `trainer.model.load_adapter`, `trainer.expert_lora`).
"""
