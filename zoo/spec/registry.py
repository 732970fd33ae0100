"""Named things plugins registered, and how a user's name finds one."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from zoo.errors import UnknownArchitectureError, UsageError
from zoo.text import shorten


class Named(Protocol):
    name: str
    plugin: str


T = TypeVar("T", bound=Named)


class DuplicateName(ValueError):
    """A name or alias is already registered (by ``owner``)."""


class Registry(Generic[T]):
    """Items by name; aliases point at names. ``kind`` is used in messages, and
    ``list_command`` is the command that lists them (named in hints)."""

    def __init__(self, kind: str, list_command: str = "zoo list") -> None:
        self.kind = kind
        self.list_command = list_command
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, item: T) -> None:
        for key in (item.name, *getattr(item, "aliases", ())):
            owner = self._owner(key)
            if owner is not None:
                raise DuplicateName(
                    f"{self.kind} name {key!r} is already registered by plugin {owner.plugin!r} ({owner.name})"
                )
        self._items[item.name] = item
        for alias in getattr(item, "aliases", ()):
            self._aliases[alias] = item.name

    def get(self, key: str) -> T | None:
        """Exact name or alias, else ``None``."""
        return self._owner(key)

    def _owner(self, key: str) -> T | None:
        if key in self._items:
            return self._items[key]
        if key in self._aliases:
            return self._items[self._aliases[key]]
        return None

    def __iter__(self) -> Iterator[T]:
        return iter(sorted(self._items.values(), key=lambda item: item.name))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return self._owner(key) is not None

    def filter(self, pattern: str | None) -> list[T]:
        """Items whose name or an alias matches a shell wildcard (``*soft*``)."""
        if not pattern:
            return list(self)
        if not any(ch in pattern for ch in "*?["):
            pattern = f"*{pattern}*"
        return [
            item
            for item in self
            if any(fnmatch.fnmatchcase(key, pattern) for key in (item.name, *getattr(item, "aliases", ())))
        ]

    def resolve(self, name: str) -> T:
        """Exact name, then alias, then a unique prefix of a name or alias."""
        found = self._owner(name)
        if found is not None:
            return found
        if not name.strip():
            article = "an" if self.kind[:1] in "aeiou" else "a"
            raise UsageError(f"give {article} {self.kind} name; {self._see_all()}")
        keys = [*self._items, *self._aliases]
        matches = {self._owner(key).name for key in keys if key.startswith(name)}  # type: ignore[union-attr]
        if len(matches) == 1:
            return self._items[matches.pop()]
        if len(matches) > 1:
            raise UsageError(f"{self.kind} {shorten(name)!r} is ambiguous: it could be {', '.join(sorted(matches))}")
        close = difflib.get_close_matches(name, keys, n=3, cutoff=0.5) if len(name) <= 200 else []  # quadratic in the name
        hint = f"did you mean {', '.join(close)}?" if close else self._see_all()
        error = UnknownArchitectureError if self.kind == "architecture" else UsageError
        raise error(f"unknown {self.kind} {shorten(name)!r}; {hint}")

    def _see_all(self) -> str:
        count = len(self)
        return f"run '{self.list_command}' to see the {count} available {self.kind}{'' if count == 1 else 's'}"
