"""File helpers shared by the readers and writers: cfg text reading and atomic writes."""
from __future__ import annotations

import os

from .errors import CfgError, DarknetError


def read_cfg_file_text(path) -> str:
    """A cfg file's text (undecodable bytes kept via surrogateescape), or a one-line CfgError."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CfgError("cfg file not found", path) from None
    except IsADirectoryError:
        raise CfgError("is a directory, not a cfg file", path) from None
    except OSError as e:
        raise CfgError(f"cannot read cfg: {e.strerror}", path) from None
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
