"""`InferenceClient`: one vLLM-compatible OpenAI API server (see `core.clients.inference`
for the loading modes and the errors)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.clients.inference.fit import misfit
from core.clients.inference.types import (
    AdapterAvailability,
    AdapterBaseMismatch,
    AdapterLoadFailed,
    ChatResult,
    InferenceAuthError,
    InferenceError,
    InferenceUnavailable,
    LoadMode,
    ModelNotServed,
    RequestRejected,
    RuntimeLoadingDisabled,
    Sampling,
    ServedModel,
)

if TYPE_CHECKING:
    import openai

    from core.settings import Settings


def local_adapters_dir(settings: Settings) -> Path:
    """The adapter folder of this machine's stack: INFERENCE_ADAPTERS_DIR, else
    `<data_dir>/volume/adapters` (where the local endpoint's worker copies adapters)."""
    if settings.inference_adapters_dir:
        return Path(settings.inference_adapters_dir)
    return (settings.data_dir / "volume" / "adapters").resolve()


def _message(e: openai.APIError) -> str:
    body = e.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return body["message"]
    if isinstance(body, Mapping) and isinstance(body.get("detail"), str):
        return body["detail"]
    return str(body) if body else e.message


def _has_envelope(e: openai.APIError) -> bool:
    """True when the error body is an OpenAI/vLLM error object (a route that exists)."""
    return isinstance(e.body, Mapping) and "message" in e.body and e.type is not None


def same_base(trained_on: str, served: str, *, exact: bool = False) -> bool:
    """Whether an adapter recorded for `trained_on` is for the base served as `served`:
    the same name, or (unless `exact`, the filesystem resolver's rule) the same folder."""
    if trained_on == served:
        return True
    if exact or not trained_on or not served:
        return False
    a, b = Path(trained_on), Path(served)
    return a.is_dir() and b.is_dir() and a.resolve() == b.resolve()


class InferenceClient:
    """One server: `url`, else `settings.inference_url`. Build one per session."""

    def __init__(
        self,
        settings: Settings,
        *,
        url: str | None = None,
        timeout_s: float = 300.0,
        client: openai.OpenAI | None = None,
    ) -> None:
        import openai

        self.settings = settings
        self.url = (url or settings.inference_url).rstrip("/")
        self._openai = client or openai.OpenAI(
            base_url=self.url,
            api_key=settings.inference_api_key.get_secret_value() or "none",
            # openai's own Timeout: the type of whichever HTTP library this openai is built on
            # (an httpx.Timeout is refused by an openai built on httpx2).
            timeout=openai.Timeout(timeout_s, connect=5.0),
            max_retries=0,
        )

    def close(self) -> None:
        self._openai.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors --

    def _translate(self, e: openai.APIError, model: str | None = None) -> InferenceError:
        import openai

        if isinstance(e, openai.APITimeoutError):
            return InferenceUnavailable(
                f"the inference server at {self.url} did not answer in time"
            )
        if isinstance(e, openai.APIConnectionError):
            return InferenceUnavailable(
                f"the inference server at {self.url} is not reachable: start it with "
                "`brightrun up`, or set INFERENCE_URL to a running vLLM server"
            )
        if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
            return InferenceAuthError(
                f"the inference server at {self.url} refused the key: check INFERENCE_API_KEY"
            )
        if not isinstance(e, openai.APIStatusError):
            return InferenceError(f"the inference server at {self.url} failed: {_message(e)}")
        if isinstance(e, openai.NotFoundError):
            if not _has_envelope(e):
                return InferenceUnavailable(
                    f"{self.url} answered 404 without an OpenAI error: is INFERENCE_URL the "
                    "server's /v1 address?"
                )
            return ModelNotServed(
                f"the inference server does not serve {model!r} and could not load it "
                f"({_message(e)}). For an adapter: the folder must exist in the server's "
                f"adapter folder ({self.adapters_dir()}) with base_model_name_or_path equal "
                "to the served base, and the server must load adapters at run time or "
                "through its filesystem resolver"
            )
        if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError):
            return RequestRejected(f"the inference server refused the request: {_message(e)}")
        return InferenceError(f"the inference server failed (HTTP {e.status_code}): {_message(e)}")

    # -- models and adapters --

    def models(self) -> list[ServedModel]:
        import openai

        try:
            page = self._openai.models.list()
        except openai.APIError as e:
            raise self._translate(e) from e
        out = []
        for m in page.data:
            extra = m.model_extra or {}
            out.append(ServedModel(m.id, extra.get("parent"), extra.get("root"), m.owned_by))
        return out

    def engine(self, models: list[ServedModel] | None = None) -> str:
        """Which server answers, for the Settings page: "vLLM 0.32.0" (its /version, when
        reachable), "BrightRun's local server" (the imitation), or the models' owner."""
        import httpx

        owners = {m.owned_by for m in (models if models is not None else self.models())}
        if "brightrun" in owners:
            return "BrightRun's local server (imitates vLLM's API)"
        if "vllm" not in owners:
            return f"an OpenAI-compatible server ({', '.join(sorted(o or '?' for o in owners))})"
        key = self.settings.inference_api_key.get_secret_value()
        try:
            r = httpx.get(
                f"{self.url.removesuffix('/v1')}/version",
                headers={"Authorization": f"Bearer {key}"} if key else {},
                timeout=5.0,
            )
            version = r.json().get("version") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            version = None  # behind a proxy that only passes /v1 (RunPod's worker-vllm)
        return f"vLLM {version}" if isinstance(version, str) else "vLLM"

    def base_model(self) -> str:
        """The served name of the (first) base model."""
        for m in self.models():
            if not m.is_adapter:
                return m.id
        raise InferenceUnavailable(f"the inference server at {self.url} lists no base model")

    def adapters_dir(self) -> str:
        d = self.settings.inference_adapters_dir
        return d.rstrip("/") if d else str(local_adapters_dir(self.settings))

    def adapter_path(self, name: str) -> str:
        """Where the server finds adapter `name` (its own view of the adapter folder)."""
        return f"{self.adapters_dir()}/{name}"

    def _check_base(self, name: str, path: str, base: str, *, exact: bool = False) -> None:
        """When the adapter folder is visible from here, refuse an adapter that does not fit
        the base (`fit.misfit`; vLLM would load it) or a base mismatch before the server is
        asked: vLLM's runtime loading does not check it (it would answer with the
        adapter applied to the wrong model), and its resolver answers a plain 404. `exact`:
        the resolver's rule, the recorded name must equal the served name; otherwise two
        paths of the same folder match too."""
        cfg_path = Path(path) / "adapter_config.json"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # not visible here (a remote volume): the server decides
        trained_on = str(cfg.get("base_model_name_or_path") or "") if isinstance(cfg, dict) else ""
        if Path(base).is_dir() and (why := misfit(path, base)):
            raise AdapterLoadFailed(f"adapter {name!r} at {path} could not be loaded: {why}")
        if trained_on and not same_base(trained_on, base, exact=exact):
            rule = " (the filesystem resolver needs the exact served name)" if exact else ""
            raise AdapterBaseMismatch(
                f"adapter {name!r} was trained on base model {trained_on!r}, but the inference "
                f"server serves {base!r}{rule}: serve that base model (INFERENCE_BASE_MODEL "
                "for the local server, --model for vLLM, or an INFERENCE_URLS entry) to chat "
                "with it"
            )

    def ensure_adapter(self, name: str, path: str | None = None) -> AdapterAvailability:
        """Make adapter `name` available and say how; raises the typed errors above."""
        models = self.models()
        if any(m.id == name for m in models):
            return AdapterAvailability(name, LoadMode.SERVED, f"{name!r} is already served")
        path = path or self.adapter_path(name)
        base = next((m.id for m in models if not m.is_adapter), "")
        mode = self.settings.inference_lora_loading
        if base:
            self._check_base(name, path, base, exact=mode == "resolver")
        reason = "INFERENCE_LORA_LOADING=resolver"
        if mode in ("auto", "runtime"):
            try:
                return self._post_load(name, path)
            except RuntimeLoadingDisabled as e:
                if mode == "runtime":
                    raise
                reason = str(e)
            if base:
                self._check_base(name, path, base, exact=True)
        path = self._stage_for_resolver(name, path)
        return AdapterAvailability(
            name,
            LoadMode.RESOLVER,
            f"left to the server's filesystem resolver, which loads {path} on the first "
            f"request for {name!r} ({reason})",
        )

    def _stage_for_resolver(self, name: str, path: str) -> str:
        """The resolver only finds `<adapter folder>/<name>`. An adapter kept elsewhere, or
        under another folder name (a checkpoint, served as `ckpt-<version id>`), is copied
        there when both folders are visible from here (the local stack); else `path`."""
        import shutil

        target = Path(self.adapters_dir()) / name
        source = Path(path)
        if target.exists() or not (source / "adapter_config.json").is_file():
            return str(target) if target.exists() else path
        if not target.parent.is_dir() or source.resolve() == target.resolve():
            return path
        shutil.copytree(source, target)
        return str(target)

    def load_adapter(self, name: str, path: str, replace: bool = False) -> AdapterAvailability:
        """POST /v1/load_lora_adapter; `replace` reloads a name already loaded. An adapter
        trained on another base is refused here first (AdapterBaseMismatch)."""
        self._check_base(name, path, self.base_model())
        return self._post_load(name, path, replace)

    def _post_load(self, name: str, path: str, replace: bool = False) -> AdapterAvailability:
        import openai

        body: dict[str, Any] = {"lora_name": name, "lora_path": path}
        if replace:
            body["load_inplace"] = True
        try:
            # The body is a line of text; `str` reads it whatever HTTP library openai is built on.
            self._openai.post("/load_lora_adapter", body=body, cast_to=str)
        except openai.APIStatusError as e:
            if e.status_code in (404, 405) and not _has_envelope(e):
                raise RuntimeLoadingDisabled(
                    f"the server at {self.url} does not load adapters at run time (no "
                    "/v1/load_lora_adapter; vLLM needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
                ) from e
            if isinstance(e, openai.NotFoundError):
                raise ModelNotServed(
                    f"no adapter {name!r} at {path} on the inference server: {_message(e)}"
                ) from e
            if isinstance(e, openai.BadRequestError) or (e.status_code >= 500 and _has_envelope(e)):
                # vLLM answers a rank above its --max-lora-rank with a 500
                raise AdapterLoadFailed(
                    f"the inference server would not load adapter {name!r} from {path}: "
                    f"{_message(e)}"
                ) from e
            raise self._translate(e, name) from e
        except openai.APIError as e:
            raise self._translate(e, name) from e
        return AdapterAvailability(
            name, LoadMode.RUNTIME, f"loaded at run time from {path} (POST /v1/load_lora_adapter)"
        )

    def unload_adapter(self, name: str) -> None:
        import openai

        try:
            self._openai.post("/unload_lora_adapter", body={"lora_name": name}, cast_to=str)
        except openai.APIStatusError as e:
            if e.status_code in (404, 405) and not _has_envelope(e):
                raise RuntimeLoadingDisabled(
                    f"the server at {self.url} does not unload adapters at run time"
                ) from e
            if isinstance(e, openai.NotFoundError):
                raise ModelNotServed(f"the inference server has no adapter {name!r} loaded") from e
            raise self._translate(e, name) from e
        except openai.APIError as e:
            raise self._translate(e, name) from e

    # -- chat --

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling | None = None
    ) -> ChatStream:
        """Start a streamed chat completion; iterate the result for text pieces."""
        import openai

        sampling = sampling or Sampling()
        try:
            raw = self._openai.chat.completions.create(
                model=model,
                messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                stream=True,
                stream_options={"include_usage": True},
                **sampling.request_fields(),
            )
        except openai.APIError as e:
            raise self._translate(e, model) from e
        return ChatStream(model, raw, self)

    def prompt_logprobs(self, model: str, prompt: str) -> list[tuple[int, float]]:
        """Each token of `prompt` (after the first) as (character offset, log-probability)
        under `model`: a completion with `echo` and `logprobs`, as vLLM answers it."""
        import openai

        try:
            r = self._openai.completions.create(
                model=model, prompt=prompt, max_tokens=1, echo=True, logprobs=0, temperature=0.0
            )
        except openai.APIError as e:
            raise self._translate(e, model) from e
        return _prompt_logprobs_result(r.choices[0])

    def chat_completion(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        sampling: Sampling | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One non-streamed chat completion with the messages as given (tool calls, tool
        results) and OpenAI `tools`; the server's answer as the openai package returns it
        (`core.clients.inference.tools` reads its calls and reasoning)."""
        import openai

        fields: dict[str, Any] = {"tools": list(tools), "tool_choice": "auto"} if tools else {}
        try:
            return self._openai.chat.completions.create(
                model=model,
                messages=[dict(m) for m in messages],
                extra_body=dict(extra_body) if extra_body else None,
                **fields,
                **(sampling or Sampling()).request_fields(),
            )
        except openai.APIError as e:
            raise self._translate(e, model) from e

    def chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling | None = None
    ) -> ChatResult:
        """One non-streamed chat completion."""
        import openai

        sampling = sampling or Sampling()
        try:
            r = self._openai.chat.completions.create(
                model=model,
                messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                **sampling.request_fields(),
            )
        except openai.APIError as e:
            raise self._translate(e, model) from e
        choice = r.choices[0]
        usage = r.usage
        return ChatResult(
            model=model,
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )


def _prompt_logprobs_result(choice: Any) -> list[tuple[int, float]]:
    lp = choice.logprobs
    if lp is None or not lp.token_logprobs:
        return []
    return [
        (int(o), float(x))
        for o, x in zip(lp.text_offset, lp.token_logprobs, strict=True)
        if x is not None
    ]


class ChatStream:
    """Iterate for the answer's text pieces as they arrive; afterwards `text`,
    `finish_reason` and the token counts hold the whole answer. Iterate once."""

    def __init__(self, model: str, raw: Any, client: InferenceClient) -> None:
        self.model = model
        self._raw = raw
        self._client = client
        self.text = ""
        self.finish_reason: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def __iter__(self) -> Iterator[str]:
        import openai

        try:
            for chunk in self._raw:
                if chunk.usage is not None:
                    self.prompt_tokens = chunk.usage.prompt_tokens
                    self.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        self.text += piece
                        yield piece
                    if choice.finish_reason:
                        self.finish_reason = choice.finish_reason
        except openai.APIError as e:
            raise self._client._translate(e, self.model) from e
        finally:
            self._raw.close()

    def close(self) -> None:
        self._raw.close()

    def result(self) -> ChatResult:
        """Drain what is left and return the whole answer."""
        for _ in self:
            pass
        return ChatResult(
            self.model, self.text, self.finish_reason, self.prompt_tokens, self.completion_tokens
        )


# --------------------------------------------------------------------------- playground
