"""File helpers shared by the readers and writers: opening inputs, cfg text reading and atomic writes."""
from __future__ import annotations

import os

from .errors import CfgError, DarknetError


def open_input(path, error, name: str, a_name: str, short: str):
    """``open(path, "rb")``, or ``error`` with one line: ``"{name} not found"``, ``"is a directory, not
    {a_name}"`` or ``"cannot read {short}: <reason>"``."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise error(f"{name} not found", path) from None
    except IsADirectoryError:
        raise error(f"is a directory, not {a_name}", path) from None
    except OSError as e:
        raise error(f"cannot read {short}: {e.strerror or e}", path) from None


def read_input(path, error, name: str, a_name: str, short: str) -> bytes:
    """The whole file, with :func:`open_input`'s one-line errors (a failing read too)."""
    with open_input(path, error, name, a_name, short) as f:
        try:
            return f.read()
        except OSError as e:
            raise error(f"cannot read {short}: {e.strerror or e}", path) from None


def read_cfg_file_text(path) -> str:
    """A cfg file's text (undecodable bytes kept via surrogateescape), or a one-line CfgError."""
    path = os.fspath(path)
    data = read_input(path, CfgError, "cfg file", "a cfg file", "cfg")
    if b"\x00" in data[:4096]:
        raise CfgError("not a text cfg file (binary data; did you swap cfg and weights?)", path)
    return data.decode("utf-8", errors="surrogateescape")


def atomic_write(path, write, what: str = "file", error=DarknetError) -> None:
    """Calls ``write(f)`` on a temporary file beside ``path``, then renames it over ``path``; on any failure
    the temporary file is removed, nothing is left at ``path``, and an OSError becomes ``error``."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise error(f"cannot write {what}: {e.strerror or e}", path) from None
        raise
