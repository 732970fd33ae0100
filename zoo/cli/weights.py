"""``zoo weights``: the registered weight sets, the download cache, and removing cached files."""

from __future__ import annotations

from collections.abc import Sequence

import click

from zoo.cli.group import get_zoo
from zoo.cli.options import json_option
from zoo.cli.output import echo
from zoo.cli.render_plugins import weights_lines
from zoo.errors import UsageError
from zoo.spec.weights import is_url


@click.command("weights")
@click.argument("pattern", required=False)
@click.option("--remove", "remove", multiple=True, metavar="ARCH.NAME", help="Remove this weight set's cached files (repeatable).")
@click.option("--clear", is_flag=True, help="Remove every file in the download cache.")
@json_option
@click.pass_context
def weights_command(ctx: click.Context, pattern: str | None, remove: Sequence[str], clear: bool, as_json: bool) -> None:
    """List registered weight sets (architecture, name, claimed metric) and what the
    download cache holds ($ZOO_CACHE_DIR, default ~/.cache/zoo); remove cached files.

    \b
    Examples:
      zoo weights
      zoo weights multiclass --json
      zoo weights --remove multiclass-softmax.digits
      zoo weights --clear
    """
    from zoo.files.cache import cache_dir, cached_files
    from zoo.files.cache import clear as remove_all

    zoo = get_zoo(ctx)
    registered = [w for w in zoo.weights if not pattern or w.architecture in {a.name for a in zoo.architectures.filter(pattern)}]
    cached = cached_files()
    removed = []
    if clear:
        removed = cached
    for key in remove:
        entry = find_entry(zoo, key)
        if entry is None:
            raise UsageError(f"--remove {key!r}: give ARCH.NAME of a registered weight set ('zoo weights' lists them)")
        pinned = {entry.sha256, *([entry.claim.eval_set.sha256] if entry.claim else [])}
        removed += [c for c in cached if c.sha256 in pinned and c not in removed]
    remove_all(removed)
    cached = [c for c in cached if c not in removed]
    in_cache = {c.sha256 for c in cached}
    record = {
        # cached: for a URL, whether the cache holds it; None for a file shipped in its plugin
        "weights": [{**w.to_dict(), "cached": w.sha256 in in_cache if is_url(w.source) else None} for w in registered],
        "cache": {"folder": str(cache_dir()), "files": [{"path": str(c.path), "bytes": c.bytes, "sha256": c.sha256} for c in cached]},
        "removed": [str(c.path) for c in removed],
    }
    echo(record, weights_lines(registered, cached, cache_dir(), removed), as_json)


def find_entry(zoo: object, key: str) -> object:
    """The weight set ``ARCH.NAME`` names (ARCH a name or alias; either may hold dots), or ``None``."""
    for index, char in enumerate(key):
        if char == ".":
            arch = zoo.architectures.get(key[:index])  # type: ignore[attr-defined]
            entry = zoo.weights.get(arch.name, key[index + 1 :]) if arch is not None else None  # type: ignore[attr-defined]
            if entry is not None:
                return entry
    return None
