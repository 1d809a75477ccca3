"""Darknet ``.cfg`` text: sections of ``key=value`` options, read with Darknet's exact syntax.

Syntax (parser.c ``read_cfg``, utils.c ``strip``): every space and tab is removed from a line, lines
starting with ``#`` or ``;`` are comments, ``[name]`` opens a section, ``key=value`` splits at the
first ``=``, and the *first* occurrence of a key wins. Inline comments are not stripped by Darknet
(``filters=255 #x`` reads ``255#x``), but its ``atoi``/``atof`` stop at the ``#``; we accept a number
followed by a ``#``/``;`` comment the same way and reject anything else as a bad number.

Typed getters mark a key as used; keys never used are reported as warnings, like Darknet's
"Unused field".
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field

from .errors import CfgError
from .fileio import read_cfg_file_text

# section aliases (parser.c string_to_layer_type) -> canonical type name
SECTION_ALIASES = {
    "net": "net", "network": "net",
    "convolutional": "convolutional", "conv": "convolutional",
    "local": "local",
    "connected": "connected", "conn": "connected",
    "maxpool": "maxpool", "max": "maxpool",
    "local_avgpool": "local_avgpool", "local_avg": "local_avgpool",
    "avgpool": "avgpool", "avg": "avgpool",
    "route": "route",
    "shortcut": "shortcut",
    "partial_shortcut": "partial_shortcut",
    "scale_channels": "scale_channels",
    "sam": "sam",
    "upsample": "upsample",
    "reorg3d": "reorg3d",
    "reorg": "reorg",
    "yolo": "yolo",
    "Gaussian_yolo": "gaussian_yolo",
    "region": "region",
    "detection": "detection",
    "softmax": "softmax", "soft": "softmax",
    "cost": "cost",
    "crop": "crop",
    "dropout": "dropout",
    "lrn": "normalization", "normalization": "normalization",
    "batchnorm": "batchnorm",
    "activation": "activation",
    "rnn": "rnn",
    "gru": "gru",
    "lstm": "lstm",
    "crnn": "crnn",
    "conv_lstm": "conv_lstm",
    "history": "history",
    "contrastive": "contrastive",
    "implicit": "implicit",
    "empty": "empty", "silence": "empty",
}

_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)", re.I)


class CfgWarning(UserWarning):
    """A cfg problem Darknet tolerates (unused key, line without '=')."""


@dataclass
class Option:
    key: str
    value: str | None
    line: int
    used: bool = False


@dataclass
class Section:
    """One ``[name]`` block. ``type`` is the canonical layer type (see SECTION_ALIASES)."""
    name: str
    line: int
    path: str
    options: dict = field(default_factory=dict)   # key -> Option (first occurrence)
    extra: list = field(default_factory=list)     # later duplicates (never used, reported)

    @property
    def type(self) -> str:
        return SECTION_ALIASES[self.name]

    def error(self, reason: str, key: str | None = None) -> CfgError:
        line = self.options[key].line if key in self.options else self.line
        return CfgError(f"[{self.name}] {reason}", self.path, line)

    # -- raw access ---------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        opt = self.options.get(key)
        return opt is not None and opt.value is not None

    def raw(self, key: str):
        opt = self.options.get(key)
        if opt is None or opt.value is None:
            return None
        opt.used = True
        return opt.value

    def touch(self, *keys: str) -> None:
        """Mark keys as known (read by Darknet for training only)."""
        for k in keys:
            if k in self.options:
                self.options[k].used = True

    # -- typed getters --------------------------------------------------------------------------------
    def _number(self, key, text, regex, conv, kind):
        t = text
        m = regex.match(t)
        if m is None:
            raise self.error(f"bad number for '{key}': {text!r} is not {kind}", key)
        rest = t[m.end():]
        if rest and rest[0] not in "#;":
            if kind == "an integer":
                # Darknet's atoi("2.0") reads 2; accept a float with an integral value, reject others
                fm = _FLOAT_RE.match(t)
                if fm and (not t[fm.end():] or t[fm.end()] in "#;"):
                    v = float(fm.group(0))
                    if v == int(v):
                        return int(v)
            raise self.error(f"bad number for '{key}': {text!r} is not {kind}", key)
        return conv(m.group(0))

    def _value(self, key: str, required: bool):
        text = self.raw(key)
        if text is None and required:
            raise self.error(f"missing required key '{key}'")
        return text

    def get_int(self, key: str, default=None, required: bool = False):
        text = self._value(key, required)
        return default if text is None else self._number(key, text, _INT_RE, int, "an integer")

    def get_float(self, key: str, default=None, required: bool = False):
        text = self._value(key, required)
        return default if text is None else self._number(key, text, _FLOAT_RE, float, "a number")

    def get_str(self, key: str, default=None, required: bool = False):
        text = self._value(key, required)
        return default if text is None else text

    def _list(self, key, conv, required):
        text = self._value(key, required)
        if text is None:
            return None
        text = re.split(r"[#;]", text, maxsplit=1)[0]
        items = text.split(",")
        if items and items[-1] == "":
            items = items[:-1]          # Darknet tolerates a trailing comma
        if not items:
            raise self.error(f"'{key}' is empty", key)
        return [self._number(key, t, *conv) for t in items]

    def get_ints(self, key: str, required: bool = False):
        return self._list(key, (_INT_RE, int, "an integer"), required)

    def get_floats(self, key: str, required: bool = False):
        return self._list(key, (_FLOAT_RE, float, "a number"), required)

    def unused(self):
        out = [o for o in self.options.values() if not o.used and o.value is not None]
        return sorted(out + list(self.extra), key=lambda o: o.line)


def read_cfg_text(text: str, path: str = "<cfg>") -> list:
    """Parses cfg text into Sections (no interpretation of keys)."""
    sections: list[Section] = []
    cur: Section | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.replace(" ", "").replace("\t", "").replace("\r", "")
        if not s or s[0] in "#;":
            continue
        if s[0] == "[":
            if not s.endswith("]"):
                raise CfgError(f"malformed section header {line.strip()!r}", path, lineno)
            name = s[1:-1]
            if name not in SECTION_ALIASES:
                raise CfgError(f"unknown section [{name}]", path, lineno)
            if not sections and SECTION_ALIASES[name] != "net":
                raise CfgError(f"first section must be [net] or [network], not [{name}]", path, lineno)
            if sections and SECTION_ALIASES[name] == "net":
                raise CfgError(f"[{name}] may only be the first section", path, lineno)
            cur = Section(name, lineno, path)
            sections.append(cur)
            continue
        if cur is None:
            raise CfgError(f"option {s!r} before any section", path, lineno)
        if "=" not in s:
            warnings.warn(CfgWarning(f"{path}:{lineno}: line {s!r} has no '=', ignored"), stacklevel=2)
            continue
        key, value = s.split("=", 1)
        if value == "" or key == "":
            raise CfgError(f"config line {s!r} has no {'value' if key else 'key'}", path, lineno)
        opt = Option(key, value, lineno)
        if key in cur.options:
            cur.extra.append(opt)
        else:
            cur.options[key] = opt
    if not sections:
        raise CfgError("no sections (an empty cfg?)", path)
    return sections


def read_cfg(path) -> list:
    path = os.fspath(path)
    return read_cfg_text(read_cfg_file_text(path), path)


def warn_unused(section: Section) -> None:
    for o in section.unused():
        warnings.warn(CfgWarning(f"{section.path}:{o.line}: unused field '{o.key} = {o.value}' in [{section.name}]"),
                      stacklevel=3)
