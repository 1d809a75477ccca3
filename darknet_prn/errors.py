"""The one exception family the package raises for bad user input (cfg, weights, image, path)."""
from __future__ import annotations

import os


class DarknetError(Exception):
    """A problem with user input. ``str(err)`` is a single line: ``file[:line]: reason``."""

    def __init__(self, reason: str, path=None, line: int | None = None):
        self.reason = reason
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.path or ""
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        text = f"{where}: {self.reason}" if where else self.reason
        return " ".join(text.split("\n"))


class CfgError(DarknetError):
    """A malformed or inconsistent ``.cfg`` file."""


class WeightsError(DarknetError):
    """A ``.weights`` file that does not fit its cfg."""
