"""BrightRun's GPU worker: turns a `trainer.shared.spec.JobSpec` into a LoRA/QLoRA adapter.

Entry points: `trainer.handler.handler` (RunPod Serverless generator handler),
`python -m trainer --spec job.json` (the same, locally, events as JSON lines), and
`trainer.actions.run_job` (one job of any action as a generator of `Event`s).

Layout, top to bottom:

- `handler`, `__main__`: the edges (RunPod, command line); read the environment (`env`).
- `actions`: validates a payload (the one place) and runs its action: `train`
  (`train.run_training`: setup -> train -> save -> deliver -> cleanup), `merge` (`merge`),
  `cache_model` (`cache_action`, over the model cache `cache`). `report` builds what every job reports (redacted config,
  `started` and `failed` data, the uploaded event log).
- training: `setup` (model, data, optimizer, plan), `checkpoint` (progress, save, resume),
  `loop` (the optimizer steps, evaluation, the loss), `data` (rows, samples, batches),
  `model` (loading, LoRA), `arch_hooks`, `moe/`, `expert_lora`, `packing_hybrid`,
  `kernels`, `memory`; `output` (event log, uploads, copies).
- `shared/`: the torch-free modules the controller may import (see `trainer.shared`).

Imports nothing from `core`.
"""
