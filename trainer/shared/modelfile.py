"""The Ollama `Modelfile` beside a GGUF export, shared by the controller's export and the
worker's `gguf` action. Torch-free.

`modelfile(gguf_name, sampling, adapter=None)`: `FROM` the GGUF (for an adapter-only
export, `FROM` the base's GGUF and `ADAPTER` the LoRA), the ChatML template in Ollama's
Go-template form, `<|im_end|>`/`<|endoftext|>` as stops, and `sampling` as `PARAMETER`
lines. `base_sampling(base_dir)`: the base's sampling defaults from its `generation_config.json`
(else Qwen's: temperature 0.7, top_p 0.8, top_k 20, repeat_penalty 1.05).
`slug(label)`: a label as a file-name stem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

QWEN_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repeat_penalty": 1.05}
STOPS = ("<|im_end|>", "<|endoftext|>")
OLLAMA_CHATML = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}{{ if not (and $last (eq .Role "assistant")) }}<|im_end|>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- end }}"""


def base_sampling(base_dir: Path) -> dict[str, float]:
    """The base model's sampling defaults (see the module docstring)."""
    found = dict(QWEN_SAMPLING)
    path = base_dir / "generation_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text(encoding="utf-8"))
        names = {"repetition_penalty": "repeat_penalty"}
        for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
            if cfg.get(key) is not None:
                found[names.get(key, key)] = cfg[key]
    return found


def modelfile(
    gguf_name: str,
    sampling: dict[str, float],
    *,
    adapter: str | None = None,
    shards: list[str] | None = None,
) -> str:
    """An Ollama Modelfile for the ChatML (Qwen `<|im_start|>`/`<|im_end|>`) format. For a
    model split in `shards` (llama.cpp's split GGUF), which Ollama cannot read, it says how
    to join them into `gguf_name` first."""
    lines = []
    if shards and len(shards) > 1:
        lines += [
            f"# The model is split in {len(shards)} files; Ollama reads one. Join them first with",
            f"# llama.cpp: llama-gguf-split --merge {shards[0]} {gguf_name}",
            f"# (llama.cpp loads the split files as they are: llama-cli -m {shards[0]})",
        ]
    if adapter:
        lines += [
            "# The base model's GGUF (f16 or bf16, the same model the adapter was trained on)",
            f"FROM ./{gguf_name}",
            f"ADAPTER ./{adapter}",
        ]
    else:
        lines.append(f"FROM ./{gguf_name}")
    lines += ["", f'TEMPLATE """{OLLAMA_CHATML}"""', ""]
    lines += [f'PARAMETER stop "{s}"' for s in STOPS]
    lines += [f"PARAMETER {k} {v}" for k, v in sampling.items()]
    return "\n".join(lines) + "\n"


def slug(label: str) -> str:
    """`label` as a file-name stem (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"
