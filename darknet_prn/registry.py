"""One registry helper for every per-layer-type table (parsers, reference modules, plan lowerings, export forms).

A :class:`Registry` maps a Darknet section type (or an activation name) to one entry. ``@REG.register("a", "b")``
registers the decorated object under each name; registering a name twice is an error (a second definition of
the same layer type would otherwise win silently, depending on import order). No torch here.
"""
from __future__ import annotations


class Registry(dict):
    """A ``dict`` from name to entry that refuses duplicate names. ``what`` names it in error messages."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def __setitem__(self, name, entry):
        if name in self:
            raise ValueError(f"{self.what}: '{name}' is registered twice ({_qual(self[name])} and {_qual(entry)})")
        super().__setitem__(name, entry)

    def register(self, *names):
        """Decorator: registers the function or class under each of ``names``."""
        if not names:
            raise ValueError(f"{self.what}: register() needs at least one name")

        def deco(entry):
            for n in names:
                self[n] = entry
            return entry
        return deco


def _qual(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
