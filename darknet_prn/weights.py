"""The ``.weights`` codec: header + every layer's arrays in file order, as ``graph.Layer.arrays`` defines.

Header (parser.c): int32 major, minor, revision, then ``seen`` as uint64 when ``major*10 + minor >= 2``
else uint32. ``transpose`` (connected weights stored ``[in][out]``) when major or minor > 1000. Reading and
writing mirror each other; the header read is kept so that load -> save is byte-identical.
"""
from __future__ import annotations

import os
import struct
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import WeightsError
from .fileio import atomic_write, open_input
from .modules import attr_name

DEFAULT_HEADER = struct.pack("<iiiQ", 0, 2, 5, 0)


@dataclass
class Header:
    major: int
    minor: int
    revision: int
    seen: int
    raw: bytes

    @property
    def transpose(self) -> bool:
        return self.major > 1000 or self.minor > 1000

    @classmethod
    def darknet(cls, seen: int) -> "Header":
        """The header Darknet's ``save_weights`` writes: version 0.2.5 and a 64-bit ``seen``."""
        return cls(0, 2, 5, seen, struct.pack("<iiiQ", 0, 2, 5, seen))

    @classmethod
    def parse(cls, data: bytes, path: str) -> "Header":
        if len(data) < 12:
            raise WeightsError(f"too short for a .weights header ({len(data)} bytes)", path)
        major, minor, revision = struct.unpack("<iii", data[:12])
        wide = major * 10 + minor >= 2
        size = 20 if wide else 16
        if len(data) < size:
            raise WeightsError(f"too short for a .weights header ({len(data)} bytes, version {major}.{minor} "
                               f"needs {size})", path)
        seen = struct.unpack("<Q" if wide else "<I", data[12:size])[0]
        return cls(major, minor, revision, seen, bytes(data[:size]))


class WarningLoad(UserWarning):
    pass


def _transposed(spec, transpose_header: bool) -> bool:
    """Whether the file holds the transpose of the array's 2-D view (conv ``flipped``, connected + header)."""
    return spec.transpose == "flipped" or (spec.transpose == "header" and transpose_header)


def _file_view(arr: np.ndarray, spec, transpose_header: bool) -> np.ndarray:
    """Array as it lies in the file -> tensor layout (C order of ``spec.shape``)."""
    if _transposed(spec, transpose_header):
        rows = spec.shape[0]
        cols = spec.size // rows
        return arr.reshape(cols, rows).T.reshape(spec.shape)
    return arr.reshape(spec.shape)


def _to_file(arr: np.ndarray, spec, transpose_header: bool) -> np.ndarray:
    if _transposed(spec, transpose_header):
        rows = spec.shape[0]
        return np.ascontiguousarray(arr.reshape(rows, -1).T).reshape(-1)
    return arr.reshape(-1)


_DIRECT = sys.byteorder == "little"


class Arena:
    """Every ``.weights`` array of a model as a view into one flat float32 CPU tensor, in file order.

    Built when the model is; the modules' parameters and buffers *are* these views (``nn.Parameter`` over a slice
    of the arena), so a ``.weights`` file whose arrays are all stored untransposed is read with one ``preadv``
    straight into the arena, and a change to any array shows as one version-counter bump of the arena.
    :meth:`valid` says whether that still holds: moving or casting the model (``.to``, ``.half``), assigning
    ``param.data`` or replacing a parameter breaks it, and then every reader falls back to the per-array paths.
    """

    def __init__(self, model):
        import torch
        import torch.nn as nn

        total = sum(spec.size for layer in model.graph.layers for spec in layer.arrays)
        # numpy's allocator asks for transparent huge pages on large buffers (torch's does not): reading 20 MB into
        # them is ~1.5x faster (fewer TLB misses), as fast as numpy.fromfile's own buffer
        self.flat = torch.from_numpy(np.empty(total, dtype=np.float32))
        self.entries = []                # (owning dict, attribute, tensor, offset in floats, spec)
        off = 0
        with torch.no_grad():
            for layer in model.graph.layers:
                module = model.layers[layer.index]
                for spec in layer.arrays:
                    name = attr_name(spec.name)
                    old = getattr(module, name)
                    view = self.flat[off:off + spec.size].view(spec.shape)
                    view.copy_(old)
                    if name in module._parameters:
                        new = nn.Parameter(view, requires_grad=old.requires_grad)
                        module._parameters[name] = new
                        self.entries.append((module._parameters, name, new, off, spec))
                    else:
                        module._buffers[name] = view
                        self.entries.append((module._buffers, name, view, off, spec))
                    off += spec.size
        # arrays the file may hold transposed (conv ``flipped``, connected weights with a transposing header)
        self.maybe_transposed = [e for e in self.entries if e[4].transpose]

    def valid(self) -> bool:
        """Whether every array is still its arena view (same tensor object at the same address)."""
        base = self.flat.data_ptr()
        for owner, name, tensor, off, _ in self.entries:
            if owner.get(name) is not tensor or tensor.data_ptr() != base + 4 * off:
                return False
        return True

    def fingerprint(self):
        """Changes whenever any array is written in place (the views share the arena's version counter)."""
        return ("arena", self.flat.data_ptr(), self.flat._version)

    def read(self, fd: int, offset: int, transpose_header: bool) -> None:
        """The whole payload (``flat.numel()`` floats at ``offset``) straight into the arena; arrays the file holds
        transposed are then put in tensor layout in place."""
        import torch

        flat = self.flat.numpy()
        _read_into(fd, [flat], offset)
        for _, _, tensor, off, spec in self.maybe_transposed:
            if _transposed(spec, transpose_header):
                raw = flat[off:off + spec.size].copy()
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(_file_view(raw, spec, transpose_header))))


