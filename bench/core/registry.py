"""Name -> object registries: the names are the identity of methods, datasets, protocols and metrics."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no registry entry has; the message lists the valid names."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:
        return self.args[0]


class Registry(Generic[T]):
    """An ordered registry. Registration order is the display order of every listing and report."""

    def __init__(self, kind: str, base: type | None = None):
        self.kind = kind
        self.base = base
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None)
            if not isinstance(key, str) or not key:
                raise TypeError(f"{self.kind} {obj!r} needs a name")
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise TypeError(f"{self.kind} {key!r} must be a subclass of {self.base.__name__}")
            self._items[key] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def names(self, pattern: str = "*") -> list[str]:
        return [k for k in self._items if fnmatch.fnmatchcase(k, pattern)]

    def order(self, name: str) -> int:
        """Position in registration order (unknown names sort last)."""
        keys = list(self._items)
        return keys.index(name) if name in keys else len(keys)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()
