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
from .fileio import atomic_write
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


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise WeightsError("weights file not found", path) from None
    except IsADirectoryError:
        raise WeightsError("is a directory, not a .weights file", path) from None
    except OSError as e:
        raise WeightsError(f"cannot read weights: {e.strerror}", path) from None


_DIRECT = sys.byteorder == "little"


def _read_array(f, tensor, spec, count: int, transpose_header: bool) -> None:
    """Reads ``count`` floats of ``spec`` from ``f`` into ``tensor``: straight into the tensor's memory when
    it is a contiguous little-endian CPU float32 array stored untransposed, else through numpy."""
    import torch

    if _DIRECT and not _transposed(spec, transpose_header) and tensor.device.type == "cpu" and tensor.dtype == torch.float32 \
            and tensor.is_contiguous():
        buf = memoryview(tensor.detach().numpy().reshape(-1)[:count]).cast("B")
        if f.readinto(buf) != 4 * count:
            raise OSError("unexpected end of file")
        return
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
    use) loads what fits and warns instead."""
    import torch

    path = os.fspath(path)
    graph = model.graph
    need = graph.weights_floats
    with _open(path) as f:
        header = Header.parse(f.read(20), path)
        size = os.fstat(f.fileno()).st_size - len(header.raw)
        have, extra_bytes = divmod(size, 4)
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
            warnings.warn(WarningLoad(f"{path}: {msg}; loaded what fits"), stacklevel=2)
        f.seek(len(header.raw))
        off = 0
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
                        _read_array(f, getattr(module, attr_name(spec.name)), spec, count, header.transpose)
                        off += count
        except OSError as e:
            raise WeightsError(f"cannot read weights: {e.strerror or e}", path) from None
    model.weights_header = header
    # readinto() writes tensor memory behind torch's version counters: drop any compiled inference plan
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


def save_weights(model, path, header: Header | None = None):
    """Writes ``model`` as a Darknet ``.weights`` file, atomically. Uses the header read by
    ``load_weights`` (so load -> save is byte-identical) or Darknet's ``0.2.5``, seen=0."""
    path = os.fspath(path)
    header = header or getattr(model, "weights_header", None)
    raw = header.raw if header is not None else DEFAULT_HEADER
    transpose = header.transpose if header is not None else False

    def write(f):
        f.write(raw)
        for layer in model.graph.layers:
            for spec in layer.arrays:
                arr = model.tensor(layer.index, spec.name).detach().to("cpu", copy=False).contiguous().numpy()
                f.write(_to_file(arr.astype("<f4", copy=False), spec, transpose).tobytes())

    atomic_write(path, write, "weights", WeightsError)
