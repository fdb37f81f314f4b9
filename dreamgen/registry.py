"""Things found by name: world-model kinds, policy families. One ``Registry`` per kind of thing.

``register(item)`` adds an item under ``item.name`` (a second, different item of the same name is refused:
names are what checkpoints record); ``find(name)`` returns it or None, importing first the modules that
installed packages name under the registry's entry-point group, so a kind installed as a package is found
in every process (the CLI, a Ray worker), not only where its module was imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    def __init__(self, what: str, group: str):
        self.what, self.group = what, group  # "world-model kind", "dreamgen.world_models"
        self.items: dict[str, T] = {}

    def register(self, item: T) -> T:
        name = item.name
        if name in self.items and self.items[name] is not item:
            raise ValueError(f"a {self.what} named {name!r} is already registered")
        self.items[name] = item
        return item

    def find(self, name: Any) -> T | None:
        if name not in self.items:
            from importlib.metadata import entry_points

            for point in entry_points(group=self.group):
                point.load()
        return self.items.get(name)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self.items.values()))
