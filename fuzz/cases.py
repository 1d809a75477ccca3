"""The fuzz targets, run inside a worker process: ``run(kind, seed, workdir)`` builds case ``seed`` of ``kind``
and returns ``(outcome, detail)`` with outcome ``ok`` (accepted) or ``clean`` (a one-line DarknetError naming
the file); anything else escapes as an exception and the worker classifies it as ``other``. Hangs and crashes
are seen by the parent (timeout, a worker killed by a signal)."""
from __future__ import annotations

import io
import os
import random
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from . import mutators as mu

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("DARKNET_PRN_FUZZ_CORPUS") or ROOT / ".." / "shared" / "cfg-corpus")
KINDS = ("cfg", "weights", "image", "cli")

TINY_CFG = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""
SMALL = ("yolov3-tiny.cfg", "yolov3-tiny-prn.cfg", "yolov4-tiny.cfg", "yolov2-tiny.cfg", "tiny-yolo-voc.cfg",
         "yolov3-tiny_xnor.cfg", "yolov7-tiny.cfg", "tiny.cfg", "cifar.cfg", "rnn.cfg", "gru.cfg", "crnn.train.cfg",
         "yolov4-tiny-3l.cfg", "yolov3-tiny_3l.cfg", "Gaussian_yolov3_BDD.cfg", "enet-coco.cfg", "darknet.cfg",
         "efficientnet_b0.cfg", "densenet201.cfg", "yolo9000.cfg", "strided.cfg", "writing.cfg")

_state = {}


class Clean(Exception):
    """A case whose error is one line naming the file."""


def _net_cls():
    if "Darknet" not in _state:
        from darknet_prn import Darknet, DarknetError
        _state["Darknet"], _state["DarknetError"] = Darknet, DarknetError
    return _state["Darknet"], _state["DarknetError"]


def _base_cfgs():
    if "cfgs" not in _state:
        texts = [("tiny.cfg", TINY_CFG)]
        for d in (CORPUS, ROOT / "cfg"):
            if d.is_dir():
                texts += [(p.name, p.read_text(errors="replace")) for p in sorted(d.glob("*.cfg"))]
        small = [t for t in texts if t[0] in SMALL] + [texts[0]]
        _state["cfgs"] = (texts, small)
    return _state["cfgs"]


def _check_message(e, name: str):
    msg = str(e)
    if "\n" in msg or len(msg) > 400:
        raise AssertionError(f"error message is not one short line ({len(msg)} chars): {msg[:200]!r}")
    if name not in msg:
        raise AssertionError(f"error message does not name {name}: {msg[:200]!r}")
    return msg


