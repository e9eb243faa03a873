"""A RunPod Serverless queue endpoint on loopback, running the trainer's handler locally.

It speaks the subset of RunPod's endpoint API that `core.clients.runpod.RunPodClient` uses, under
`/v2/<endpoint-id>` (default `/v2/local`): `POST /run`, `GET /status/{id}`,
`GET /stream/{id}`, `POST /cancel/{id}`, `POST /retry/{id}`, `GET /health`, with the same
JSON shapes, statuses (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT),
`delayTime`/`executionTime` in ms, and `Authorization: Bearer <key>` checked on every call.

Semantics, matched to RunPod's documentation:
- Jobs wait in a FIFO queue for one of `workers` slots. Each job runs in a fresh process
  (like a worker with `refresh_worker`), so cancel and timeout can kill it (its whole
  process group) without touching other jobs. The process imports the handler, then
  reports ready: that moment is IN_PROGRESS. `delayTime` = submission to ready (queue
  plus cold start), `executionTime` = ready to end.
- Each job runs under runpod-python's own worker loop (`local.worker`: `rp_scale`,
  `rp_job.handle_job`, `run_job_generator`, `run_job`), so its results are what RunPod
  records: a generator handler's yielded values are stream chunks (`/stream` returns those
  not yet returned by an earlier `/stream` call; when the job completes, `output` is the
  list of all of them, `return_aggregate_stream`), a plain handler's return value is
  `output`. An exception, or a yielded/returned dict with a truthy `error`, makes the job
  FAILED with runpod-python's `error` (a JSON string with `error_type`/`error_message`/
  `error_traceback` for a plain handler's exception, a plain string otherwise) and no
  `output`.
- `policy.executionTimeout` (ms; default 600000, as on RunPod) kills a running job and
  marks it TIMED_OUT; `policy.ttl` (ms; default 24 h) bounds a job's whole life from
  submission: when it passes the job is deleted, queued, running (its worker is killed) or
  finished, and every job path answers 404 (RunPod deletes such a job the same way).
- `/cancel` kills a queued or running job (CANCELLED); `/retry` requeues a FAILED or
  TIMED_OUT job under the same id with the same input, clearing its previous output.
- A finished job is kept `retention_s` (default 30 minutes, RunPod's `/run` retention)
  after it ends, then forgotten: every job path answers 404.

The same server mounts the local file store's signed-URL routes (`/files/...`) when
`local.files` is available, so the worker's signed dataset and upload URLs work.

`python -m local.endpoint [--handler module:function] [--workers N] [--retention-s S]`
reads host, port and endpoint id from `GPU_CLUSTER_API_URL` (settings), the key from
`GPU_CLUSTER_API_KEY`. Access logs are off: signed file URLs are credentials.
"""

from local.endpoint.jobs import DEFAULT_HANDLER, LocalEndpoint, LocalJob
from local.endpoint.server import build_app, main, worker_env

__all__ = ["DEFAULT_HANDLER", "LocalEndpoint", "LocalJob", "build_app", "main", "worker_env"]
