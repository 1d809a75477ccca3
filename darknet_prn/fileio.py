"""File helpers shared by the readers and writers: opening inputs, cfg text reading and atomic writes."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import stat

from .errors import CfgError, DarknetError


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)", ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def regular_file_problem(path) -> str | None:
    """Why ``path`` cannot be read as an input file (``"no such file"``, ``"is a FIFO (named pipe)"``, ...),
    without opening it (a FIFO would block); None for a regular file (symlinks followed)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = _not_regular(mode)
    return f"is {kind}, not a regular file" if kind else None


def open_input(path, error, name: str, a_name: str, short: str):
    """``open(path, "rb")`` of a regular file, or ``error`` with one line: ``"{name} not found"``, ``"is a
    directory, not {a_name}"``, ``"is a FIFO (named pipe), not {a_name}"`` (devices, sockets alike: never
    blocks on a FIFO, never reads /dev/zero) or ``"cannot read {short}: <reason>"``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{name} not found", path) from None
    except IsADirectoryError:
        raise error(f"is a directory, not {a_name}", path) from None
    except OSError as e:
        raise error(f"cannot read {short}: {e.strerror or e}", path) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(f"is a directory, not {a_name}", path)
        kind = _not_regular(mode)
        if kind:
            raise error(f"is {kind}, not {a_name}", path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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


# -- atomic, symlink-safe writes ----------------------------------------------------------------------------
#
# Every file the package writes goes through atomic_write (a file object) or atomic_path (a path, for writers
# that open files by name: OpenCV's VideoWriter, the ONNX checker). The new content is written to a temporary
# in the target's directory, created exclusively and without following symlinks (O_CREAT|O_EXCL|O_NOFOLLOW; for
# atomic_path a fresh 0700 directory, which nobody else can plant anything in), then renamed over
# the target: rename replaces a symlink at the target instead of writing through it, and a reader (or a run
# killed at any moment) sees the old file or the complete new one. Temporaries are named
# ``.<name>.<pid>-<random>.part``; the failing write removes its own, and the first successful write
# into a directory removes those left there by processes that no longer exist (killed runs).

_TEMP_RE = re.compile(r"\.(?P<base>.+)\.(?P<pid>\d+)(-[0-9a-f]{8})?\.part")
_swept: set = set()


def _temp_name(d: str, base: str) -> str:
    return os.path.join(d, f".{base}.{os.getpid()}-{secrets.token_hex(4)}.part")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _remove_entry(p: str) -> None:
    """Removes a file, a symlink (not its target) or a directory tree; silently when it is gone."""
    try:
        if stat.S_ISDIR(os.lstat(p).st_mode):
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.remove(p)
    except OSError:
        pass


def remove_stale_temps(d: str) -> list:
    """Removes the temporaries of dead processes (killed writes) from directory ``d``; returns their paths."""
    removed = []
    try:
        names = os.listdir(d)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_RE.fullmatch(name)
        if m and int(m.group("pid")) != os.getpid() and not _alive(int(m.group("pid"))):
            _remove_entry(os.path.join(d, name))
            removed.append(os.path.join(d, name))
    return removed


def check_output(path, what: str = "file", error=DarknetError, make_dirs: bool = False):
    """``(path, directory)`` for writing ``path``, checked up front: ``error`` (one line) for an empty name, a
    directory at ``path``, a missing directory (created when ``make_dirs``) or one that is not writable."""
    path = os.fspath(path)
    if not path:
        raise error(f"cannot write {what}: empty file name")
    d = os.path.dirname(os.path.abspath(path))
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise error(f"cannot write {what}: is a directory", path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise error(f"cannot write {what}: {e.strerror or e}", path) from None
    if make_dirs:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise error(f"cannot write {what}: cannot create directory {d}: {e.strerror or e}", path) from None
    elif not os.path.isdir(d):
        raise error(f"cannot write {what}: directory {d} does not exist", path)
    if not os.access(d, os.W_OK | os.X_OK):
        raise error(f"cannot write {what}: directory {d} is not writable", path)
    return path, d


def _commit(tmp: str, path: str, d: str) -> None:
    os.replace(tmp, path)
    if d not in _swept:
        _swept.add(d)
        remove_stale_temps(d)


def _fail(e: BaseException, what: str, error, path: str):
    if isinstance(e, OSError):
        raise error(f"cannot write {what}: {e.strerror or e}", path) from None
    raise e


def atomic_write(path, write, what: str = "file", error=DarknetError, make_dirs: bool = False,
                 fsync: bool = False) -> None:
    """Calls ``write(f)`` on a binary temporary file beside ``path``, then renames it over ``path``.

    Never follows a symlink (at ``path`` the link itself is replaced); on any failure the temporary is removed
    and ``path`` keeps what it held; an OSError becomes ``error`` (one line naming ``path``). ``make_dirs``
    creates the missing directories; ``fsync`` flushes the data to disk before the rename."""
    path, d = check_output(path, what, error, make_dirs)
    tmp = _temp_name(d, os.path.basename(path))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:                              # something is there already: not ours to remove
        raise error(f"cannot write {what}: {e.strerror or e}", path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        _commit(tmp, path, d)
    except BaseException as e:
        _remove_entry(tmp)
        _fail(e, what, error, path)


class atomic_path:
    """``with atomic_path(path) as tmp:`` -- write the file at ``tmp`` by name (it keeps ``path``'s extension,
    in a fresh private directory beside ``path``); when the block ends without an exception it is renamed over
    ``path``, else removed. The same guarantees as :func:`atomic_write`. Without ``with``: ``.tmp``, then
    ``.commit()`` or ``.abort()``."""

    def __init__(self, path, what: str = "file", error=DarknetError, make_dirs: bool = False):
        self.path, self._dir = check_output(path, what, error, make_dirs)
        self._what, self._error = what, error
        base = os.path.basename(self.path)
        self._tdir = _temp_name(self._dir, base)
        try:
            os.mkdir(self._tdir, 0o700)               # exclusive: fails on anything (a symlink too) already there
        except OSError as e:
            raise error(f"cannot write {what}: {e.strerror or e}", self.path) from None
        self.tmp = os.path.join(self._tdir, "out" + os.path.splitext(base)[1])

    def commit(self) -> None:
        try:
            _commit(self.tmp, self.path, self._dir)
        except BaseException as e:
            self.abort()
            _fail(e, self._what, self._error, self.path)
        self.abort()

    def abort(self) -> None:
        _remove_entry(self._tdir)

    def __enter__(self) -> str:
        return self.tmp

    def __exit__(self, typ, value, tb) -> None:
        if typ is None:
            self.commit()
            return
        self.abort()
        if isinstance(value, OSError):
            _fail(value, self._what, self._error, self.path)
