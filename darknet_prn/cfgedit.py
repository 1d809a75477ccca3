"""Line-level edits of cfg text that keep everything else (comments, spacing, key order) as it is:
section spans, reading/replacing a section's first ``key=`` (Darknet's first occurrence wins), truncation."""
from __future__ import annotations

import re

_KEY = re.compile(r"^\s*([A-Za-z_0-9]+)\s*=")


def sections(lines):
    """[(type, start line index, end)] of a cfg's lines."""
    out = []
    for i, line in enumerate(lines):
        s = line.replace(" ", "").replace("\t", "")
        if s.startswith("["):
            if out:
                out[-1][2] = i
            out.append([s[1:s.find("]")] if "]" in s else s[1:], i, len(lines)])
    return out


def find_key(lines, start, end, key):
    for i in range(start + 1, end):
        m = _KEY.match(lines[i])
        if m and m.group(1) == key and not lines[i].lstrip().startswith(("#", ";")):
            return i
    return None


def get_key(lines, start, end, key, default=None):
    i = find_key(lines, start, end, key)
    return default if i is None else lines[i].split("=", 1)[1].strip()


def set_key(lines, start, end, key, value) -> int:
    """Replace the first ``key=`` of a section (or add it after the header); returns how many lines were added."""
    i = find_key(lines, start, end, key)
    if i is None:
        lines.insert(start + 1, f"{key}={value}")
        return 1
    if lines[i].split("=", 1)[1].replace(" ", "").replace("\t", "") != str(value).replace(" ", ""):
        lines[i] = f"{key}={value}"         # an unchanged value keeps its line as written
    return 0


def truncate(text: str, n_layers: int) -> str:
    """The cfg text up to (not including) layer ``n_layers``: ``[net]`` and the first ``n_layers`` layer sections
    (what Darknet's ``partial ... N`` weights belong to)."""
    lines = text.split("\n")
    layer_secs = [s for s in sections(lines) if s[0] not in ("net", "network")]
    if n_layers >= len(layer_secs):
        return text
    return "\n".join(lines[:layer_secs[n_layers][1]]).rstrip() + "\n"
