"""Seeded mutators: every function takes a ``random.Random`` and returns new bytes/text; the same seed gives the
same case (a failing case is reproduced with ``python -m fuzz --kind K --seed S``)."""
from __future__ import annotations

import re
import struct

# values Darknet's atoi/atof and our typed getters must survive
INTERESTING_NUMBERS = (
    "0", "-0", "1", "-1", "2", "3", "-5", "7", "16", "255", "65535", "65536", "1000000", "2147483647", "2147483648",
    "-2147483649", "4294967296", "9" * 30, "9" * 5000, "1e999", "-1e999", "1e308", "1e-308", "nan", "inf", "-inf",
    "3.5", "0.0", "2.0", "1e3", "0x10", "1,2,3", "1,,2", ",", "-", "+", "1#c", "1;c", "é", "\x00", "",
)
KEYS = (
    "filters", "size", "stride", "stride_x", "stride_y", "pad", "padding", "groups", "group_id", "dilation",
    "batch_normalize", "activation", "layers", "from", "mask", "anchors", "classes", "num", "coords", "output",
    "hidden", "width", "height", "channels", "inputs", "scale_x_y", "new_coords", "reverse", "out_channels",
    "maxpool_depth", "share_index", "tree", "map", "side", "softmax", "temperature", "spatial", "flipped",
    "weights_type", "weights_normalization", "antialiasing", "xnor", "binary", "sparsity", "history_size",
    "alpha", "beta", "kappa", "crop_width", "crop_height", "letter_box", "peephole", "bottleneck", "atoms",
)
SECTIONS = (
    "net", "convolutional", "local", "connected", "maxpool", "avgpool", "local_avgpool", "route", "shortcut",
    "partial_shortcut", "scale_channels", "sam", "upsample", "reorg", "reorg3d", "yolo", "Gaussian_yolo",
    "region", "detection", "softmax", "cost", "crop", "dropout", "lrn", "batchnorm", "activation", "rnn", "gru",
    "lstm", "crnn", "conv_lstm", "history", "contrastive", "implicit", "empty", "bogus",
)
ACTIVATIONS = ("linear", "leaky", "mish", "swish", "logistic", "relu6", "tanh", "hard_mish", "bogus", "")
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0xD8, 0xD9, 0xDA, 0xC0, 0xC2)


def _kv_lines(lines):
    return [i for i, l in enumerate(lines) if "=" in l and not l.lstrip().startswith(("#", ";", "["))]


