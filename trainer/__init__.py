"""BrightRun's GPU worker: turns a `trainer.spec.JobSpec` into a LoRA/QLoRA adapter.

Entry points: `trainer.handler.handler` (RunPod Serverless generator handler),
`python -m trainer --spec job.json` (the same, locally, events as JSON lines), and
`trainer.train.run_job` (the lifecycle as a generator of `trainer.spec.Event`).
Imports nothing from `core`; `trainer.spec` and `trainer.arch` import no torch.
"""
