"""Text for 'zoo plugins' and 'zoo weights': what each plugin registered, the formats, runtimes and weight sets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from zoo.cli.render import VARIANT_FLAGS, table
from zoo.text import human_bytes


def weights_rows(weights: Iterable[Any]) -> list[tuple[str, ...]]:
    return [(w.architecture, w.name + (" (default)" if w.default else ""), w.claim_text(), w.plugin) for w in weights]


def weights_lines(weights: Sequence[Any], cached: Sequence[Any], folder: Any, removed: Sequence[Any] = ()) -> list[str]:
    """``zoo weights``: what is registered, then what the download cache holds."""
    lines = [table(("ARCHITECTURE", "WEIGHTS", "CLAIM", "PLUGIN"), weights_rows(weights))] if weights else ["no weight sets registered"]
    lines.extend(f"removed {entry.path} ({human_bytes(entry.bytes)})" for entry in removed)
    if cached:
        lines += ["", f"cache {folder}:", table(("FILE", "SIZE", "SHA256"), [(c.path.name, human_bytes(c.bytes), c.sha256[:16] + "…") for c in cached])]
    else:
        lines.append(f"cache {folder}: empty")
    return lines


def plugins_lines(zoo: Any) -> list[str]:
    """``zoo plugins``: each plugin with what it registered and its errors; then the formats and tasks."""
    infos = list(zoo.plugins.values())
    rows = []
    for info in infos:
        registered = [
            f"{kind}: {', '.join(names)}"
            for kind, names in (
                ("tasks", info.tasks), ("architectures", info.architectures), ("exporters", info.exporters), ("runtimes", info.runtimes),
                ("commands", info.commands), ("weights", info.weights),
            )
            if names
        ]
        dist = f"{info.distribution or '-'}{' (built-in)' if info.builtin else ''}"
        rows.append((info.name, dist, info.version or "-", info.status, "; ".join(registered) or "-"))
    lines = [table(("PLUGIN", "DISTRIBUTION", "VERSION", "STATUS", "REGISTERED"), rows)]
    lines.extend(f"{info.name}: {error}" for info in infos for error in info.errors)
    if len(zoo.exporters):  # what --format takes, and what each format can do
        formats = [
            (e.name, e.suffix, e.plugin, " ".join([*("--" + o.replace("_", "-") for o in e.options), *map(VARIANT_FLAGS.get, e.variants)]) or "-", e.summary or "-")
            for e in zoo.exporters
        ]
        lines += ["", table(("FORMAT", "SUFFIX", "PLUGIN", "OPTIONS", "SUMMARY"), formats)]
    if len(zoo.runtimes):  # what --runtime takes, and whether each can run here
        lines += ["", table(("RUNTIME", "FORMATS", "PLUGIN", "AVAILABLE", "SETTINGS"), [runtime_row(d) for d in runtime_records(zoo)])]
    if len(zoo.tasks):  # what Output(task=...) takes, with the heads each task accepts
        tasks = [(t.name, ",".join(t.head_names()), t.plugin, t.summary or "-") for t in zoo.tasks]
        lines += ["", table(("TASK", "HEADS", "PLUGIN", "SUMMARY"), tasks)]
    return lines


def runtime_records(zoo: Any) -> list[dict[str, Any]]:
    """Every runtime with its availability here, devices and version (``zoo plugins --json``)."""
    from zoo.verification.runtimes import runtime_devices, runtime_version, safe_available

    records = []
    for runtime in zoo.runtimes:
        available = safe_available(runtime)
        records.append(runtime.to_dict(available, runtime_devices(runtime) if available else (), runtime_version(runtime) if available else ""))
    return records


def runtime_row(record: dict[str, Any]) -> tuple[str, ...]:
    if record["available"]:
        where = f"yes: {record['version'] or '?'} on {', '.join(record['devices']) or '-'}"
    else:
        where = f"no: {record['install'] or 'not installed'}"
    settings = " ".join(f"{k}={'|'.join(v['choices']) or 'N'}" for k, v in record["settings"].items()) or "-"
    return (record["name"], ",".join(record["formats"]), record["plugin"], where, settings)
