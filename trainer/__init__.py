"""BrightRun's GPU worker: turns a `trainer.shared.spec.JobSpec` into a LoRA/QLoRA adapter.

Entry points: `trainer.handler.handler` (RunPod Serverless generator handler),
`python -m trainer --spec job.json` (the same, locally, events as JSON lines), and
`trainer.actions.run_job` (one job of any action as a generator of `Event`s).
Imports nothing from `core`. `trainer.shared` holds the torch-free modules the controller
may import (see `trainer.shared`).
"""
