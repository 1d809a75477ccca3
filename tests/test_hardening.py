"""Issue 16's reproducers: bad cfg values, memory and pixel limits, FIFOs/devices/symlink loops, tree files,
per-image errors in a batch. Each gives a one-line error naming the file (and line), never a traceback, a
hang or a crash."""
import os
import signal
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from darknet_prn import Darknet, DarknetError
from darknet_prn import limits
from darknet_prn import preprocess as pre
from darknet_prn.detect import Detector, discover_inputs
from darknet_prn.errors import CfgError

from test_detect import TINY_CFG

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "tests" / "data" / "dog.jpg"
NET = "[net]\nwidth=16\nheight=16\nchannels=3\n"


@pytest.fixture(autouse=True)
def no_hang():
    """A regression to a blocking open (FIFO) fails the test instead of hanging the suite."""
    def alarm(*_):
        raise TimeoutError("blocked: this call hangs")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# (body after [net], line of the error, what the message says) -- raw exceptions at parse time or at the first
# forward before (OverflowError, ValueError, ZeroDivisionError, RuntimeError)
CFG_CASES = {
    "filters-1e999": ("[convolutional]\nfilters=1e999\nsize=3\n", 6, "is not an integer"),
    "4300-digit-int": ("[convolutional]\nfilters=" + "9" * 5000 + "\nsize=3\n", 6, "more than a C int"),
    "size-1e308": ("[convolutional]\nfilters=4\nsize=1e308\n", 7, "more than a C int"),
    "local-stride-0": ("[local]\nfilters=4\nsize=3\nstride=0\n", 8, "stride=0 is out of range: must be >= 1"),
    "crnn-stride-0": ("[crnn]\noutput=4\nhidden=4\nsize=3\nstride=0\n", 9, "stride=0 is out of range"),
    "conv_lstm-stride-0": ("[conv_lstm]\noutput=4\nsize=3\nstride=0\n", 8, "stride=0 is out of range"),
    "yolo-num-0": ("[convolutional]\nfilters=7\nsize=1\n[yolo]\nmask=0\nanchors=1,1\nclasses=2\nnum=0\n", 12,
                   "num=0 is out of range: must be >= 1"),
    "negative-padding": ("[convolutional]\nfilters=4\nsize=3\npadding=-5\n", 8, "padding=-5 is out of range"),
    "conv_lstm-groups": ("[conv_lstm]\noutput=4\nsize=3\npad=1\ngroups=2\n", 9, "groups=2 must divide"),
    "local-size-0": ("[local]\nfilters=4\nsize=0\n", 7, "size=0 is out of range"),
    "lrn-size-negative": ("[lrn]\nsize=-3\n", 6, "size=-3 is out of range"),
    "stride-past-int32": ("[convolutional]\nfilters=4\nsize=3\nstride=3000000000\n", 8, "more than a C int"),
    "upsample-stride-0": ("[upsample]\nstride=0\n", 6, "stride=0 is out of range: must not be 0"),
    "nan-float": ("[convolutional]\nfilters=7\nsize=1\n[yolo]\nmask=0\nanchors=1,1\nclasses=2\nnum=1\n"
                  "scale_x_y=nan\n", 13, "scale_x_y=nan is not a finite number"),
}


@pytest.mark.parametrize("name", CFG_CASES)
def test_bad_cfg_values_are_cfg_errors_at_file_line(name):
    body, line, what = CFG_CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CfgError) as e:
            Darknet.from_cfg_text(NET + body, path="m.cfg")
    msg = str(e.value)
    assert msg.startswith(f"m.cfg:{line}: ") and what in msg, msg
    assert "\n" not in msg and len(msg) < 250, msg


def test_a_1mb_line_is_not_echoed():
    with pytest.raises(CfgError) as e:
        Darknet.from_cfg_text(NET + "[convolutional]\nfilters=4x" + "a" * 1_000_000 + "\n", path="m.cfg")
    assert len(str(e.value)) < 200 and "(1000002 characters)" in str(e.value)
    with pytest.raises(CfgError) as e:
        Darknet.from_cfg_text(NET + "[" + "b" * 100_000 + "]\n", path="m.cfg")
    assert len(str(e.value)) < 200


def test_memory_estimate_is_checked_before_allocating(monkeypatch):
    huge_net = "[net]\nwidth=20000\nheight=20000\nchannels=3\n[convolutional]\nfilters=16\nsize=3\n"
    with pytest.raises(CfgError, match=r"^m\.cfg:5: \[convolutional\] layer 0: the network needs about 68\.5 GiB "
                                       r".*3x20000x20000 -> 16x19998x19998.* over the 8\.0 GiB limit; set "
                                       r"DARKNET_PRN_MAX_MEMORY \(e\.g\. 70G\)"):
        Darknet.from_cfg_text(huge_net, path="m.cfg")
    connected = NET + "[connected]\noutput=1000000\n"
    monkeypatch.setenv("DARKNET_PRN_MAX_MEMORY", "1G")
    with pytest.raises(CfgError, match=r"\[connected\] layer 0: .*769,000,000 weights take 2\.9 GiB.*1\.0 GiB limit"):
        Darknet.from_cfg_text(connected, path="m.cfg")
    monkeypatch.setenv("DARKNET_PRN_MAX_MEMORY", "lots")
    with pytest.raises(DarknetError, match="DARKNET_PRN_MAX_MEMORY='lots': not a size"):
        Darknet.from_cfg_text(connected, path="m.cfg")
    monkeypatch.setenv("DARKNET_PRN_MAX_MEMORY", "1K")
    assert Darknet.from_cfg_text(NET + "[maxpool]\nsize=2\nstride=2\n", path="m.cfg", max_memory=0)   # 0: none


