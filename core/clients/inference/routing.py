"""Which inference endpoint serves which base model.

`INFERENCE_URL` is the default endpoint. `INFERENCE_URLS` maps a base model's served name
(what an adapter records as `base_model_name_or_path`) to the endpoint that serves it, e.g.
`INFERENCE_URLS='{"Qwen/Qwen2.5-7B-Instruct": "https://api.runpod.ai/v2/abc/openai/v1"}'`;
one vLLM serves one base, so each further base is one more endpoint. Every endpoint takes
INFERENCE_API_KEY. A base the mapping does not name goes to the default endpoint.

`InferenceRouter` holds one `InferenceClient` per endpoint and sends each chat, stream,
adapter load or unload to the endpoint of the model it names: an adapter to its base's
endpoint once `model_choices` has listed it (`route`), anything else to the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from core.clients.inference.client import ChatStream, InferenceClient
from core.clients.inference.types import AdapterAvailability, ChatResult, Sampling, ServedModel

if TYPE_CHECKING:
    from core.settings import Settings


def endpoint_for(settings: Settings, base: str | None) -> str:
    """The endpoint that serves `base`: its INFERENCE_URLS entry, else INFERENCE_URL."""
    url = settings.inference_urls.get(base or "", "") or settings.inference_url
    return url.rstrip("/")


def client_for_base(settings: Settings, base: str | None) -> InferenceClient:
    """A client of the endpoint that serves `base` (close it when done)."""
    return InferenceClient(settings, url=endpoint_for(settings, base))


class InferenceRouter:
    """The chat calls of `InferenceClient`, each sent to the endpoint of its model."""

    def __init__(self, settings: Settings, *, default: InferenceClient | None = None) -> None:
        self.settings = settings
        # `default`: a client of the default endpoint (its URL wins over INFERENCE_URL)
        self.url = default.url if default is not None else settings.inference_url.rstrip("/")
        self._clients: dict[str, InferenceClient] = {}
        if default is not None:
            self._clients[default.url] = default
        self._routes: dict[str, str] = {}

    def endpoints(self) -> list[str]:
        """The default endpoint first, then each further one once."""
        urls = [self.url, *(u.rstrip("/") for u in self.settings.inference_urls.values())]
        return list(dict.fromkeys(urls))

    def client(self, url: str) -> InferenceClient:
        url = url.rstrip("/")
        if url not in self._clients:
            self._clients[url] = InferenceClient(self.settings, url=url)
        return self._clients[url]

    def default(self) -> InferenceClient:
        return self.client(self.url)

    def route(self, served_name: str, url: str) -> None:
        """Send requests for `served_name` to `url` from now on."""
        self._routes[served_name] = url.rstrip("/")

    def for_model(self, name: str) -> InferenceClient:
        return self.client(self._routes.get(name, self.url))

    def for_base(self, base: str | None) -> InferenceClient:
        return self.client(endpoint_for(self.settings, base))

    # -- InferenceClient's calls, routed --

    def models(self) -> list[ServedModel]:
        return self.default().models()

    def engine(self, models: list[ServedModel] | None = None) -> str:
        return self.default().engine(models)

    def adapter_path(self, name: str) -> str:
        return self.default().adapter_path(name)

    def ensure_adapter(self, name: str, path: str | None = None) -> AdapterAvailability:
        return self.for_model(name).ensure_adapter(name, path)

    def unload_adapter(self, name: str) -> None:
        self.for_model(name).unload_adapter(name)

    def chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling | None = None
    ) -> ChatResult:
        return self.for_model(model).chat(model, messages, sampling)

    def chat_completion(
        self, model: str, messages: Sequence[Mapping[str, Any]], *a: Any, **kw: Any
    ) -> Any:
        return self.for_model(model).chat_completion(model, messages, *a, **kw)

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, str]], sampling: Sampling | None = None
    ) -> ChatStream:
        return self.for_model(model).stream_chat(model, messages, sampling)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()

    def __enter__(self) -> InferenceRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