def _forward(net):
    import torch
    net.eval()
    x = torch.rand((1,) + tuple(net.graph.input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net(x)


# -- kinds ---------------------------------------------------------------------------------------------------


def case_cfg(rng, work: Path):
    Darknet, DarknetError = _net_cls()
    texts, small = _base_cfgs()
    quick = os.environ.get("DARKNET_PRN_FUZZ_QUICK") == "1"      # the bounded run: small cfgs only
    name, text = rng.choice(small if quick or rng.random() < 0.75 else texts)
    path = work / "fz.cfg"
    data = mu.mutate_cfg(rng, text).encode("utf-8", errors="surrogateescape")
    path.write_bytes(data)
    size = rng.choice((32, 64, 64, 96, None))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = Darknet.from_cfg(path, width=size, height=size)
            _forward(net)
    except DarknetError as e:
        return "clean", f"{name}: " + _check_message(e, "fz.cfg")[:160]
    return "ok", name


def _weights_base(rng, work: Path):
    Darknet, _ = _net_cls()
    if "wbase" not in _state:
        import torch
        torch.manual_seed(0)
        bases = []
        for name, text, size in (("tiny", TINY_CFG, None), ("yolov3-tiny-prn", None, 64)):
            if text is None:
                p = CORPUS / f"{name}.cfg"
                if not p.exists():
                    continue
                text = p.read_text()
            cfgp = work.parent / f"base-{name}.cfg"
            cfgp.write_text(text)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = Darknet.from_cfg(cfgp, width=size, height=size)
            wp = work.parent / f"base-{name}.weights"
            net.save_weights(wp)
            bases.append((cfgp, size, wp.read_bytes()))
        _state["wbase"] = bases
    return rng.choice(_state["wbase"])


def case_weights(rng, work: Path):
    Darknet, DarknetError = _net_cls()
    cfgp, size, data = _weights_base(rng, work)
    wp = work / "fz.weights"
    mutated = mu.mutate_weights(rng, data)
    wp.write_bytes(mutated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Darknet.from_cfg(cfgp, width=size, height=size)
    partial = rng.random() < 0.2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net.load_weights(wp, partial=partial)
    except DarknetError as e:
        return "clean", _check_message(e, "fz.weights")[:160]
    _forward(net)
    if not partial:                                  # what loads saves back byte for byte
        out = work / "back.weights"
        net.save_weights(out)
        if out.read_bytes() != mutated:
            raise AssertionError("load -> save is not byte-identical")
    return "ok", ""


def _image_bases():
    if "images" not in _state:
        import cv2
        import numpy as np
        bases = []
        dog = ROOT / "tests" / "data" / "dog.jpg"
        if dog.exists():
            small = cv2.resize(cv2.imread(str(dog)), (61, 47))
        else:                                          # pragma: no cover
            small = np.random.default_rng(0).integers(0, 256, (47, 61, 3), dtype=np.uint8)
        for ext, params in ((".jpg", [cv2.IMWRITE_JPEG_QUALITY, 80]), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                            (".png", []), (".bmp", []), (".webp", []), (".tif", []), (".ppm", [])):
            ok, buf = cv2.imencode(ext, small, params)
            if ok:
                bases.append((ext, buf.tobytes()))
        ok, buf = cv2.imencode(".png", cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        bases.append((".png", buf.tobytes()))
        for p in sorted((ROOT / "tests" / "data" / "stb").glob("*.jpg")):
            bases.append((".jpg", p.read_bytes()))
        _state["images"] = bases
    return _state["images"]


def _detector(work: Path):
    if "detector" not in _state:
        from darknet_prn.detect import Detector
        cfgp = work.parent / "det.cfg"
        cfgp.write_text(TINY_CFG)
        _state["detector"] = Detector(cfgp, None, thresh=0.3)
    return _state["detector"]


def case_image(rng, work: Path):
    import numpy as np
    from darknet_prn import native
    from darknet_prn import preprocess as pre
    _, DarknetError = _net_cls()
    native.use_native(rng.random() < 0.7)
    if rng.random() < 0.15:                            # arrays: odd shapes, dtypes, extreme aspect ratios
        shape = rng.choice(((1, 1, 3), (1, 5000, 3), (5000, 1, 3), (2, 2, 3), (3, 3), (7, 9, 1), (7, 9, 4),
                            (0, 5, 3), (5, 0, 3), (4, 4, 2), (4, 4, 3, 1), (640, 2, 3), (2, 999, 3)))
        dtype = rng.choice((np.uint8, np.uint8, np.uint8, np.float32, np.int64, bool))
        a = np.asarray(np.random.default_rng(rng.randrange(2 ** 32)).integers(0, 256, shape)).astype(dtype)
        try:
            out = pre.prepare(a, rng.choice((416, 32, 1, 7)), rng.choice((416, 32, 1, 5)),
                              letterbox=rng.random() < 0.5)
        except DarknetError as e:
            msg = str(e)
            if "\n" in msg:
                raise AssertionError("multi-line error")
            return "clean", msg[:160]
        if not np.isfinite(out).all():
            raise AssertionError("non-finite network input")
        return "ok", f"array {shape}"
    ext, data = rng.choice(_image_bases())
    data = mu.patch_dimensions(rng, data) if rng.random() < 0.2 else mu.mutate_bytes(rng, data)
    path = work / f"fz{ext}"
    path.write_bytes(data)
    try:
        if rng.random() < 0.25:
            det = _detector(work)
            res = det.detect([str(path), str(path)])
            if isinstance(res[0], DarknetError):
                raise res[0]
            return "ok", "detect"
        img = pre.read_image(path)
        pre.prepare(img, 416, 416, letterbox=rng.random() < 0.5)
    except DarknetError as e:
        return "clean", _check_message(e, path.name)[:160]
    return "ok", f"{img.shape}"


# -- the CLI path table: (name, argv template, expected substring of the error or None for success, owner) ----
# {cfg} {weights} {img} {fifo} {dir} {loopdir} {missing} {out} {link} are filled from the sandbox; owner
# "detect-ux" marks the detect option checks that belong to issue 14 (reported, not asserted, until merged).
CLI_TABLE = [
    ("summary-ok", ["summary", "{cfg}"], None, ""),
    ("summary-fifo", ["summary", "{fifo}"], "{fifo}", ""),
    ("summary-devzero", ["summary", "/dev/zero"], "/dev/zero", ""),
    ("summary-dir", ["summary", "{dir}"], "{dir}", ""),
    ("summary-missing", ["summary", "{missing}"], "{missing}", ""),
    ("summary-width-0", ["summary", "{cfg}", "--width", "0"], "width", ""),
    ("summary-width-neg", ["summary", "{cfg}", "--width", "-64"], "width", ""),
    ("summary-width-huge", ["summary", "{cfg}", "--width", "99999999999", "--height", "64"], "width", ""),
    ("summary-weights-as-cfg", ["summary", "{weights}"], "{weights}", ""),
    ("detect-ok", ["detect", "{cfg}", "{weights}", "{img}", "--out", "{out}"], None, ""),
    ("detect-fifo-cfg", ["detect", "{fifo}", "{weights}", "{img}", "--no-save"], "{fifo}", ""),
    ("detect-fifo-weights", ["detect", "{cfg}", "{fifo}", "{img}", "--no-save"], "{fifo}", ""),
    ("detect-devzero-weights", ["detect", "{cfg}", "/dev/zero", "{img}", "--no-save"], "/dev/zero", ""),
    ("detect-fifo-image", ["detect", "{cfg}", "{weights}", "{fifo}", "--no-save"], "{fifo}", ""),
    ("detect-devzero-image", ["detect", "{cfg}", "{weights}", "/dev/zero", "--no-save"], "/dev/zero", ""),
    ("detect-loop-dir", ["detect", "{cfg}", "{weights}", "{loopdir}", "--no-save"], None, ""),
    ("detect-missing-image", ["detect", "{cfg}", "{weights}", "{missing}", "--no-save"], "{missing}", ""),
    ("detect-json-dir", ["detect", "{cfg}", "{weights}", "{img}", "--no-save", "--json", "{dir}"], "{dir}", ""),
    ("detect-out-symlink", ["detect", "{cfg}", "{weights}", "{img}", "--out", "{link}"], None, ""),
    ("detect-weights-as-cfg", ["detect", "{weights}", "{weights}", "{img}", "--no-save"], "{weights}", ""),
    ("detect-batch-0", ["detect", "{cfg}", "{weights}", "{img}", "--no-save", "--batch-size", "0"], "batch", ""),
    ("detect-device-foo", ["detect", "{cfg}", "{weights}", "{img}", "--no-save", "--device", "foo"], "device",
     "detect-ux"),
    ("detect-threads-neg", ["detect", "{cfg}", "{weights}", "{img}", "--no-save", "--threads", "-1"], "threads",
     "detect-ux"),
    ("detect-thresh-nan", ["detect", "{cfg}", "{weights}", "{img}", "--no-save", "--thresh", "nan"], "thresh",
     "detect-ux"),
    ("detect-nms-nan", ["detect", "{cfg}", "{weights}", "{img}", "--no-save", "--nms", "nan"], "nms", "detect-ux"),
    ("detect-json-empty", ["detect", "{cfg}", "{weights}", "{img}", "--no-save", "--json", ""], "json",
     "detect-ux"),
    ("export-ok", ["export", "{cfg}", "{weights}", "-o", "{out}/m.onnx", "--no-verify"], None, ""),
    ("export-to-dir", ["export", "{cfg}", "{weights}", "-o", "{dir}", "--no-verify"], "{dir}", ""),
    ("export-missing-dir", ["export", "{cfg}", "{weights}", "-o", "{missing}/m.onnx", "--no-verify"], "{missing}",
     ""),
    ("export-fifo-weights", ["export", "{cfg}", "{fifo}", "-o", "{out}/m.onnx"], "{fifo}", ""),
    ("export-opset-0", ["export", "{cfg}", "{weights}", "-o", "{out}/m.onnx", "--opset", "0"], "opset", ""),
    ("export-batch-0", ["export", "{cfg}", "{weights}", "-o", "{out}/m.onnx", "--batch", "0"], "batch", ""),
    ("export-width-neg", ["export", "{cfg}", "{weights}", "-o", "{out}/m.onnx", "--width", "-32"], "width", ""),
    ("export-conf-nan", ["export", "{cfg}", "{weights}", "-o", "{out}/m.onnx", "--nms", "--conf-thresh", "nan"],
     "thresh", ""),
    ("convert-ok", ["convert-cfg", "{cfg}", "--to", "explicit", "-o", "{out}/c.cfg"], None, ""),
    ("convert-fifo", ["convert-cfg", "{fifo}", "--to", "darknet"], "{fifo}", ""),
    ("convert-to-dir", ["convert-cfg", "{cfg}", "--to", "darknet", "-o", "{dir}"], "{dir}", ""),
    ("convert-missing-dir", ["convert-cfg", "{cfg}", "--to", "darknet", "-o", "{missing}/c.cfg"], "{missing}", ""),
]


def _sandbox(work: Path) -> dict:
    if "sandbox" not in _state:
        import shutil
        Darknet, _ = _net_cls()
        sb = work.parent / "sandbox"
        sb.mkdir(exist_ok=True)
        (sb / "m.cfg").write_text(TINY_CFG)
        import torch
        torch.manual_seed(0)
        Darknet.from_cfg(sb / "m.cfg").save_weights(sb / "m.weights")
        shutil.copy(ROOT / "tests" / "data" / "dog.jpg", sb / "dog.jpg")
        os.mkfifo(sb / "pipe.jpg")
        (sb / "adir").mkdir()
        loop = sb / "loop"
        loop.mkdir()
        shutil.copy(sb / "dog.jpg", loop / "a.jpg")
        (loop / "self").symlink_to(loop)
        (sb / "victim").write_text("precious")
        (sb / "linkout").mkdir()
        (sb / "linkout" / "dog.jpg").symlink_to(sb / "victim")
        _state["sandbox"] = dict(cfg=sb / "m.cfg", weights=sb / "m.weights", img=sb / "dog.jpg",
                                 fifo=sb / "pipe.jpg", dir=sb / "adir", loopdir=loop, missing=sb / "missing",
                                 link=sb / "linkout", root=sb)
    return _state["sandbox"]


def case_cli(rng, work: Path, index=None):
    """One row of CLI_TABLE; a failing row owned by another issue counts as ``pending``, not as a finding."""
    row = CLI_TABLE[(index if index is not None else rng.randrange(len(CLI_TABLE))) % len(CLI_TABLE)]
    try:
        return _cli_row(row, work)
    except Exception as e:  # noqa: BLE001
        if row[3]:
            return "pending", f"{row[0]} [{row[3]}]: {type(e).__name__}: {' '.join(str(e).split())[:160]}"
        raise


def _cli_row(row, work: Path):
    from darknet_prn import cli
    sb = _sandbox(work)
    out = work / "out"
    out.mkdir(exist_ok=True)
    name, argv, expect, owner = row
    fill = {k: str(v) for k, v in sb.items()}
    fill["out"] = str(out)
    argv = [a.format(**fill) for a in argv]
    err, so = io.StringIO(), io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(so):
            rc = cli.main(argv)
    except SystemExit as e:                              # argparse: usage error
        rc = e.code if isinstance(e.code, int) else 2
    text = err.getvalue()
    tag = f"{name}" + (f" [{owner}]" if owner else "")
    if "Traceback" in text:
        raise AssertionError(f"{tag}: traceback on stderr")
    if (sb["root"] / "victim").read_text() != "precious":
        raise AssertionError(f"{tag}: a write followed a symlink")
    if expect is None:
        if rc != 0:
            raise AssertionError(f"{tag}: exit {rc}: {text.strip()[:200]}")
        return "ok", tag
    lines = [l for l in text.splitlines() if l.strip()]
    if rc == 0 or not lines:
        raise AssertionError(f"{tag}: accepted (exit {rc}) but should fail naming {expect.format(**fill)!r}")
    want = expect.format(**fill)
    if want and not any(want in l for l in lines):
        raise AssertionError(f"{tag}: error does not name {want!r}: {lines[0][:200]}")
    return "clean", f"{tag}: {lines[-1][:160]}"


CASES = {"cfg": case_cfg, "weights": case_weights, "image": case_image, "cli": case_cli}


def run(kind: str, seed: int, work: Path):
    rng = random.Random(f"{kind}:{seed}")
    if kind == "cli":
        return case_cli(rng, work, index=seed)
    return CASES[kind](rng, work)