def _jpeg_declaring(w, h):
    import cv2
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def test_decompression_bomb_is_refused_from_the_header(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(_jpeg_declaring(30000, 30000))            # ~640 bytes declaring 900 megapixels
    with pytest.raises(DarknetError, match=r"bomb\.jpg: the image declares 30000x30000 = 900,000,000 pixels, over "
                                           r"the 178,956,970-pixel limit .*DARKNET_PRN_MAX_IMAGE_PIXELS"):
        pre.read_image(bomb)
    png = bytearray(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", 60000, 60000) + b"\x08\x02\0\0\0")
    (tmp_path / "bomb.png").write_bytes(bytes(png) + b"\0" * 20)
    with pytest.raises(DarknetError, match=r"bomb\.png: the image declares 60000x60000"):
        pre.read_image(tmp_path / "bomb.png")
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 1000)           # adjustable: a real image over 1000 pixels
    with pytest.raises(DarknetError, match=r"dog\.jpg: the image declares 768x576 = 442,368 pixels, over the "
                                           r"1,000-pixel limit"):
        pre.read_image(DOG)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "tiny.cfg").write_text(TINY_CFG)
    Darknet.from_cfg(d / "tiny.cfg").save_weights(d / "tiny.weights")
    return d


def test_fifos_and_devices_are_refused_not_read(tiny, tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(CfgError, match=r"pipe\.jpg: is a FIFO \(named pipe\), not a cfg file$"):
        Darknet.from_cfg(fifo)
    net = Darknet.from_cfg(tiny / "tiny.cfg")
    with pytest.raises(DarknetError, match=r"pipe\.jpg: is a FIFO \(named pipe\), not a \.weights file$"):
        net.load_weights(fifo)
    with pytest.raises(DarknetError, match=r"^/dev/zero: is a character device, not a \.weights file$"):
        net.load_weights("/dev/zero")
    with pytest.raises(DarknetError, match=r"^/dev/zero: is a character device, not a cfg file$"):
        Darknet.from_cfg("/dev/zero")
    with pytest.raises(DarknetError, match=r"pipe\.jpg: is a FIFO \(named pipe\), not an image$"):
        pre.read_image(fifo)
    with pytest.raises(DarknetError, match=r"^/dev/zero: is a character device, not a names file$"):
        Detector(tiny / "tiny.cfg", tiny / "tiny.weights", names="/dev/zero")
    os.mkfifo(tmp_path / "clip.mp4")                          # a video FIFO: reported, never opened
    items = discover_inputs([tmp_path / "clip.mp4", str(tmp_path / "*.mp4")])
    assert [(i.kind, i.error) for i in items] == [("error", "is a FIFO (named pipe), not a regular file")] * 2


def test_symlink_loops_in_input_directories_add_nothing(tmp_path):
    import shutil
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    shutil.copy(DOG, d / "a.jpg")
    shutil.copy(DOG, d / "sub" / "b.jpg")
    (d / "sub" / "loop").symlink_to(d)                        # a loop
    (d / "again").symlink_to(d / "sub")                       # a second way to one folder
    items = discover_inputs([d])
    assert sorted(os.path.basename(i.path) for i in items) == ["a.jpg", "b.jpg"]


def test_tree_files_are_validated_and_never_echoed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET-CONTENT\nline-two 7 here\n")
    cfg = ("[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=2\nsize=1\n"
           f"[softmax]\ntree={secret}\n")
    with pytest.raises(CfgError) as e:
        Darknet.from_cfg_text(cfg, path=str(tmp_path / "m.cfg"))
    assert "SECRET" not in str(e.value) and "line two" not in str(e.value)
    assert str(e.value) == f"{secret}:2: not a Darknet tree file: the parent index is not an earlier entry"
    rel = tmp_path / "t.tree"
    rel.write_text("a -1\nb -1\n")                            # resolved beside the cfg
    net = Darknet.from_cfg_text(cfg.replace(str(secret), "t.tree"), path=str(tmp_path / "m.cfg"))
    assert net.graph.layers[1].p["tree"]["n"] == 2


def test_a_cfg_without_weights_loads_its_own_saved_file(tmp_path):
    net = Darknet.from_cfg_text(NET + "[maxpool]\nsize=2\nstride=2\n", path="m.cfg")
    net.save_weights(tmp_path / "n.weights")
    assert (tmp_path / "n.weights").stat().st_size == 20
    net.load_weights(tmp_path / "n.weights")


def test_batch_detect_keeps_the_good_results(tiny, tmp_path):
    det = Detector(tiny / "tiny.cfg", tiny / "tiny.weights", thresh=0.3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really" * 4)
    good = det.detect(str(DOG))
    out = det.detect([str(DOG), str(bad), str(DOG), np.zeros((0, 3, 3), np.uint8)], batch_size=2)
    assert out[0] == good and out[2] == good
    assert isinstance(out[1], DarknetError) and "bad.jpg: cannot decode" in str(out[1])
    assert isinstance(out[3], DarknetError) and "empty image array" in str(out[3])
    assert det.detect([str(DOG), str(DOG)]) == [good, good]               # all good: lists as before
    with pytest.raises(DarknetError, match="bad.jpg"):
        det.detect([str(DOG), str(bad)], errors="raise")
    with pytest.raises(DarknetError, match="bad.jpg"):
        det.detect(str(bad))                                              # one image: raises as before


def test_other_inputs_refuse_fifos_too(tiny, tmp_path):
    """The COCO annotation file of `valid --coco-eval` and the start weights of `train` open like every input."""
    pytest.importorskip("pycocotools")
    from darknet_prn.train.trainer import load_start_weights
    from darknet_prn.valid import coco_eval
    fifo = tmp_path / "ann.json"
    os.mkfifo(fifo)
    with pytest.raises(DarknetError, match=r"ann\.json: is a FIFO \(named pipe\), not an annotation file$"):
        coco_eval(fifo, [])
    with pytest.raises(DarknetError, match=r"nothing\.json: annotation file not found$"):
        coco_eval(tmp_path / "nothing.json", [])
    net = Darknet.from_cfg(tiny / "tiny.cfg")
    with pytest.raises(DarknetError, match=r"ann\.json: is a FIFO \(named pipe\), not a \.weights file$"):
        load_start_weights(net, fifo)
    with pytest.raises(DarknetError, match=r"gone\.weights: weights file not found$"):
        load_start_weights(net, tmp_path / "gone.weights")


def test_a_missing_tree_name_is_capped_in_messages():
    cfg = NET + "[convolutional]\nfilters=2\nsize=1\n[softmax]\ntree=" + "x" * 100_000 + "\n"
    with pytest.warns(Warning) as w, pytest.raises(CfgError, match="file not found, cannot run this layer") as e:
        Darknet.from_cfg_text(cfg, path="m.cfg")
    assert all(len(str(x.message)) < 300 for x in w) and len(str(e.value)) < 200


def test_run_time_allocation_failure_is_one_line(monkeypatch, capsys):
    """An allocation that fails past the limits.py estimate (torch's allocator, MemoryError) ends in one line and
    status 2; any other RuntimeError is not hidden."""
    import darknet_prn.summary as summary
    from darknet_prn.cli import main
    cfg = str(ROOT / "cfg" / "yolov3-tiny-prn.cfg")
    msg = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"
    for exc in (RuntimeError(msg), MemoryError()):
        def boom(args, exc=exc):
            raise exc
        monkeypatch.setattr(summary, "run", boom)
        assert main(["summary", cfg]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error: out of memory while running" in err and "Traceback" not in err

    def other(args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(summary, "run", other)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["summary", cfg])


def test_export_refuses_an_empty_output_name(capsys, tmp_path, monkeypatch):
    from darknet_prn.cli import main
    monkeypatch.chdir(tmp_path)
    cfg = str(ROOT / "cfg" / "yolov3-tiny-prn.cfg")
    assert main(["export", cfg, str(tmp_path / "none.weights"), "-o", ""]) == 2
    assert "-o/--output: empty file name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("consumer", ["[convolutional]\nfilters=4\nsize=1\nactivation=linear", "[avgpool]"])
def test_a_layer_reading_a_region_or_detection_output_is_refused_at_build(tmp_path, consumer):
    """Fuzz cfg seed 201205 (a conv after [region]: RuntimeError at the first forward) and [avgpool] after
    [detection] (IndexError): refused when the model is built, naming the file and line."""
    head = {"region": "[region]\nanchors=1,1\nclasses=1\ncoords=4\nnum=1",
            "detection": "[detection]\nclasses=1\ncoords=4\nside=2\nnum=1"}
    for kind, text in head.items():
        filters = 6 if kind == "region" else 2 * 2 * (1 + 5)
        cfg = tmp_path / f"{kind}.cfg"
        conv = (f"[convolutional]\nfilters={filters}\nsize=1\nactivation=linear" if kind == "region"
                else f"[connected]\noutput={filters}\nactivation=linear")
        cfg.write_text(f"[net]\nwidth=32\nheight=32\nchannels=3\n\n{conv}\n\n{text}\n\n{consumer}\n")
        lines = cfg.read_text().splitlines()
        line = len(lines) - lines[::-1].index(consumer.splitlines()[0])      # the consumer's (last) section
        with pytest.raises(DarknetError, match=rf"{cfg}:{line}: .*reads the output of \[{kind}\] layer 1"):
            Darknet.from_cfg(cfg)
