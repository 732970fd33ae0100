"""``zoo export --update``: whether a file zoo wrote earlier is still what the request would export.

A file is up to date when the provenance it records (architecture, plugin,
parameters, seed, weights checksum, format, opset, static shapes, format
options, variant, zoo and torch versions) equals what this export would record
*and* it still verifies against the freshly built model: the second half
catches a plugin whose architecture now computes something else under the same
name and parameters. A file without zoo's metadata is not zoo's to replace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo.build.model import BuiltModel
from zoo.errors import ZooError
from zoo.host.plugin_calls import call_exporter
from zoo.spec.exporter import Exporter
from zoo.spec.job import META_PREFIX, provenance

# What each recorded key means to a user, in the order a reason is looked for.
RECORDED = {
    "architecture": "architecture",
    "plugin": "plugin",
    "exporter": "format",
    "params": "parameters",
    "seed": "seed",
    "weights_sha256": "weights (sha256)",
    "opset": "opset",
    "static": "static shapes",
    "options": "format options",
    "variant": "variant",
    "acceptance": "acceptance criteria",
    "version": "zoo version",
    "torch_version": "torch version",
}


def recorded_metadata(exporter: Exporter, path: Path) -> dict[str, str] | None:
    """The zoo metadata of an existing file (prefix stripped), or ``None`` when
    zoo did not write it: not a regular file, not this format, no ``zoo.architecture``."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        raw = call_exporter(exporter.read_metadata, path, error=ZooError, what=f"not a readable {exporter.name} file", limit=150)
    except ZooError:
        return None
    meta = {k[len(META_PREFIX) :]: str(v) for k, v in dict(raw or {}).items() if k.startswith(META_PREFIX)}
    return meta if "architecture" in meta else None


def expected_metadata(built: BuiltModel, exporter: Exporter, opset: int | None, static: bool, options: dict[str, Any],
                      variant: str | None = None, acceptance: Any = None) -> dict[str, str]:
    """What an export of ``built`` with these settings records (prefix stripped)."""
    meta = {k[len(META_PREFIX) :]: v for k, v in provenance(built, exporter.name, opset, static, options).items()}
    if variant is not None:
        meta["variant"] = variant
        meta["acceptance"] = json.dumps(acceptance.to_dict(), sort_keys=True)
    return meta


def stale_reason(recorded: dict[str, str], expected: dict[str, str]) -> str | None:
    """Why a file recording ``recorded`` is not what the request would export; ``None`` when they match."""
    for key, label in RECORDED.items():
        was, now = recorded.get(key), expected.get(key)
        if was != now:
            return f"{label} changed ({_shown(key, was)} → {_shown(key, now)})"
    return None


def _shown(key: str, value: str | None) -> str:
    if value is None:
        return "none"
    if key == "weights_sha256":
        return value[:12] + "…"
    return value if len(value) <= 60 else value[:57] + "…"
