"""One registry for the strategy objects of the engine (pruning methods, token strategies).

A registry maps a name to one instance of a strategy class. It is a plain ``dict`` for reading
(``REGISTRY[name]``, ``.items()``, ``in``) and adds the three operations every registry of
ours needs: register a class under its ``name`` once, look a name up with an error that lists
the known ones, and unregister (plug-ins and tests).
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """Named strategy instances of one ``kind`` ("pruning method", "token strategy")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add one instance of ``cls`` under ``cls.name``; a taken name is an error."""
        name = getattr(cls, "name", "")
        if not name:
            raise ValueError(f"{cls.__name__} needs a non-empty name to be registered as a {self.kind}")
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered ({type(self[name]).__name__})")
        self[name] = cls()
        return cls

    def lookup(self, name: str) -> T:
        """The instance registered as ``name``; an unknown name's error lists the known ones."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self)}")
        return self[name]

    def unregister(self, name: str) -> None:
        """Remove ``name`` (no error if it is not registered)."""
        self.pop(name, None)