def mutate_cfg(rng, text: str) -> str:
    """1-4 edits of a cfg: a value replaced by an interesting number or a path, a key added to a section, lines
    deleted/duplicated/swapped, a section inserted, the text truncated, bytes inserted, a very long line."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        kv = _kv_lines(lines)
        if op < 0.40 and kv:
            i = rng.choice(kv)
            key = lines[i].split("=", 1)[0]
            val = rng.choice(INTERESTING_NUMBERS) if rng.random() < 0.85 else rng.choice(ACTIVATIONS)
            if key.strip() in ("tree", "map", "names"):
                val = rng.choice(("/etc/passwd", "../../x.tree", "/dev/zero", "", "missing.tree"))
            lines[i] = f"{key}={val}"
        elif op < 0.60:
            secs = [i for i, l in enumerate(lines) if l.startswith("[")] or [0]
            i = rng.choice(secs) + 1
            key = rng.choice(KEYS)
            val = rng.choice(INTERESTING_NUMBERS) if key != "activation" else rng.choice(ACTIVATIONS)
            if key in ("tree", "map"):
                val = rng.choice(("/etc/passwd", "../../x.tree", "/dev/zero", "missing.tree"))
            lines.insert(i, f"{key}={val}")
        elif op < 0.70 and lines:
            del lines[rng.randrange(len(lines))]
        elif op < 0.76 and lines:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
        elif op < 0.82 and len(lines) > 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op < 0.90:
            lines.insert(rng.randrange(len(lines) + 1), f"[{rng.choice(SECTIONS)}]")
        elif op < 0.94 and lines:
            lines = lines[:rng.randrange(len(lines))]
        elif op < 0.97:
            i = rng.randrange(len(lines) + 1)
            lines.insert(i, "".join(chr(rng.randrange(1, 256)) for _ in range(rng.randint(1, 40))))
        else:
            lines.insert(rng.randrange(len(lines) + 1), "filters=" + "7" * rng.choice((100, 10_000, 1_000_000)))
    return "\n".join(lines) + "\n"


def mutate_bytes(rng, data: bytes, n_ops=None) -> bytes:
    """Generic byte mutations: bit flips, interesting bytes, chunk deletion/duplication, truncation,
    insertion of random bytes, appended garbage."""
    b = bytearray(data)
    for _ in range(n_ops or rng.randint(1, 6)):
        op = rng.random()
        if not b:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            continue
        i = rng.randrange(len(b))
        if op < 0.35:
            b[i] ^= 1 << rng.randrange(8)
        elif op < 0.55:
            b[i] = rng.choice(INTERESTING_BYTES)
        elif op < 0.65:
            j = min(len(b), i + rng.randint(1, 256))
            del b[i:j]
        elif op < 0.72:
            j = min(len(b), i + rng.randint(1, 256))
            b[i:i] = b[i:j]
        elif op < 0.82:
            del b[rng.randrange(len(b) + 1):]
        elif op < 0.92:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    return bytes(b)


def mutate_weights(rng, data: bytes) -> bytes:
    """A .weights file: header fields (major, minor, revision, seen as 32/64 bits) set to odd values, the payload
    truncated or extended by odd amounts, floats set to NaN/inf/huge, or generic byte mutations."""
    b = bytearray(data)
    op = rng.random()
    if op < 0.30 and len(b) >= 20:
        field = rng.randrange(4)
        val = rng.choice((0, 1, 2, 5, 9, 10, 1000, 2 ** 31 - 1, 2 ** 32 - 1))
        b[4 * field:4 * field + 4] = struct.pack("<I", val)
    elif op < 0.55:
        cut = rng.choice((0, 1, 3, 4, 11, 12, 16, 19, 20, 21, 24, len(b) - 1, len(b) - 4, len(b) - 5,
                          rng.randrange(len(b) + 1)))
        b = b[:max(0, cut)]
    elif op < 0.70:
        b += bytes(rng.choice((1, 3, 4, 8, 4000)))
    elif op < 0.85 and len(b) > 24:
        for _ in range(rng.randint(1, 50)):
            i = 20 + 4 * rng.randrange((len(b) - 20) // 4)
            b[i:i + 4] = struct.pack("<f", rng.choice((float("nan"), float("inf"), -float("inf"), 1e38, -0.0)))
    else:
        b = bytearray(mutate_bytes(rng, bytes(b)))
    return bytes(b)


def patch_dimensions(rng, data: bytes) -> bytes:
    """Set the declared width/height in a JPEG frame header or a PNG/GIF/BMP header to 0, 1, odd or huge
    values (decompression bombs, empty images)."""
    b = bytearray(data)
    w, h = (rng.choice((0, 1, 2, 7, 255, 4097, 30000, 65535)) for _ in range(2))
    if b[:2] == b"\xff\xd8":
        m = re.search(rb"\xff[\xc0\xc1\xc2]", bytes(b))
        if m and m.start() + 9 <= len(b):
            b[m.start() + 5:m.start() + 9] = struct.pack(">HH", h, w)
    elif b[:4] == b"\x89PNG" and len(b) >= 24:
        b[16:24] = struct.pack(">II", rng.choice((w, 60000, 2 ** 31 - 1)), h)
    elif b[:3] == b"GIF" and len(b) >= 10:
        b[6:10] = struct.pack("<HH", w, h)
    elif b[:2] == b"BM" and len(b) >= 26:
        b[18:26] = struct.pack("<ii", w, -h if rng.random() < 0.5 else h)
    return bytes(b)
