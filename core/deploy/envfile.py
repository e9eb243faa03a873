"""The dotenv file `brightrun deploy` writes the endpoints' URLs into.

`update_env_file` changes only the keys it is given, where they stand, and keeps every
other line (comments, `export`, order) as it was. A value cannot span lines
(`DeployError`). The file is replaced atomically and keeps its mode (0600 when created).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from core.deploy.errors import DeployError

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def _value(line: str) -> str:
    return line.split("=", 1)[1].strip().strip("'\"")


def read_env_value(path: Path, key: str) -> str | None:
    """`key`'s value in the dotenv file at `path` (its last occurrence); None if absent."""
    if not path.exists():
        return None
    found = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _ENV_LINE.match(line)
        if m and m.group(1) == key:
            found = _value(line)
    return found


def update_env_file(path: Path, values: dict[str, str]) -> dict[str, tuple[str | None, str]]:
    """Set `values` in the dotenv file at `path`, keeping every other line as it is.

    A key already present is replaced where it stands (every occurrence); a new one is
    appended. Returns {key: (old, new)} for the keys whose value changed. The file is
    replaced atomically and keeps its permissions (0600 when created).
    """
    for k, v in values.items():
        if "\n" in v or "\r" in v:
            raise DeployError(f"{k}: a value for .env cannot span lines")
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines()
    old: dict[str, str] = {}
    out: list[str] = []
    seen: set[str] = set()
    for line in lines:
        m = _ENV_LINE.match(line)
        if m and m.group(1) in values:
            key = m.group(1)
            old.setdefault(key, _value(line))
            if key not in seen:
                out.append(f"{key}={values[key]}")
                seen.add(key)
            continue
        out.append(line)
    missing = [k for k in values if k not in seen]
    if missing:
        if out and out[-1].strip():
            out.append("")
        out.append("# RunPod endpoints, written by `brightrun deploy`")
        out.extend(f"{k}={values[k]}" for k in missing)
    changed = {k: (old.get(k), v) for k, v in values.items() if old.get(k) != v}
    if not changed and path.exists():
        return {}
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=".env.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return changed
