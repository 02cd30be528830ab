"""Named plug-ins: a name maps to an implementation and its frozen parameter dataclass.

Aggregation algorithms, compressors, models and MI estimators each keep one
`Registry`. A plug-in is one module that registers itself with a decorator,
plus the one import in its package's `__init__` that runs the decorator:

    @ALGORITHMS.register("fedavg", FedAvgParams)
    class FedAvg(Algorithm): ...

The job file names a plug-in (`algorithm: {name: fedavg, ...}`) and config
builds its parameters from the registered dataclass, so a new plug-in needs
no edit to config.py, the command line or the docs generator. Parameter
dataclasses check themselves in `check()` and raise `ValueError` naming the
field; config turns that into a one-line error naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class NoParams:
    """The parameters of a plug-in that takes none."""

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    impl: T
    params: type  # frozen dataclass; `params()` gives the defaults


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "algorithm", "model", ...: used in messages
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, params: type = NoParams) -> Callable[[T], T]:
        def add(impl: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, impl, params)
            return impl
        return add

    def __getitem__(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def params(self, name: str, **values: Any) -> Any:
        """Checked parameters of `name`: the defaults, with `values` replacing some of them."""
        params = self[name].params(**values)
        params.check()
        return params
