"""darknet_prn.dataset: Darknet's .data syntax, list files, replace_image_to_label and label files."""
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from darknet_prn.dataset import (DataConfig, LabelWarning, label_path, names_from_data, read_dataset, read_labels,
                                 read_list, resolve_path, train_filter)
from darknet_prn.errors import DarknetError

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / ".." / "shared" / "oracle" / "map"


def test_data_file_darknet_syntax(tmp_path):
    (tmp_path / "d.data").write_text("# comment\n; other\n classes = 80 \nvalid=a.txt\nvalid=b.txt\n"
                                     "names = my names.names#x\nnovalue\n\n")
    d = DataConfig.read(tmp_path / "d.data")
    assert d.classes == 80
    assert d.get("valid") == "a.txt"                 # first occurrence wins
    assert d.get("names") == "mynames.names#x"       # spaces stripped, inline '#' is part of the value
    assert d.get("novalue") is None
    assert d.backup == "backup/" and d.eval == "voc"
    assert d.line("valid") == 4


def test_data_file_errors(tmp_path):
    p = tmp_path / "d.data"
    p.write_text("classes=8x0\nnames=\n")
    with pytest.raises(DarknetError, match=r"d\.data:2: 'names=': no value after '='"):
        DataConfig.read(p)
    p.write_text("classes=eighty\n")
    with pytest.raises(DarknetError, match=r"d\.data:1: classes=eighty: not an integer"):
        DataConfig.read(p).classes
    with pytest.raises(DarknetError, match=r"d\.data: no valid= line \(the list of validation images\)"):
        DataConfig.read(p).valid
    p.write_text("valid=nothere.txt\n")
    with pytest.raises(DarknetError, match=r"d\.data:1: valid=nothere\.txt: file not found"):
        DataConfig.read(p).valid
    with pytest.raises(DarknetError, match="data file not found"):
        DataConfig.read(tmp_path / "missing.data")
    (tmp_path / "bin.data").write_bytes(b"\x00\x01\x02")
    with pytest.raises(DarknetError, match="binary"):
        DataConfig.read(tmp_path / "bin.data")


