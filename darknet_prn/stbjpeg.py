"""JPEG pixels exactly as stb_image (Darknet's decoder) produces them.

Darknet's ``load_image`` uses stb_image. Other JPEG decoders (libjpeg-turbo inside OpenCV, PIL) use another
IDCT rounding, another chroma up-sampling and another YCbCr->RGB rounding, so they differ by up to ±3 LSB in
a few percent of the values -- enough to move a yolov3-tiny confidence by about one point. The entropy-coded
coefficients, though, are the same for every decoder. So: the quantised DCT coefficients come from our C
Huffman decoder (``darknet_prn._native.decode_scan``: sequential and progressive scans, restart intervals) or,
when the extension is not built or declines a file, from libjpeg (through the ``jpeglib`` package); everything
after that is stb_image 2.x's integer arithmetic re-implemented here (in C when built, else numpy; same bits):

* dequantisation into ``short`` (wrapping), ``stbi__idct_block`` (jidctint-derived, 12-bit constants, two
  passes with ``>> 10`` and ``>> 17``, clamp to 0..255; stb's SSE2 IDCT is bit-identical to it);
* up-sampling per output row with stb's ``stbi__resample`` state machine: ``resample_row_1``, ``_v_2``, ``_h_2``
  (including its last-pixel quirk), ``_hv_2`` (triangle filter, ``+8 >> 4``) and ``_generic`` (nearest);
* ``stbi__YCbCr_to_RGB_row`` (20-bit fixed point, 12-bit constants, the ``& 0xffff0000`` on the Cb term of G),
  Adobe/RGB-id/JFIF colour-space rules and CMYK/YCCK with ``stbi__blinn_8x8``.

:func:`decode_jpeg_stb` returns ``None`` whenever it cannot guarantee stb's pixels (neither decoder available,
not a baseline/progressive 8-bit Huffman JPEG, unusual sampling factors, corrupt data both decoders reject);
the caller then falls back to OpenCV.
"""
from __future__ import annotations

import functools
import os
import warnings

import numpy as np

_SOF_SUPPORTED = {0xC0, 0xC1, 0xC2}      # baseline, extended sequential, progressive (Huffman, 8-bit)
_SOF_ANY = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_ZIGZAG = np.array([0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
                    20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58,
                    59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63])


def _next_segment(data: bytes, pos: int):
    """The marker segment at ``pos`` (fill bytes and stand-alone markers skipped): ``(marker, payload, position
    after it)``; ``(0xD9, b"", ...)`` at EOI or the end of the data; ``None`` when the bytes are no marker."""
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        m = data[pos + 1]
        if m == 0xFF:            # fill byte
            pos += 1
            continue
        if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
            pos += 2
            continue
        if m == 0xD9:
            return m, b"", pos + 2
        seg_len = (data[pos + 2] << 8) | data[pos + 3]
        seg = data[pos + 4: pos + 2 + seg_len]
        if seg_len < 2 or len(seg) != seg_len - 2:
            return None
        return m, seg, pos + 2 + seg_len
    return 0xD9, b"", n


def frame_size(data: bytes):
    """``(width, height)`` of the first frame header (SOF) before any scan, or ``None``: what a decoder is about
    to allocate, read from the first bytes only (the pixel limit checks it before decoding)."""
    pos = 2 if data[:2] == b"\xff\xd8" else len(data)
    while True:
        segment = _next_segment(data, pos)
        if segment is None or segment[0] in (0xD9, 0xDA):
            return None
        m, seg, pos = segment
        if m in _SOF_ANY and len(seg) >= 5:
            return (seg[3] << 8) | seg[4], (seg[1] << 8) | seg[2]


