"""Named factories: the one registry style of the project.

A ``Registry`` maps a lower-case name to a factory (a class or a function returning the
object). Flow backends (``stages.flow.base.FLOW_BACKENDS``), entity mask sources
(``stages.entities.masks.MASK_SOURCES``), entity trackers
(``stages.entities.tracking.TRACKERS``), the captioner (``stages.captions.CAPTIONERS``) and
dataset adapters (``pipeline.inputs`` adapters) each keep one.

* ``register(name, factory)`` adds or replaces an entry; ``register(name)`` alone is a
  decorator. A plugin (config ``plugins``) registers a new backend with one line, e.g.
  ``FLOW_BACKENDS.register("myflow", MyFlow)``.
* A factory may be a ``"module:attr"`` string: the module is imported on first ``get`` or
  ``create``, so heavy optional packages (torch) are imported only when that entry is chosen.
* ``choices()`` lists the names in registration order (the order error messages show);
  ``register(name, factory, after=other)`` places a new name right after ``other`` (the clip
  steps of ``pipeline.steps`` are such an ordered list).
* ``device_kind(name)``: what the entry runs on, as its factory declares it (a class or
  function attribute ``device_kind``: ``"cpu"``, the default, or ``"torch"``, a model that
  wants a GPU operator on a GPU cluster), or as ``register(..., device_kind=...)`` declared
  it for a factory that cannot carry the attribute (a lambda). The planner places steps by
  it, never by name.
* ``get(name)`` returns the factory, ``create(name, **options)`` calls it; an unknown name
  raises ``ValueError`` naming the valid choices.
* The registry reads as a mapping: ``name in reg``, ``list(reg)``, ``reg[name]`` (the
  factory, imported if lazy); ``reg[name] = factory`` is ``register``, ``reg.pop(name)``
  removes an entry (tests).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, Mapping

__all__ = ["Registry"]

_MISSING = object()


class Registry(Mapping[str, Callable[..., Any]]):
    """Name -> factory, for one kind of object (``kind`` names it in error messages)."""

    def __init__(self, kind: str, entries: Mapping[str, Callable[..., Any] | str] | None = None):
        self.kind = str(kind)
        self._entries: dict[str, Callable[..., Any] | str] = {}
        self._kinds: dict[str, str] = {}
        for name, factory in (entries or {}).items():
            self.register(name, factory)

    @staticmethod
    def key(name: Any) -> str:
        """The stored form of a name (lower-case)."""
        return str(name).lower()

    def register(self, name: str, factory: Callable[..., Any] | str | None = None, after: str | None = None,
                 device_kind: str | None = None):
        """Add (or replace) ``name``; ``after``: place it right after that entry (else last,
        or where it was); ``device_kind``: what it runs on, when the factory does not say.
        Without ``factory``: a decorator that registers the decorated class or function and
        returns it unchanged."""
        if factory is None:
            def decorate(obj: Callable[..., Any]) -> Callable[..., Any]:
                self.register(name, obj, after=after, device_kind=device_kind)
                return obj

            return decorate
        if isinstance(factory, str):
            if ":" not in factory:
                raise ValueError(f"lazy {self.kind} entry {name!r} must be 'module:attr', got {factory!r}")
        elif not callable(factory):
            raise TypeError(f"{self.kind} {name!r}: the factory must be callable or 'module:attr', "
                            f"got {type(factory).__name__}")
        key = self.key(name)
        if device_kind is not None:
            self._kinds[key] = str(device_kind)
        else:
            self._kinds.pop(key, None)
        if after is None:
            self._entries[key] = factory
            return factory
        anchor = self.key(after)
        if anchor not in self._entries:
            raise ValueError(f"cannot place {self.kind} {name!r} after {after!r}; known: {', '.join(self._entries)}")
        self._entries.pop(key, None)
        items = list(self._entries.items())
        at = [k for k, _ in items].index(anchor) + 1
        self._entries = dict(items[:at] + [(key, factory)] + items[at:])
        return factory

    def choices(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def get(self, name: str) -> Callable[..., Any]:  # type: ignore[override]
        """The factory registered as ``name`` (a lazy entry is imported now). An unknown
        name raises ``ValueError`` listing the choices (unlike ``dict.get``)."""
        key = self.key(name)
        try:
            factory = self._entries[key]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._entries)}") from None
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory

    def device_kind(self, name: str) -> str:
        """``"cpu"`` or ``"torch"``, as declared for ``name`` (module docstring; default cpu)."""
        factory = self.get(name)
        return self._kinds.get(self.key(name)) or str(getattr(factory, "device_kind", "cpu"))

    def create(self, name: str, **options: Any) -> Any:
        """``get(name)(**options)``."""
        return self.get(name)(**options)

    def pop(self, name: str, default: Any = _MISSING) -> Any:
        """Remove ``name`` and return its factory (as stored: a lazy entry stays a string)."""
        if default is _MISSING:
            return self._entries.pop(self.key(name))
        return self._entries.pop(self.key(name), default)

    # ---- mapping
    def __getitem__(self, name: str) -> Callable[..., Any]:
        if self.key(name) not in self._entries:
            raise KeyError(name)
        return self.get(name)

    def __setitem__(self, name: str, factory: Callable[..., Any] | str) -> None:
        self.register(name, factory)

    def __contains__(self, name: object) -> bool:
        return self.key(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