def test_paths_resolve_like_darknet_with_fallback(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "coco.names").write_text("a\n")
    (tmp_path / "cfg" / "list.txt").write_text("img1.jpg\r\n\r\n  data/img2.jpg  \n/abs/x.jpg\n")
    (tmp_path / "cfg" / "img1.jpg").write_bytes(b"")
    (tmp_path / "data" / "img2.jpg").write_bytes(b"")
    (tmp_path / "cfg" / "coco.data").write_text("names=data/coco.names\nvalid=list.txt\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    d = DataConfig.read(tmp_path / "cfg" / "coco.data")
    assert Path(d.names) == tmp_path / "data" / "coco.names"            # the parent of the data file's folder
    assert Path(names_from_data(tmp_path / "cfg" / "coco.data")) == Path(d.names)
    lst = read_list(d.valid)
    assert Path(lst[0]) == tmp_path / "cfg" / "img1.jpg"                 # beside the list file
    assert Path(lst[1]) == tmp_path / "data" / "img2.jpg"                # the list folder's parent
    assert lst[2] == "/abs/x.jpg" and len(lst) == 3
    assert read_list(d.valid, resolve=False) == ["img1.jpg", "data/img2.jpg", "/abs/x.jpg"]
    # the current directory comes first (Darknet's own rule)
    (other / "data").mkdir()
    (other / "data" / "coco.names").write_text("b\n")
    assert DataConfig.read(tmp_path / "cfg" / "coco.data").names == "data/coco.names"
    assert resolve_path("nope.txt", tmp_path / "cfg" / "coco.data") == "nope.txt"


@pytest.mark.parametrize("image, label", [
    ("data/dog.jpg", "data/dog.txt"),
    ("coco/images/val2017/000000000139.jpg", "coco/labels/val2017/000000000139.txt"),
    ("coco/images/train2014/COCO_train2014_000000000009.jpg", "coco/labels/train2014/COCO_train2014_000000000009.txt"),
    ("VOCdevkit/VOC2007/JPEGImages/000001.JPG", "VOCdevkit/VOC2007/labels/000001.txt"),
    ("C:\\coco\\images\\val2014\\x.png", "C:\\coco\\labels\\val2014\\x.txt"),
    ("x/images/a.jpeg", "x/images/a.txt"),                    # plain /images/ is not swapped (commented out)
    ("a/JPEGImages/b/JPEGImages/c.bmp", "a/labels/b/JPEGImages/c.txt"),  # first occurrence only
    ("a.jpg.jpg", "a.jpg.txt"),                               # the extension at the end only
    ("a.jpg.png", "a.jpg.txt"),
    ("  a.tiff\t", "a.txt"),                                  # trimmed
    ("img.PPM", "img.txt"),
])
def test_label_path_is_replace_image_to_label(image, label):
    assert label_path(image) == label


def test_label_path_unknown_extension():
    with pytest.raises(DarknetError, match=r"a\.gif: cannot infer the label file name"):
        label_path("a.gif")
    with pytest.raises(DarknetError, match="cannot infer"):
        label_path("a.Jpg")


def test_read_labels_oracle_set():
    case = json.loads((MAP / "map_case.json").read_text())
    images = read_list(MAP / "list.txt")
    labels, missing = read_dataset(images, classes=80)
    assert not missing and sum(len(l) for l in labels) == 28
    for img, lab in zip(images, labels):
        want = case["labels"][Path(img).stem]
        assert lab.dtype == np.float32 and lab.shape == (len(want), 5)
        np.testing.assert_array_equal(lab, np.array([[o["class"], o["x"], o["y"], o["w"], o["h"]] for o in want],
                                                    np.float32))


@pytest.mark.parametrize("text, msg", [
    ("0 0.5 0.5 0.1\n", r"l\.txt:1: expected 5 fields 'class x y w h', got 4"),
    ("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1 0.9\n", r"l\.txt:2: expected 5 fields .*got 6"),
    ("\n1.0 0.5 0.5 0.1 0.1\n", r"l\.txt:2: class id '1\.0' is not an integer"),
    ("80 0.5 0.5 0.1 0.1\n", r"l\.txt:1: class id 80 out of range: must be \[0, 79\]"),
    ("-1 0.5 0.5 0.1 0.1\n", r"l\.txt:1: class id -1 out of range"),
    ("3 0.5 abc 0.1 0.1\n", r"l\.txt:1: y 'abc' is not a number"),
    ("3 0.5 0.5 nan 0.1\n", r"l\.txt:1: w = nan is not finite"),
])
def test_read_labels_errors(tmp_path, text, msg):
    p = tmp_path / "l.txt"
    p.write_text(text)
    with pytest.raises(DarknetError, match=msg) as e:
        read_labels(p, classes=80)
    assert "\n" not in str(e.value)


def test_read_labels_outside_unit_range_warns_and_keeps(tmp_path):
    p = tmp_path / "l.txt"
    p.write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.1 0.1\n1 1.2 0.5 0.1 0.1\r\n2 0.5 0.5 0 1.5\n")   # BOM, CRLF
    with pytest.warns(LabelWarning, match=r"l\.txt:2: x=1\.2 outside \(0, 1\] \(and 1 more line\); kept as written"):
        lab = read_labels(p, classes=3)
    assert lab.shape == (3, 5) and lab[1, 1] == np.float32(1.2) and lab[2, 4] == np.float32(1.5)
    with pytest.raises(DarknetError, match="label file not found"):
        read_labels(tmp_path / "none.txt")


def test_read_dataset_missing_labels_one_warning(tmp_path):
    for n in ("a", "b", "c"):
        (tmp_path / f"{n}.jpg").write_bytes(b"")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        labels, missing = read_dataset([str(tmp_path / f"{n}.jpg") for n in "abc"], classes=1)
    msgs = [str(x.message) for x in w if issubclass(x.category, LabelWarning)]
    assert len(msgs) == 1 and msgs[0].startswith("2 of 3 images have no label file") and "b.txt" in msgs[0]
    assert [len(l) for l in labels] == [1, 0, 0] and [os.path.basename(m) for m in missing] == ["b.jpg", "c.jpg"]


def test_train_filter_is_fill_truth_detection():
    lab = np.array([[0, 0.5, 0.5, 0.2, 1.3],      # h clipped to 1
                    [1, 0.0, 0.5, 0.2, 0.2],      # x = 0: dropped
                    [2, 0.5, 1.01, 0.2, 0.2],     # y > 1: dropped
                    [3, 0.5, 0.5, 0.001, 0.2],    # narrower than 1/416: dropped
                    [4, 1.0, 1.0, 0.5, 0.5]], np.float32)
    out = train_filter(lab, 416, 416)
    np.testing.assert_array_equal(out[:, 0], [0, 4])
    assert out[0, 4] == 1.0
