"""One training job as a fixed lifecycle: setup -> train -> save -> upload -> cleanup.

`run_training(spec, env, t0)` takes a validated spec (`trainer.actions.run_job` validates
payloads) and is a generator of `trainer.shared.spec.Event`s, numbered by `seq`:
`started` once setup is done, `metrics` every `log_every` optimizer steps (and after each
evaluation), `checkpoint` after each checkpoint, then exactly one `completed` or `failed`
as the last event. It never raises for a job that fails: the failure becomes the final
event (kind decided by exception type, see `trainer.shared.errors`).

Setup fails fast, in this order: checkpoint folder (earlier attempts'
events and checkpoint), base model files (cache, then hub), tokenizer, dataset
(download, row validation, tokenisation), model load (quantisation, LoRA), resume.

Training: AdamW on the LoRA weights, the spec's scheduler and warmup, gradient clipping,
loss averaged over the loss-bearing tokens of each optimizer step (all its micro-batches
together). The loss is computed on loss-bearing positions only, in chunks
(`trainer.kernels`). A non-finite loss or gradient norm stops the job before the
optimizer applies it (`diverged`). `time_limit_s` (seconds of training in this attempt)
stops it after the current step; it then saves, uploads and ends `completed` with reason
`time_limit`.

Checkpoints (every `checkpoint_every` steps) go to `CHECKPOINT_DIR/<job id>/step-N`:
LoRA weights, optimizer, scheduler, RNG states and counters; the data position follows
from the step number, because each epoch's batch order is a function of the seed. A job
started again with the same id continues from the latest checkpoint and continues the
event numbering. The checkpoint folder is removed once the job completed and its files
were delivered.

Output: a PEFT adapter folder (`adapter_config.json` naming the base model as given in
the spec, `adapter_model.safetensors`) plus `brightrun.json` (spec without URLs, summary,
metrics); uploaded to `spec.output.upload_urls` by file name, copied to
`ADAPTER_DIR/<adapter name>` and to `spec.output.local_dir` when set. `events.jsonl` and
`result.json` are uploaded at the end, also after a failure.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer import data as D
from trainer.env import WorkerEnv
from trainer.loss import batch_loss_sum
from trainer.output import EventLog, copy_folder, folder_files, upload_files
from trainer.report import failure_data, public_config, started_data, upload_event_log
from trainer.shared.errors import BadInput, Diverged
from trainer.shared.spec import SPEC_VERSION, Event, JobSpec

log = logging.getLogger("brightrun.trainer")



def peak_memory(device: Any | None) -> tuple[int, str]:
    import resource

    if device is not None and device.type == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "peak_rss"


class TrainingJob:
    def __init__(self, spec: JobSpec, env: WorkerEnv, started_at: float) -> None:
        self.spec = spec
        self.env = env
        self.t0 = started_at
        self.ckpt_root = env.checkpoint_dir / spec.job_id
        self.log = EventLog(self.ckpt_root / "events.jsonl", spec.first_seq)
        self.work = Path(tempfile.mkdtemp(prefix=f"brightrun-{spec.job_id}-"))
        self.loaded: Any = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.step = 0
        self.tokens_loss = 0
        self.tokens_total = 0
        self.train_seconds = 0.0  # across attempts
        self.metrics: list[dict[str, Any]] = []
        self.last_eval: float | None = None
        self.stop_reason = "finished"
        self.resumed_from: int | None = None

    # ---------------------------------------------------------------- setup
    def setup(self) -> Event:
        from trainer.model import load_for_training, load_tokenizer, resolve_model_path

        spec, t = self.spec, self.spec.training
        path, source = resolve_model_path(spec.model, self.env)
        tokenizer = load_tokenizer(path)
        train_file = D.fetch(spec.data.train_url, spec.data.train_path, self.work / "train.jsonl", "train")
        samples, stats = D.tokenize_rows(tokenizer, D.read_rows(train_file, "train"), t.max_length)
        eval_stats = None
        if spec.data.eval_url or spec.data.eval_path:
            eval_file = D.fetch(spec.data.eval_url, spec.data.eval_path, self.work / "eval.jsonl", "eval")
            self.eval_samples, eval_stats = D.tokenize_rows(
                tokenizer, D.read_rows(eval_file, "eval"), t.max_length
            )
            self.train_samples = samples
        else:
            self.train_samples, self.eval_samples = D.split_eval(samples, spec.data.eval_fraction, t.seed)

        import torch

        torch.manual_seed(t.seed)
        random.seed(t.seed)
        self.loaded = lm = load_for_training(spec, path, tokenizer)
        self.packed = lm.packing != "padded"
        self.pad_id = tokenizer.pad_token_id
        self._plan_recompute()
        self._plan_steps()
        self._build_optimizer()
        self._maybe_load_parent()
        self._maybe_resume()
        model_facts = dict(lm.facts, source=source, name_or_path=spec.model.name_or_path, folder=str(path))
        dataset = {"train": stats.as_dict(), "train_samples": len(self.train_samples)}
        dataset["eval_samples"] = len(self.eval_samples)
        if eval_stats is not None:
            dataset["eval"] = eval_stats.as_dict()
        return self.log.emit(
            "started",
            started_data(
                spec,
                self.env,
                self.t0,
                model=model_facts,
                dataset=dataset,
                plan=self.plan,
                resumed_from_step=self.resumed_from,
            ),
        )

    def _plan_recompute(self) -> None:
        """Decide which layers recompute their activations (see `trainer.memory`)."""
        import torch

        from trainer.memory import plan_recompute

        t, lm = self.spec.training, self.loaded
        self.recompute_fallback_used = False
        if not t.gradient_checkpointing:
            lm.facts["activation_checkpointing"] = {"layers_recomputed": 0, "reason": "off in the job's settings"}
            return
        if t.checkpoint_layers == "all":
            lm.facts["activation_checkpointing"] = {"reason": "every layer (checkpoint_layers: all)"}
            return
        vocab = lm.model.get_input_embeddings().weight.shape[0]

        def forward(n: int) -> Any:
            ids = torch.randint(0, vocab, (1, n), device=lm.device)
            targets = torch.roll(ids, -1, dims=1)
            batch = D.Batch(
                input_ids=ids,
                position_ids=torch.arange(n, device=lm.device)[None],
                targets=targets,
                attention_mask=None,
                cu_seqlens=torch.tensor([0, n], dtype=torch.int32, device=lm.device) if self.packed else None,
                max_seqlen=n,
                n_loss=n,
                n_tokens=n,
                n_slots=n,
            )
            return self._loss_sum(batch)

        devices = [lm.device] if lm.device.type == "cuda" else []
        lm.model.train()
        with torch.random.fork_rng(devices=devices):
            lm.facts["activation_checkpointing"] = plan_recompute(
                lm.model,
                forward,
                tokens_per_micro_batch=t.micro_batch_size * t.max_length,
                hidden_size=lm.model.get_input_embeddings().weight.shape[1],
                device=lm.device,
            )

    def _micro_plan(self, epoch: int | None, samples: list[D.Sample]) -> list[list[int]]:
        t = self.spec.training
        return D.plan_micro_batches(
            samples,
            packed=self.packed,
            micro_batch_size=t.micro_batch_size,
            max_length=t.max_length,
            seed=t.seed,
            epoch=epoch,
        )

    def _plan_steps(self) -> None:
        t = self.spec.training
        self.micro_per_epoch = len(self._micro_plan(0, self.train_samples))
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / t.grad_accum)
        if t.max_steps is not None:
            self.total_steps = t.max_steps
        else:
            self.total_steps = max(1, math.ceil((t.epochs or 1.0) * self.steps_per_epoch))
        loss_tokens = sum(s.n_loss for s in self.train_samples)
        self.plan = {
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "micro_batches_per_epoch": self.micro_per_epoch,
            "epochs": round(self.total_steps / self.steps_per_epoch, 4),
            "loss_tokens_per_epoch": loss_tokens,
            "avg_loss_tokens_per_step": round(loss_tokens / self.steps_per_epoch, 1),
        }
        self._epoch_cache: dict[int, list[list[int]]] = {}

    def _step_micro_batches(self, step: int) -> list[list[int]]:
        ga = self.spec.training.grad_accum
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: self._micro_plan(epoch, self.train_samples)}
        return self._epoch_cache[epoch][k * ga : (k + 1) * ga]

    def _build_optimizer(self) -> None:
        import torch
        from transformers import get_scheduler

        t = self.spec.training
        params = [p for p in self.loaded.model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.AdamW(
            params,
            lr=t.learning_rate,
            weight_decay=t.weight_decay,
            fused=self.loaded.device.type == "cuda" or None,
        )
        warmup = 0 if t.lr_scheduler == "constant" else math.ceil(t.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(
            t.lr_scheduler,
            self.optimizer,
            num_warmup_steps=warmup,
            num_training_steps=self.total_steps,
        )

    def _maybe_load_parent(self) -> None:
        src = self.spec.resume_from
        if not src:
            return
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if "://" in src:
            file = D.fetch(src, None, self.work / "parent.safetensors", "parent adapter")
        else:
            file = Path(src) / "adapter_model.safetensors"
            if not file.is_file():
                raise BadInput(f"resume_from {src!r} has no adapter_model.safetensors")
        try:
            set_peft_model_state_dict(self.loaded.model, load_file(file))
        except RuntimeError as e:  # shape mismatch: a different rank or target set
            raise BadInput(
                f"the parent adapter does not fit this job's LoRA settings: {e}",
                "use the parent's rank and target modules to continue training it",
            ) from e

    # ----------------------------------------------------------- checkpoints
    def _latest_checkpoint(self) -> Path | None:
        pointer = self.ckpt_root / "latest"
        if not pointer.is_file():
            return None
        folder = self.ckpt_root / pointer.read_text().strip()
        return folder if (folder / "state.json").is_file() else None

    def _maybe_resume(self) -> None:
        import torch
        from safetensors.torch import load_file

        folder = self._latest_checkpoint()
        if folder is None:
            return
        state = json.loads((folder / "state.json").read_text())
        if state.get("total_steps") != self.total_steps:
            raise BadInput(
                f"checkpoint of job {self.spec.job_id} was made for {state.get('total_steps')} "
                f"steps, this spec plans {self.total_steps}",
                "resume with the same settings and data, or use a new job id",
            )
        weights = load_file(folder / "trainable.safetensors")
        named = {n: p for n, p in self.loaded.model.named_parameters() if p.requires_grad}
        if set(weights) != set(named):
            raise BadInput(
                "the checkpoint's LoRA weights do not match this job's LoRA settings",
                "resume with the same settings, or use a new job id",
            )
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(weights[n].to(p.device, p.dtype))
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        rng = torch.load(folder / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])
        self.step = state["step"]
        self.tokens_loss = state["tokens_loss"]
        self.tokens_total = state["tokens_total"]
        self.train_seconds = state["train_seconds"]
        self.metrics = state["metrics"]
        self.last_eval = state.get("last_eval")
        self.resumed_from = self.step

    def _save_checkpoint(self) -> Path:
        import torch
        from safetensors.torch import save_file

        name = f"step-{self.step:07d}"
        tmp = self.ckpt_root / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        weights = {
            n: p.detach().to("cpu").contiguous()
            for n, p in self.loaded.model.named_parameters()
            if p.requires_grad
        }
        save_file(weights, tmp / "trainable.safetensors")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(
            {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "python": random.getstate(),
            },
            tmp / "rng.pt",
        )
        state = {
            "step": self.step,
            "total_steps": self.total_steps,
            "tokens_loss": self.tokens_loss,
            "tokens_total": self.tokens_total,
            "train_seconds": self.train_seconds,
            "metrics": self.metrics,
            "last_eval": self.last_eval,
        }
        (tmp / "state.json").write_text(json.dumps(state))
        final = self.ckpt_root / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        (self.ckpt_root / "latest.tmp").write_text(name)
        (self.ckpt_root / "latest.tmp").replace(self.ckpt_root / "latest")
        for old in self.ckpt_root.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    # -------------------------------------------------------------- training
    def _loss_sum(self, batch: D.Batch) -> Any:
        lm = self.loaded
        return batch_loss_sum(lm.model, batch, lm.device, lm.compute_dtype)

    def evaluate(self) -> float | None:
        import torch

        if not self.eval_samples:
            return None
        # Only dropout is switched off: bitsandbytes' CPU 4-bit layers repack their weights
        # for inference, irreversibly, when put into eval mode, which breaks training after.
        dropouts = [m for m in self.loaded.model.modules() if isinstance(m, torch.nn.Dropout)]
        for m in dropouts:
            m.eval()
        total, n = 0.0, 0
        try:
            with torch.no_grad():
                for idx in self._micro_plan(None, self.eval_samples):
                    batch = D.collate(
                        self.eval_samples, idx, packed=self.packed, pad_id=self.pad_id,
                        device=self.loaded.device,
                    )
                    total += float(self._loss_sum(batch))
                    n += batch.n_loss
        finally:
            for m in dropouts:
                m.train()
        return total / max(n, 1)

    def _forward_backward(self, batches: list[D.Batch], n_loss: int) -> Any:
        import torch

        step_loss = torch.zeros((), device=self.loaded.device)
        for b in batches:
            loss = self._loss_sum(b) / n_loss
            if self.env.force_nan_at_step == self.step + 1:
                loss = loss * float("nan")
            loss.backward()
            step_loss += loss.detach()
        return step_loss

    def _fall_back_to_recompute_all(self) -> str | None:
        """After an out-of-memory step with some layers kept: recompute all, once."""
        import torch

        from trainer.memory import recompute_all

        facts = self.loaded.facts.get("activation_checkpointing", {})
        if self.recompute_fallback_used or not facts.get("layers") or (
            facts.get("layers_recomputed") == facts.get("layers")
        ):
            return None
        self.recompute_fallback_used = True
        self.optimizer.zero_grad(set_to_none=True)
        n = recompute_all(self.loaded.model)
        gc.collect()
        if self.loaded.device.type == "cuda":
            torch.cuda.empty_cache()
        log.warning("step %d ran out of memory; recomputing all %d layers", self.step + 1, n)
        return f"ran out of memory with some layers kept; all {n} layers are recomputed from now on"

    def train(self) -> Iterator[Event]:
        import torch

        t = self.spec.training
        lm = self.loaded
        model = lm.model
        model.train()
        attempt_start = time.monotonic()
        step_seconds = 0.0
        attempt_tokens_loss = attempt_tokens_total = 0
        base_train_seconds = self.train_seconds
        if lm.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(lm.device)
        while self.step < self.total_steps:
            if t.time_limit_s is not None and time.monotonic() - attempt_start >= t.time_limit_s:
                self.stop_reason = "time_limit"
                break
            s0 = time.monotonic()
            micro = self._step_micro_batches(self.step)
            batches = [
                D.collate(self.train_samples, idx, packed=self.packed, pad_id=self.pad_id, device=lm.device)
                for idx in micro
            ]
            n_loss = sum(b.n_loss for b in batches)
            note = None
            try:
                step_loss = self._forward_backward(batches, n_loss)
            except torch.OutOfMemoryError:
                note = self._fall_back_to_recompute_all()
                if note is None:
                    raise
                step_loss = self._forward_backward(batches, n_loss)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, t.max_grad_norm)
            loss_value, norm_value = float(step_loss), float(grad_norm)
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                raise Diverged(
                    f"training diverged at step {self.step + 1}: loss {loss_value}, "
                    f"gradient norm {norm_value}"
                )
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            step_seconds += time.monotonic() - s0
            self.train_seconds = base_train_seconds + (time.monotonic() - attempt_start)
            attempt_tokens_loss += n_loss
            attempt_tokens_total += sum(b.n_tokens for b in batches)
            self.tokens_loss += n_loss
            self.tokens_total += sum(b.n_tokens for b in batches)

            eval_loss = None
            last = self.step == self.total_steps
            if self.eval_samples and ((t.eval_every and self.step % t.eval_every == 0) or last):
                eval_loss = self.last_eval = self.evaluate()
            if self.step % t.log_every == 0 or eval_loss is not None or last:
                mem, mem_kind = peak_memory(lm.device)
                m = {
                    "step": self.step,
                    "total_steps": self.total_steps,
                    "epoch": round(self.step / self.steps_per_epoch, 4),
                    "loss": loss_value,
                    "lr": lr,
                    "grad_norm": norm_value,
                    "tokens_seen": self.tokens_loss,
                    "tokens_seen_total": self.tokens_total,
                    "tokens_per_s": round(attempt_tokens_loss / max(step_seconds, 1e-9), 2),
                    "total_tokens_per_s": round(attempt_tokens_total / max(step_seconds, 1e-9), 2),
                    "elapsed_s": round(self.train_seconds, 3),
                    "peak_memory_bytes": mem,
                    "memory_kind": mem_kind,
                }
                if eval_loss is not None:
                    m["eval_loss"] = eval_loss
                if note:
                    m["note"] = note
                self.metrics.append(m)
                yield self.log.emit("metrics", m)
            if t.checkpoint_every and self.step % t.checkpoint_every == 0 and not last:
                path = self._save_checkpoint()
                data = {"step": self.step, "path": str(path), **self._checkpoint_adapter()}
                yield self.log.emit("checkpoint", data)
        if self.stop_reason == "time_limit" and self.eval_samples and self.last_eval is None:
            self.last_eval = self.evaluate()

    # ---------------------------------------------------------- save/deliver
    def summary(self) -> dict[str, Any]:
        last = next((m for m in reversed(self.metrics) if "loss" in m), None)
        return {
            "steps": self.step,
            "total_steps": self.total_steps,
            "final_loss": last["loss"] if last else None,
            "eval_loss": self.last_eval,
            "tokens_seen": self.tokens_loss,
            "tokens_seen_total": self.tokens_total,
            "train_seconds": round(self.train_seconds, 3),
            "stop_reason": self.stop_reason,
        }

    def _checkpoint_adapter(self) -> dict[str, Any]:
        """The checkpoint also as a PEFT adapter folder, which an inference server sharing the
        volume can load while the job runs: `ADAPTER_DIR/.checkpoints/<job id>/step-N` (kept
        after later checkpoints, so that any of them can be promoted to a version)."""
        if self.env.adapter_dir is None:
            return {}
        tmp = self.work / f"checkpoint-adapter-{self.step}"
        cfg = self.loaded.model.peft_config["default"]
        cfg.base_model_name_or_path, cfg.revision = self.spec.model.name_or_path, self.spec.model.revision
        self.loaded.model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)
        dest = self.env.adapter_dir / ".checkpoints" / self.spec.job_id / f"step-{self.step}"
        copy_folder(tmp, dest)
        shutil.rmtree(tmp, ignore_errors=True)
        return {"adapter_path": str(dest)}

    def save(self) -> Path:
        out = self.work / "adapter"
        model = self.loaded.model
        cfg = model.peft_config["default"]
        cfg.base_model_name_or_path = self.spec.model.name_or_path
        cfg.revision = self.spec.model.revision
        model.save_pretrained(out, safe_serialization=True)
        (out / "README.md").unlink(missing_ok=True)
        record = {
            "brightrun_spec_version": SPEC_VERSION,
            "spec": public_config(self.spec),
            "summary": self.summary(),
            "model": self.started_data["model"],
            "dataset": self.started_data["dataset"],
            "metrics": self.metrics,
        }
        (out / "brightrun.json").write_text(json.dumps(record, indent=1))
        return out

    def deliver(self, folder: Path) -> dict[str, Any]:
        files = {n: p for n, p in folder_files(folder).items()}
        uploaded = upload_files(files, self.spec.output.upload_urls)
        locations: dict[str, Any] = {"uploaded": uploaded}
        if self.env.adapter_dir is not None:
            locations["adapter_dir"] = str(
                copy_folder(folder, self.env.adapter_dir / self.spec.output.adapter_name)
            )
        if self.spec.output.local_dir:
            locations["local_dir"] = str(copy_folder(folder, Path(self.spec.output.local_dir)))
        return {
            "name": self.spec.output.adapter_name,
            "base_model": self.spec.model.name_or_path,
            "files": {n: p.stat().st_size for n, p in files.items()},
            "size_bytes": sum(p.stat().st_size for p in files.values()),
            **locations,
        }

    def cleanup(self, completed: bool) -> None:
        self.loaded = self.optimizer = self.scheduler = None
        self.params = []
        gc.collect()
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if completed:
            for p in self.ckpt_root.glob("step-*"):
                shutil.rmtree(p, ignore_errors=True)
            (self.ckpt_root / "latest").unlink(missing_ok=True)

    def run(self) -> Iterator[Event]:
        completed = False
        final: Event
        yield from self.log.unreported  # the earlier attempt's events the controller missed
        try:
            started = self.setup()
            self.started_data = started.data
            yield started
            yield from self.train()
            folder = self.save()
            adapter = self.deliver(folder)
            completed = True
            final = self.log.emit(
                "completed",
                {"reason": self.stop_reason, "adapter": adapter, "summary": self.summary()},
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes the failed event (report.failure_data logs it)
            data = failure_data(exc, self.spec)
            if self.step:
                data["step"] = self.step
            final = self.log.emit("failed", data)
        finally:
            self.cleanup(completed)
        upload_event_log(self.log, final, self.spec.job_id, self.spec.output.upload_urls)
        shutil.rmtree(self.work, ignore_errors=True)
        if completed:
            (self.ckpt_root / "events.jsonl").unlink(missing_ok=True)
            if self.ckpt_root.is_dir() and not any(self.ckpt_root.iterdir()):
                self.ckpt_root.rmdir()
        yield final


def run_training(spec: JobSpec, env: WorkerEnv, t0: float) -> Iterator[Event]:
    """Run one training job (a validated spec); yields its events (see the module docstring)."""
    yield from TrainingJob(spec, env, t0).run()