def parse_header(data: bytes):
    """Markers up to the first SOS: ``dict(width, height, sof, precision, comps=[(id, h, v, tq)], qt={tq: (64,)
    natural order}, jfif, adobe_transform)`` or ``None`` when ``data`` is not a parsable JPEG."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    info = dict(jfif=False, adobe_transform=-1, qt={}, comps=None)
    pos = 2
    while True:
        segment = _next_segment(data, pos)
        if segment is None:
            return None
        m, seg, pos = segment
        if m == 0xD9:
            break
        if m == 0xDA:            # SOS: header complete
            info["sos"] = True
            break
        if m in _SOF_ANY:
            if len(seg) < 6 or "sof" in info:    # a second frame header: not a plain JPEG
                return None
            info["sof"] = m
            info["precision"] = seg[0]
            info["height"] = (seg[1] << 8) | seg[2]
            info["width"] = (seg[3] << 8) | seg[4]
            nc = seg[5]
            if len(seg) < 6 + 3 * nc:
                return None
            info["comps"] = [(seg[6 + 3 * i], seg[7 + 3 * i] >> 4, seg[7 + 3 * i] & 15, seg[8 + 3 * i])
                             for i in range(nc)]
        elif m == 0xDB:          # DQT
            p = 0
            while p < len(seg):
                pq, tq = seg[p] >> 4, seg[p] & 15
                p += 1
                cnt = 128 if pq else 64
                raw = seg[p:p + cnt]
                if len(raw) != cnt:
                    return None
                vals = (np.frombuffer(raw, ">u2") if pq else np.frombuffer(raw, np.uint8)).astype(np.int32)
                q = np.zeros(64, np.int32)
                q[_ZIGZAG] = vals
                info["qt"][tq] = q
                p += cnt
        elif m == 0xE0 and len(seg) >= 5 and seg[:5] == b"JFIF\0":
            info["jfif"] = True
        elif m == 0xEE and len(seg) >= 12 and seg[:6] == b"Adobe\0":
            info["adobe_transform"] = seg[11]
    if info["comps"] is None or "sos" not in info:
        return None
    return info


def _jpeglib():
    try:
        import jpeglib  # noqa: F401
        return jpeglib
    except Exception:  # pragma: no cover - optional dependency
        return None


def have_exact_jpeg() -> bool:
    """Whether stb-exact JPEG decoding is available (the C kernels are built or ``jpeglib`` is importable)."""
    return _native_module() is not None or _jpeglib() is not None


def decode_jpeg_stb(path, data: bytes | None = None):
    """Decode the JPEG file at ``path`` to ``(H, W, 3)`` uint8 **RGB** exactly as ``stbi_load(path, .., 3)``;
    ``None`` when that cannot be guaranteed (see the module doc)."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    hdr = parse_header(data)
    if hdr is None or hdr.get("sof") not in _SOF_SUPPORTED or hdr.get("precision") != 8:
        return None
    comps = hdr["comps"]
    if len(comps) not in (1, 3, 4):
        return None
    hmax = max(c[1] for c in comps)
    vmax = max(c[2] for c in comps)
    if any(c[1] < 1 or c[2] < 1 or hmax % c[1] or vmax % c[2] for c in comps):
        return None
    if any(c[3] not in hdr["qt"] for c in comps):
        return None
    width, height = hdr["width"], hdr["height"]
    if width < 1 or height < 1:
        return None
    planes = _native_coefficients(data, hdr, hmax, vmax)
    if planes is None:
        jl = _jpeglib()
        if jl is None:
            return None
        planes = _read_coefficients(jl, path, comps)
    if planes is None:
        return None
    try:
        pxs = []
        for (cid, h, v, tq), coef in zip(comps, planes):
            cw = (width * h + hmax - 1) // hmax
            ch = (height * v + vmax - 1) // vmax
            bh, bw = coef.shape[:2]
            if bh * 8 < ch or bw * 8 < cw:
                return None
            pxs.append((idct_image(coef, hdr["qt"][tq]), ch, cw, hmax // h, vmax // v))
        native = _native_module()
        mode = _native_mode(comps, hdr["jfif"], hdr["adobe_transform"])
        if native is not None and mode is not None:
            out = np.empty((height, width, 3), np.uint8)
            native.upsample_rgb(out, width, height, mode,
                                tuple((px, ch, px.shape[1], hs, vs) for px, ch, _, hs, vs in pxs))
            return out
        pxs = [(px[:ch, :cw], hs, vs) for px, ch, cw, hs, vs in pxs]
        # up-sampling and colour conversion in strips of rows: small, cache-resident temporaries
        out = np.empty((height, width, 3), np.uint8)
        for j0 in range(0, height, _ROW_STRIP):
            j1 = min(j0 + _ROW_STRIP, height)
            samples = [upsample(px, hs, vs, width, height, rows=(j0, j1)) for px, hs, vs in pxs]
            out[j0:j1] = to_rgb(samples, comps, hdr["jfif"], hdr["adobe_transform"])
    except Exception:
        return None
    return out


_ROW_STRIP = 32


def _native_module():
    """The C kernels (``darknet_prn._native``) unless they were not built or are switched off."""
    from . import native
    return native.module()


def _native_mode(comps, jfif: bool, adobe_transform: int):
    """``upsample_rgb``'s mode for these components (0 grey, 1 YCbCr, 2 RGB) or ``None`` (CMYK/YCCK: numpy)."""
    if len(comps) == 1:
        return 0
    if len(comps) == 3:
        return 2 if _is_rgb(comps, adobe_transform, jfif) else 1
    return None


def _is_rgb(comps, adobe_transform: int, jfif: bool) -> bool:
    """stb's rule for 3 components stored as RGB (component ids 'R','G','B', or Adobe transform 0 without JFIF)."""
    rgb_ids = sum(1 for i, c in enumerate(comps) if c[0] == b"RGB"[i])
    return rgb_ids == 3 or (adobe_transform == 0 and not jfif)


def _native_coefficients(data: bytes, hdr: dict, hmax: int, vmax: int):
    """The quantised coefficients of a Huffman-coded JPEG (sequential or progressive), entropy-decoded scan by scan
    by the C kernel ``decode_scan``, as ``(blocks_h, blocks_w, 8, 8)`` int16 arrays padded to whole MCUs.
    ``None`` when the kernel is not built or the file is anything but plain (then libjpeg decodes it)."""
    native = _native_module()
    if native is None:
        return None
    comps = hdr["comps"]
    progressive = hdr["sof"] == 0xC2
    width, height = hdr["width"], hdr["height"]
    mcus_x, mcus_y = -(-width // (8 * hmax)), -(-height // (8 * vmax))
    planes = {c[0]: np.zeros((mcus_y * c[2], mcus_x * c[1], 8, 8), np.int16) for c in comps}
    if len(planes) != len(comps):
        return None                                   # two components with one id
    sampling = {c[0]: c for c in comps}
    tables, restart, seen, sof_seen = {}, 0, set(), False
    pos = 2
    while progressive or len(seen) < len(comps):     # sequential: each component once; progressive: up to EOI
        segment = _next_segment(data, pos)
        if segment is None:
            return None
        m, seg, pos = segment
        if m == 0xD9:
            break
        if m in _SOF_ANY:
            if sof_seen:
                return None
            sof_seen = True
        elif m == 0xDB and seen:
            return None                               # tables redefined between scans: leave it to libjpeg
        elif m == 0xC4:                               # DHT: (class, id) -> 16 counts + values
            p = 0
            while p + 17 <= len(seg):
                cnt = sum(seg[p + 1:p + 17])
                tables[seg[p] >> 4, seg[p] & 15] = bytes(seg[p + 1:p + 17 + cnt])
                p += 17 + cnt
            if p != len(seg):
                return None
        elif m == 0xDD:                               # DRI
            if len(seg) < 2:
                return None
            restart = (seg[0] << 8) | seg[1]
        elif m == 0xDA:                               # SOS
            ns = seg[0] if seg else 0
            if ns < 1 or len(seg) != 4 + 2 * ns:
                return None
            ss, se, ahl = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns]
            if not progressive:
                ss, se, ahl = 0, 63, 0                # fixed for sequential scans, whatever the header says
            scan = []
            for i in range(ns):
                cid, tsel = seg[1 + 2 * i], seg[2 + 2 * i]
                c = sampling.get(cid)
                dc, ac = tables.get((0, tsel >> 4), b""), tables.get((1, tsel & 15), b"")
                if c is None or (cid in seen and not progressive):
                    return None
                _, h, v, _ = c
                cw, ch = -(-width * h // hmax), -(-height * v // vmax)
                coef = planes[cid]
                scan.append((coef, coef.shape[1], coef.shape[0], h, v, -(-cw // 8), -(-ch // 8), dc, ac))
                seen.add(cid)
            try:
                pos = native.decode_scan(data, pos, restart, mcus_x, mcus_y, progressive, ss, se, ahl >> 4,
                                         ahl & 15, tuple(scan))
            except ValueError:
                return None
            if pos < 0:
                return None
    if len(seen) != len(comps):
        return None
    return [planes[c[0]] for c in comps]


def _read_coefficients(jl, path, comps):
    """The quantised DCT coefficients of every component as ``(blocks_h, blocks_w, 8, 8)`` int16 arrays, read by
    libjpeg through ``jpeglib.read_dct``; ``None`` on any libjpeg error.

    Only ``read_dct``: ``jpeglib``'s faster C entry point ``read_jpeg_dct`` (straight into caller-sized buffers)
    crashes the process on files libjpeg rejects (a fuzzed header was enough), while ``read_dct`` raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = jl.read_dct(os.fspath(path))
            d.load()
            planes = [d.Y, d.Cb, d.Cr, d.K][:len(comps)]
    except Exception:
        return None
    if any(p is None for p in planes):
        return None
    return [np.asarray(p) for p in planes]


# ---------------------------------------------------------------------------------------------------------------
# stb's arithmetic


def _f2f(x: float) -> int:
    """``stbi__f2f``: ``(int)(x * 4096 + 0.5)`` (float constant promoted to double)."""
    return int(np.float64(np.float32(x)) * 4096 + 0.5)


_C = {k: _f2f(v) for k, v in dict(c0541=0.5411961, cm1847=-1.847759065, c0765=0.765366865, c1175=1.175875602,
                                  c0298=0.298631336, c2053=2.053119869, c3072=3.072711026, c1501=1.501321110,
                                  cm0899=-0.899976223, cm2562=-2.562915447, cm1961=-1.961570560,
                                  cm0390=-0.390180644).items()}


def _idct_1d(s):
    """``STBI__IDCT_1D`` on a list of 8 int32 arrays; returns ``(x0, x1, x2, x3, t0, t1, t2, t3)``."""
    i32 = np.int32
    p2, p3 = s[2], s[6]
    p1 = (p2 + p3) * i32(_C["c0541"])
    t2 = p1 + p3 * i32(_C["cm1847"])
    t3 = p1 + p2 * i32(_C["c0765"])
    p2, p3 = s[0], s[4]
    t0 = (p2 + p3) * i32(4096)
    t1 = (p2 - p3) * i32(4096)
    x0, x3 = t0 + t3, t0 - t3
    x1, x2 = t1 + t2, t1 - t2
    t0, t1, t2, t3 = s[7], s[5], s[3], s[1]
    p3 = t0 + t2
    p4 = t1 + t3
    p1 = t0 + t3
    p2 = t1 + t2
    p5 = (p3 + p4) * i32(_C["c1175"])
    t0 = t0 * i32(_C["c0298"])
    t1 = t1 * i32(_C["c2053"])
    t2 = t2 * i32(_C["c3072"])
    t3 = t3 * i32(_C["c1501"])
    p1 = p5 + p1 * i32(_C["cm0899"])
    p2 = p5 + p2 * i32(_C["cm2562"])
    p3 = p3 * i32(_C["cm1961"])
    p4 = p4 * i32(_C["cm0390"])
    t3 = t3 + p1 + p4
    t2 = t2 + p2 + p3
    t1 = t1 + p2 + p4
    t0 = t0 + p1 + p3
    return x0, x1, x2, x3, t0, t1, t2, t3


def idct_blocks(coef: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """Dequantise (into ``short``, wrapping) and ``stbi__idct_block`` ``(N, 8, 8)`` natural-order blocks -> uint8."""
    with np.errstate(over="ignore"):
        d = (np.asarray(coef).astype(np.int32) * np.asarray(qt, np.int32)[None]).astype(np.int16).astype(np.int32)
        # columns: s_k = row k of every column
        x0, x1, x2, x3, t0, t1, t2, t3 = _idct_1d([d[:, k, :] for k in range(8)])
        x0, x1, x2, x3 = (x + np.int32(512) for x in (x0, x1, x2, x3))
        v = np.empty_like(d)
        v[:, 0, :] = (x0 + t3) >> 10
        v[:, 7, :] = (x0 - t3) >> 10
        v[:, 1, :] = (x1 + t2) >> 10
        v[:, 6, :] = (x1 - t2) >> 10
        v[:, 2, :] = (x2 + t1) >> 10
        v[:, 5, :] = (x2 - t1) >> 10
        v[:, 3, :] = (x3 + t0) >> 10
        v[:, 4, :] = (x3 - t0) >> 10
        # rows
        x0, x1, x2, x3, t0, t1, t2, t3 = _idct_1d([v[:, :, k] for k in range(8)])
        bias = np.int32(65536 + (128 << 17))
        x0, x1, x2, x3 = (x + bias for x in (x0, x1, x2, x3))
        o = np.empty_like(d)
        o[:, :, 0] = (x0 + t3) >> 17
        o[:, :, 7] = (x0 - t3) >> 17
        o[:, :, 1] = (x1 + t2) >> 17
        o[:, :, 6] = (x1 - t2) >> 17
        o[:, :, 2] = (x2 + t1) >> 17
        o[:, :, 5] = (x2 - t1) >> 17
        o[:, :, 3] = (x3 + t0) >> 17
        o[:, :, 4] = (x3 - t0) >> 17
    return np.clip(o, 0, 255).astype(np.uint8)


def _idct_matrix() -> np.ndarray:
    """``STBI__IDCT_1D`` with its output butterfly as an integer 8x8 matrix: ``out[i] = sum_k M[i, k] * s[k]``
    (before the pass's bias and shift)."""
    eye = np.eye(8, dtype=np.int64)
    x0, x1, x2, x3, t0, t1, t2, t3 = _idct_1d([eye[k] for k in range(8)])
    return np.array([x0 + t3, x1 + t2, x2 + t1, x3 + t0, x3 - t0, x2 - t1, x1 - t2, x0 - t3], np.int64)


_IDCT_M = _idct_matrix()
_IDCT_MF = _IDCT_M.astype(np.float64)
_IDCT_MFT = np.ascontiguousarray(_IDCT_MF.T)
_IDCT_ROWSUM = int(np.abs(_IDCT_M).sum(axis=1).max())
_BIAS2 = 65536 + (128 << 17)


def idct_image(coef: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """Dequantise and ``stbi__idct_block`` a component's ``(bh, bw, 8, 8)`` coefficients -> ``(bh*8, bw*8)`` uint8.

    The same integers as :func:`idct_blocks`: in C (``darknet_prn._native.idct_plane``) when built, else as two
    float64 matrix products: each 1-D pass of stb's
    IDCT is an integer-linear map (``_IDCT_M``) followed by a bias and an arithmetic shift. float64 holds every
    intermediate exactly (``|sum| <= 32768 * 30610 * 30610 / 1024 < 2**53``) and ``floor(x * 2**-k)`` is
    ``x >> k``. C's int32 wrap-around can only matter in the second pass and only for dequantised
    coefficients beyond what 8-bit images produce; then that pass's sum is wrapped to int32 explicitly.
    """
    coef = np.asarray(coef)
    bh, bw = coef.shape[:2]
    qt = np.asarray(qt, np.int32).reshape(8, 8)
    out = np.empty((bh * 8, bw * 8), np.uint8)
    native = _native_module()
    if native is not None:
        native.idct_plane(np.ascontiguousarray(coef, np.int16), np.ascontiguousarray(qt), out, bh, bw)
        return out
    step = max(1, _IDCT_CHUNK // max(bw, 1))          # block rows per chunk: small, cache-resident temporaries
    for by in range(0, bh, step):
        blk = coef[by:by + step]
        k = blk.shape[0]
        out[by * 8:(by + k) * 8] = _idct_chunk(blk.reshape(k * bw, 8, 8), qt).reshape(8, k, bw, 8) \
            .transpose(1, 0, 2, 3).reshape(k * 8, bw * 8)
    return out


_IDCT_CHUNK = 256    # blocks per matrix product


def _idct_chunk(c: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """``(n, 8, 8)`` coefficients -> ``(8, n, 8)`` uint8 pixels (row, block, column)."""
    n = c.shape[0]
    with np.errstate(over="ignore"):
        d = np.multiply(c, qt, dtype=np.int32).astype(np.int16)    # stb dequantises into short (wrapping)
    m = max(-int(d.min()), int(d.max()))
    # pass 1 (columns): (k, n, c) -> (i, n, c); |sum| <= 32768 * rowsum < 2**31, no wrap possible
    dk = np.empty((8, n, 8), np.float64)
    dk[...] = d.transpose(1, 0, 2)
    v = _IDCT_MF @ dk.reshape(8, n * 8)
    v += 512.0
    v *= 1.0 / 1024.0
    np.floor(v, out=v)
    # pass 2 (rows): v is (r, n, k) with k contiguous -> (r, n, j)
    o = v.reshape(8 * n, 8) @ _IDCT_MFT
    vb = (m * _IDCT_ROWSUM + 512) // 1024 + 1
    if vb * _IDCT_ROWSUM + _BIAS2 < 2 ** 31:
        o += float(_BIAS2)
        o *= 1.0 / 131072.0
        np.floor(o, out=o)
        np.clip(o, 0.0, 255.0, out=o)
        return o.astype(np.uint8).reshape(8, n, 8)
    oi = o.astype(np.int64)                          # int32 wrap-around as in C
    oi += _BIAS2
    return np.clip(oi.astype(np.int32) >> 17, 0, 255).astype(np.uint8).reshape(8, n, 8)


def _row_sources(comp_h: int, vs: int, height: int):
    """stb's per-output-row (near, far) source rows of a component (``stbi__resample`` ystep/ypos/line0/line1)."""
    near = np.empty(height, np.int64)
    far = np.empty(height, np.int64)
    ystep, ypos, line0, line1 = vs >> 1, 0, 0, 0
    half = vs >> 1
    for j in range(height):
        y_bot = ystep >= half
        near[j], far[j] = (line1, line0) if y_bot else (line0, line1)
        ystep += 1
        if ystep >= vs:
            ystep = 0
            line0 = line1
            ypos += 1
            if ypos < comp_h:
                line1 += 1
    return near, far


@functools.lru_cache(maxsize=64)
def _row_sources_clamped(comp_h: int, vs: int, height: int):
    near_i, far_i = _row_sources(comp_h, vs, height)
    return np.minimum(near_i, comp_h - 1), np.minimum(far_i, comp_h - 1)


def upsample(px: np.ndarray, hs: int, vs: int, width: int, height: int, rows=None) -> np.ndarray:
    """A component's samples ``(comp_h, comp_w)`` -> ``(height, width)`` with stb's resample kernels (only the
    output rows ``range(*rows)`` when ``rows`` is given)."""
    comp_h = px.shape[0]
    w = (width + hs - 1) // hs                       # r->w_lores
    src = px[:, :w]
    if src.shape[1] < w:                             # cannot happen for valid sampling; be safe
        src = np.pad(src, ((0, 0), (0, w - src.shape[1])), mode="edge")
    near_i, far_i = _row_sources_clamped(comp_h, vs, height)
    if rows is not None:
        near_i, far_i = near_i[rows[0]:rows[1]], far_i[rows[0]:rows[1]]
    height = len(near_i)
    near = src[near_i].astype(np.int32)
    if hs == 1 and vs == 1:
        out = near
    elif hs == 1 and vs == 2:
        out = (3 * near + src[far_i].astype(np.int32) + 2) >> 2
    elif hs == 2 and vs == 1:
        out = np.empty((height, 2 * w), np.int32)
        if w == 1:
            out[:, 0] = out[:, 1] = near[:, 0]
        else:
            out[:, 0] = near[:, 0]
            out[:, 1] = (near[:, 0] * 3 + near[:, 1] + 2) >> 2
            if w > 2:
                mid = 3 * near[:, 1:w - 1] + 2
                out[:, 2:2 * (w - 1):2] = (mid + near[:, 0:w - 2]) >> 2
                out[:, 3:2 * (w - 1):2] = (mid + near[:, 2:w]) >> 2
            out[:, 2 * (w - 1)] = (near[:, w - 2] * 3 + near[:, w - 1] + 2) >> 2   # stb's quirk, kept
            out[:, 2 * w - 1] = near[:, w - 1]
    elif hs == 2 and vs == 2:
        t = 3 * near + src[far_i].astype(np.int32)
        out = np.empty((height, 2 * w), np.int32)
        if w == 1:
            out[:, 0] = out[:, 1] = (t[:, 0] + 2) >> 2
        else:
            out[:, 0] = (t[:, 0] + 2) >> 2
            out[:, 1:2 * w - 1:2] = (3 * t[:, :w - 1] + t[:, 1:] + 8) >> 4
            out[:, 2:2 * w - 1:2] = (3 * t[:, 1:] + t[:, :w - 1] + 8) >> 4
            out[:, 2 * w - 1] = (t[:, w - 1] + 2) >> 2
    else:                                            # generic: nearest neighbour, horizontally only
        out = np.repeat(near, hs, axis=1)
    return (out[:, :width] & 0xFF).astype(np.uint8)


def _ycbcr_to_rgb(y, cb, cr) -> np.ndarray:
    """``stbi__YCbCr_to_RGB_row``."""
    def f2f(x):
        return int(np.float32(x) * np.float32(4096.0) + np.float32(0.5)) << 8
    y_fixed = (y.astype(np.int32) << 20) + (1 << 19)
    cr = cr.astype(np.int32) - 128
    cb = cb.astype(np.int32) - 128
    r = y_fixed + cr * np.int32(f2f(1.40200))
    g = y_fixed + cr * np.int32(-f2f(0.71414)) + ((cb * np.int32(-f2f(0.34414))) & np.int32(-65536))
    b = y_fixed + cb * np.int32(f2f(1.77200))
    return np.stack([np.clip(c >> 20, 0, 255) for c in (r, g, b)], axis=-1).astype(np.uint8)


def _blinn(x, y) -> np.ndarray:
    t = x.astype(np.uint32) * y.astype(np.uint32) + 128
    return ((t + (t >> 8)) >> 8).astype(np.uint8)


def to_rgb(samples, comps, jfif: bool, adobe_transform: int) -> np.ndarray:
    """Full-resolution component planes -> ``(H, W, 3)`` uint8 RGB with stb's colour rules (``req_comp=3``)."""
    n = len(comps)
    if n == 1:
        return np.repeat(samples[0][:, :, None], 3, axis=2)
    if n == 3:
        if _is_rgb(comps, adobe_transform, jfif):
            return np.stack(samples, axis=-1)
        return _ycbcr_to_rgb(*samples)
    # 4 components
    if adobe_transform == 0:      # CMYK
        m = samples[3]
        return np.stack([_blinn(samples[i], m) for i in range(3)], axis=-1)
    rgb = _ycbcr_to_rgb(*samples[:3])
    if adobe_transform == 2:      # YCCK
        m = samples[3]
        return np.stack([_blinn(255 - rgb[:, :, i], m) for i in range(3)], axis=-1)
    return rgb