def _direct_view(tensor, spec, count: int, transpose_header: bool):
    """The tensor's memory as a numpy array (a writable buffer for ``preadv``) when the file's floats can be read
    straight into it (a contiguous little-endian CPU float32 tensor, stored untransposed, fully covered), else
    ``None``."""
    import torch

    if _DIRECT and count == spec.size and tensor.is_cpu and tensor.dtype is torch.float32 and \
            tensor.is_contiguous() and not _transposed(spec, transpose_header):
        return tensor.detach().numpy()           # shares the tensor's memory
    return None


_IOV_MAX = max(1, min(getattr(os, "IOV_MAX", 1024), 1024))


def _preadv(fd: int, views: list, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, views, offset)
    with open(fd, "rb", buffering=0, closefd=False) as f:  # pragma: no cover - platforms without preadv
        f.seek(offset)
        return f.readinto(views[0])


def _read_into(fd: int, views: list, offset: int) -> None:
    """Fills ``views`` (consecutive in the file from ``offset``) with as few ``preadv`` calls as the OS allows
    (Linux moves at most ~2 GiB per call; a short read continues where it stopped)."""
    pending = [m for m in (memoryview(v).cast("B") for v in views) if m.nbytes]   # (none: a cfg without weights)
    i = 0
    while i < len(pending):
        got = _preadv(fd, pending[i:i + _IOV_MAX], offset)
        if got <= 0:
            raise OSError("unexpected end of file")
        offset += got
        while got and i < len(pending):
            n = pending[i].nbytes
            if got >= n:
                got -= n
                i += 1
            else:
                pending[i] = pending[i][got:]
                got = 0


def _read_array(f, offset: int, tensor, spec, count: int, transpose_header: bool) -> None:
    """Reads ``count`` floats of ``spec`` at ``offset`` into ``tensor`` through numpy (transposed arrays, other
    dtypes or devices, and a partially covered last array)."""
    import torch

    f.seek(offset)
    arr = np.fromfile(f, dtype="<f4", count=count)
    if arr.size != count:
        raise OSError("unexpected end of file")
    if count == spec.size:
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(_file_view(arr, spec, transpose_header))))
    else:       # a partially covered array (partial load) keeps the tail of its current values
        tensor.view(-1)[:count].copy_(torch.from_numpy(arr))


