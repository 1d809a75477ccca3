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

import math
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
INT_MAX = 2 ** 31 - 1                     # Darknet's values are C ints
ECHO_CAP = 60                             # characters of a cfg value or line an error message repeats

# Ranges of the values Darknet's own asserts (or its arithmetic: a division, an allocation) need, by key, for
# values read from the file (defaults are not checked). ``(lo, hi)``, either None; "nonzero" for [upsample]'s
# stride (negative: downsample). Every integer is also within a C int.
KEY_RANGES = {
    "size": (1, None), "stride": (1, None), "stride_x": (1, None), "stride_y": (1, None), "filters": (1, None),
    "groups": (1, None), "dilation": (1, None), "output": (1, None), "hidden": (1, None), "num": (1, None),
    "side": (1, None), "classes": (0, None), "coords": (0, None), "pad": (0, None), "padding": (0, None),
    "width": (1, None), "height": (1, None), "channels": (1, None), "out_channels": (1, None),
    "crop_width": (1, None), "crop_height": (1, None), "history_size": (1, None), "atoms": (1, None),
    "inputs": (0, None), "group_id": (0, None), "maxpool_depth": (0, None), "mask": (0, None),
    "sparsity": (0, 1), "beta_nms": (0, 1),
}
SECTION_KEY_RANGES = {("upsample", "stride"): "nonzero"}


def echo(text, quote: bool = True) -> str:
    """``repr(text)`` (or the text), shortened to about ECHO_CAP characters: a message never repeats a 1 MB
    line."""
    text = str(text)
    q = repr if quote else str
    return q(text) if len(text) <= ECHO_CAP else q(text[:ECHO_CAP]) + f"... ({len(text)} characters)"
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
    def _number(self, key, text, regex, conv, kind, rng=None):
        t = text
        m = regex.match(t)
        if m is None:
            raise self.error(f"bad number for '{key}': {echo(text)} is not {kind}", key)
        rest = t[m.end():]
        v = None
        if rest and rest[0] not in "#;":
            if kind == "an integer":
                # Darknet's atoi("2.0") reads 2; accept a float with an integral value, reject others
                fm = _FLOAT_RE.match(t)
                if fm and (not t[fm.end():] or t[fm.end()] in "#;"):
                    f = float(fm.group(0))
                    if math.isfinite(f) and f == int(f):
                        v = int(f) if abs(f) <= INT_MAX else INT_MAX + 1
            if v is None:
                raise self.error(f"bad number for '{key}': {echo(text)} is not {kind}", key)
        elif kind == "an integer":
            digits = m.group(0).lstrip("+-").lstrip("0")
            v = int(m.group(0)) if len(digits) <= 10 else INT_MAX + 1     # (no 4300-digit int() error)
        else:
            v = conv(m.group(0))
        self._check_range(key, v, kind, rng)
        return v

    def _check_range(self, key, v, kind, rng):
        if kind == "an integer" and abs(v) > INT_MAX:
            raise self.error(f"{key}={echo(self.options[key].value)} is out of range (more than a C int holds)", key)
        if kind != "an integer" and not math.isfinite(v):
            raise self.error(f"{key}={v} is not a finite number", key)
        rng = rng or SECTION_KEY_RANGES.get((self.type, key)) or KEY_RANGES.get(key)
        if rng == "nonzero":
            if v == 0:
                raise self.error(f"{key}=0 is out of range: must not be 0", key)
            return
        lo, hi = rng or (None, None)
        if lo is not None and v < lo:
            raise self.error(f"{key}={v} is out of range: must be >= {lo}", key)
        if hi is not None and v > hi:
            raise self.error(f"{key}={v} is out of range: must be <= {hi}", key)

    def _value(self, key: str, required: bool):
        text = self.raw(key)
        if text is None and required:
            raise self.error(f"missing required key '{key}'")
        return text

    def get_int(self, key: str, default=None, required: bool = False, lo=None, hi=None):
        """The key's integer (else ``default``); a value read from the file must lie in ``[lo, hi]`` (when
        given, else KEY_RANGES' range for the key) and in a C int, else a CfgError at its line."""
        text = self._value(key, required)
        rng = (lo, hi) if lo is not None or hi is not None else None
        return default if text is None else self._number(key, text, _INT_RE, int, "an integer", rng)

    def get_float(self, key: str, default=None, required: bool = False, lo=None, hi=None):
        """The key's number (else ``default``): finite, in ``[lo, hi]`` or KEY_RANGES' range."""
        text = self._value(key, required)
        rng = (lo, hi) if lo is not None or hi is not None else None
        return default if text is None else self._number(key, text, _FLOAT_RE, float, "a number", rng)

    def get_str(self, key: str, default=None, required: bool = False):
        text = self._value(key, required)
        return default if text is None else text

    def _list(self, key, conv, required):
        text = self._value(key, required)
        if text is None:
            return None
        text = re.split(r"[#;]", text, maxsplit=1)[0]
        if len(text) > 1_000_000:
            raise self.error(f"'{key}' has {len(text)} characters: too long", key)
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
                raise CfgError(f"malformed section header {echo(line.strip())}", path, lineno)
            name = s[1:-1]
            if name not in SECTION_ALIASES:
                raise CfgError(f"unknown section [{echo(name, quote=False)}]", path, lineno)
            if not sections and SECTION_ALIASES[name] != "net":
                raise CfgError(f"first section must be [net] or [network], not [{name}]", path, lineno)
            if sections and SECTION_ALIASES[name] == "net":
                raise CfgError(f"[{name}] may only be the first section", path, lineno)
            cur = Section(name, lineno, path)
            sections.append(cur)
            continue
        if cur is None:
            raise CfgError(f"option {echo(s)} before any section", path, lineno)
        if "=" not in s:
            warnings.warn(CfgWarning(f"{path}:{lineno}: line {echo(s)} has no '=', ignored"), stacklevel=2)
            continue
        key, value = s.split("=", 1)
        if value == "" or key == "":
            raise CfgError(f"config line {echo(s)} has no {'value' if key else 'key'}", path, lineno)
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
        warnings.warn(CfgWarning(f"{section.path}:{o.line}: unused field {echo(o.key + ' = ' + o.value)} in "
                                 f"[{section.name}]"),
                      stacklevel=3)
