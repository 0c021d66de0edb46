"""Open registries by name: one shape for models, data sets, search methods and hardware presets.

A :class:`Registry` maps names to entries (a model builder, a data set spec, a search
method class, a hardware preset). The library registers its own entries the way a user
registers theirs, from any module, as timm's ``register_model`` does:

>>> shapes = Registry("shape")
>>> @shapes.register("square")
... def square(side: float) -> float:
...     return side * side
>>> shapes["square"](3.0), shapes.names()
(9.0, ['square'])
>>> shapes["sqare"]
Traceback (most recent call last):
...
spikelottery.registry.UnknownNameError: unknown shape 'sqare'; valid names: square (did you mean 'square'?)

A name is never re-pointed silently: registering it again is an error unless
``overwrite=True`` says so. An alias is a second name of an entry (``"fp32"`` of
``"fp32-45nm"``); an alias with ``deprecated=True`` works with a ``FutureWarning``
that names the new spelling.

The registries: :data:`spikelottery.models.MODELS`, :data:`spikelottery.data.DATASETS`,
:data:`spikelottery.engine.SEARCH_METHODS`, :data:`spikelottery.engine.METHODS` and
:data:`spikelottery.energy.hardware.HARDWARE_PRESETS`; the command line reads its lists from
them and loads user registrations with ``--plugin`` (:mod:`spikelottery.plugins`).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from .errors import SpikeLotteryError

__all__ = ["DuplicateNameError", "Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(SpikeLotteryError, KeyError):
    """A name no registry entry has; the message lists the names and a close match.

    A :class:`ValueError` (through :class:`~spikelottery.errors.SpikeLotteryError`) and a
    :class:`KeyError`, so ``registry.get(name, default)`` and ``except ValueError`` work.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(SpikeLotteryError):
    """A name that is registered already, registered again without ``overwrite=True``."""


def _lower(name: str) -> str:
    return name.strip().lower()


class Registry(Mapping[str, T], Generic[T]):
    """Entries by name, in registration order; a read-only mapping with ``register``.

    Args:
        kind: What an entry is, for messages (``"model name"``, ``"dataset"``).
        normalize: Turns a user's spelling into the key (default: strip and lower case).
    """

    def __init__(self, kind: str, *, normalize: Callable[[str], str] = _lower) -> None:
        self.kind = kind
        self._normalize = normalize
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, tuple[str, bool]] = {}  # alias -> (name, deprecated)

    # -- registering ---------------------------------------------------------------
    @overload
    def register(
        self,
        name: str,
        entry: None = None,
        *,
        overwrite: bool = ...,
        aliases: tuple[str, ...] = ...,
    ) -> Callable[[T], T]: ...

    @overload
    def register(
        self, name: str, entry: T, *, overwrite: bool = ..., aliases: tuple[str, ...] = ...
    ) -> T: ...

    def register(
        self,
        name: str,
        entry: T | None = None,
        *,
        overwrite: bool = False,
        aliases: tuple[str, ...] = (),
    ) -> T | Callable[[T], T]:
        """Register ``entry`` as ``name``; without ``entry``, a decorator that does.

        Args:
            name: The name users pass (normalised: ``"VGG9"`` is ``"vgg9"``).
            entry: The entry; leave it out to decorate a function or class.
            overwrite: Replace an entry of the same name (otherwise an error).
            aliases: Other names of the entry.

        Returns:
            ``entry`` (so the decorator leaves the function as it was).

        Raises:
            DuplicateNameError: ``name`` or an alias is taken and ``overwrite`` is false.
            TypeError: ``name`` is not a non-empty str.
        """
        if entry is None:

            def decorator(obj: T) -> T:
                return self.register(name, obj, overwrite=overwrite, aliases=aliases)

            return decorator
        key = self._key(name)
        # An alias that spells the name itself (``"MyNet"`` for ``"mynet"``) or repeats
        # another is dropped: as an alias it would delete the entry it names.
        keys = list(dict.fromkeys([key, *(self._key(a) for a in aliases)]))
        if not overwrite:
            for k in keys:
                if k in self._entries or k in self._aliases:
                    target = self._aliases[k][0] if k in self._aliases else k
                    raise DuplicateNameError(
                        f"{self.kind} {k!r} is registered already (as {target!r}); pass "
                        f"overwrite=True to replace it, or choose another name"
                    )
        self._aliases.pop(key, None)
        self._entries[key] = entry
        for alias in keys[1:]:
            if self._entries.pop(alias, None) is not None:
                # overwrite=True made an entry's name an alias: its aliases follow it.
                for other, (target, deprecated) in list(self._aliases.items()):
                    if target == alias:
                        self._aliases[other] = (key, deprecated)
            self._aliases[alias] = (key, False)
        return entry

    def alias(
        self, alias: str, name: str, *, deprecated: bool = False, overwrite: bool = False
    ) -> None:
        """Make ``alias`` a second name of ``name``; ``deprecated`` warns when it is used.

        Raises:
            DuplicateNameError: ``alias`` is taken and ``overwrite`` is false.
            UnknownNameError: ``name`` is not registered.
        """
        key, target = self._key(alias), self.resolve(name)
        if not overwrite and (key in self._entries or key in self._aliases):
            raise DuplicateNameError(
                f"{self.kind} {key!r} is registered already; pass overwrite=True to re-point it"
            )
        self._aliases[key] = (target, deprecated)

    def unregister(self, name: str) -> T:
        """Remove ``name`` (and its aliases) and return its entry (for tests and plugins)."""
        key = self.resolve(name, warn=False)
        for alias in [a for a, (t, _) in self._aliases.items() if t == key]:
            del self._aliases[alias]
        return self._entries.pop(key)

    # -- looking up ----------------------------------------------------------------
    def resolve(self, name: Any, *, warn: bool = True) -> str:
        """The registered name that ``name`` spells (an alias gives its target).

        Raises:
            UnknownNameError: No entry has this name (the message lists the names).
        """
        key = self._key(name) if isinstance(name, str) else name
        if key in self._entries:
            return str(key)
        if key in self._aliases:
            target, deprecated = self._aliases[key]
            if deprecated and warn:
                warnings.warn(
                    f"{self.kind} {key!r} is now {target!r}; the old name goes in spikelottery 0.2",
                    FutureWarning,
                    stacklevel=3,
                )
            return target
        from .plugins import load_plugins

        if isinstance(name, str) and load_plugins():  # a plugin may register it
            return self.resolve(name, warn=warn)
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name: Any) -> str:
        """``"unknown <kind> 'x'; valid names: a, b (did you mean 'a'?)"``."""
        message = f"unknown {self.kind} {name!r}; valid names: {', '.join(self._entries)}"
        if isinstance(name, str):
            close = difflib.get_close_matches(
                self._normalize(name), [*self._entries, *self._aliases], n=1
            )
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return message

    def __getitem__(self, name: str) -> T:
        return self._entries[self.resolve(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name.strip():
            return False
        try:
            self.resolve(name, warn=False)
        except UnknownNameError:
            return False
        return True

    def names(self, *, sort: bool = False) -> list[str]:
        """The registered names (no aliases), in registration order or sorted."""
        return sorted(self._entries) if sort else list(self._entries)

    def aliases(self) -> dict[str, str]:
        """Alias -> the name it stands for."""
        return {a: t for a, (t, _) in self._aliases.items()}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def _key(self, name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"a {self.kind} must be a non-empty str, got {name!r}")
        return self._normalize(name)