def load_weights(model, path, partial: bool = False):
    """Loads ``path`` into ``model`` (a :class:`darknet_prn.model.Darknet`). Returns the Header.

    The file must hold exactly the floats the cfg needs; ``partial=True`` (Darknet's transfer-learning
    use) loads what fits and warns instead. Arrays that can be are read straight into the tensors' memory,
    consecutive ones in one ``preadv`` call: one copy from the page cache, no intermediate buffer."""
    import torch

    path = os.fspath(path)
    graph = model.graph
    need = graph.weights_floats
    with open_input(path, WeightsError, "weights file", "a .weights file", "weights") as f:
        header = Header.parse(f.read(20), path)
        size = os.fstat(f.fileno()).st_size - len(header.raw)
        have, extra_bytes = divmod(size, 4)
        filled = layers_filled(graph, have)
        if have != need or extra_bytes:
            if have < need:
                msg = (f"too short: the cfg needs {need:,} floats, the file has {have:,}; it runs out at "
                       f"{_where(graph, have)}")
            else:
                msg = (f"too long: the cfg needs {need:,} floats, the file has {have:,}"
                       + (f" and {extra_bytes} stray bytes" if extra_bytes else "")
                       + " (wrong cfg for these weights?)")
            if not partial:
                raise WeightsError(msg + "; pass partial=True / --partial to load what fits", path)
            what = f"layers 0-{filled - 1} of {len(graph.layers)} filled" if filled else "no layer filled completely"
            warnings.warn(WarningLoad(f"{path}: {msg}; loaded what fits ({what})"), stacklevel=2)
        fd = f.fileno()
        arena = getattr(model, "_arena", None)
        if _DIRECT and have == need and arena is not None and arena.valid():
            try:
                with torch.no_grad():
                    arena.read(fd, len(header.raw), header.transpose)
            except OSError as e:
                raise WeightsError(f"cannot read weights: {e.strerror or e}", path) from None
            return _loaded(model, header, filled)
        off = 0                                   # floats consumed
        batch, batch_at = [], len(header.raw)     # direct views waiting for one preadv, and their file offset
        try:
            with torch.no_grad():
                for layer in graph.layers:
                    if not layer.arrays:
                        continue
                    module = model.layers[layer.index]
                    for spec in layer.arrays:
                        count = min(spec.size, have - off)
                        if count <= 0:
                            break
                        tensor = getattr(module, attr_name(spec.name))
                        view = _direct_view(tensor, spec, count, header.transpose)
                        if view is not None:
                            if not batch:
                                batch_at = len(header.raw) + 4 * off
                            batch.append(view)
                        else:
                            if batch:
                                _read_into(fd, batch, batch_at)
                                batch = []
                            _read_array(f, len(header.raw) + 4 * off, tensor, spec, count, header.transpose)
                        off += count
                if batch:
                    _read_into(fd, batch, batch_at)
        except OSError as e:
            raise WeightsError(f"cannot read weights: {e.strerror or e}", path) from None
    return _loaded(model, header, filled)


def layers_filled(graph, floats: int) -> int:
    """How many leading layers ``floats`` floats of a ``.weights`` payload fill completely (Darknet's "Loaded N
    layers" of a partial file)."""
    off = 0
    for layer in graph.layers:
        off += layer.weights_floats
        if off > floats:
            return layer.index
    return len(graph.layers)


def _loaded(model, header: Header, filled: int) -> Header:
    model.weights_header = header
    model.layers_loaded = filled      # layers 0 .. filled-1 hold the file's values
    # direct reads write tensor memory behind torch's version counters: drop any compiled inference plan
    invalidate = getattr(model, "invalidate_fast_plan", None)
    if invalidate is not None:
        invalidate()
    return header


def _where(graph, offset):
    off = 0
    for layer in graph.layers:
        for spec in layer.arrays:
            if off + spec.size > offset:
                return (f"layer {layer.index} [{layer.section.name}] ({layer.where}), array '{spec.name}' "
                        f"({offset - off:,} of {spec.size:,} floats present)")
            off += spec.size
    return "the end"


def save_weights(model, path, header: Header | None = None, upto: int | None = None):
    """Writes ``model`` as a Darknet ``.weights`` file, atomically. Uses the header read by
    ``load_weights`` (so load -> save is byte-identical) or Darknet's ``0.2.5``, seen=0. ``upto``: only the
    arrays of layers ``0 .. upto-1`` (``save_weights_upto``)."""
    path = os.fspath(path)
    header = header or getattr(model, "weights_header", None)
    raw = header.raw if header is not None else DEFAULT_HEADER
    transpose = header.transpose if header is not None else False

    def write(f):
        f.write(raw)
        for layer in model.graph.layers[:upto]:
            for spec in layer.arrays:
                arr = model.tensor(layer.index, spec.name).detach().to("cpu", copy=False).contiguous().numpy()
                f.write(_to_file(arr.astype("<f4", copy=False), spec, transpose).tobytes())

    atomic_write(path, write, "weights", WeightsError, fsync=True)
