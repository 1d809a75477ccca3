"""The synthetic detection dataset: Darknet's layout, valid labels, deterministic bytes, CLI errors."""
import hashlib
import os

import pytest

from darknet_prn.cli import main
from darknet_prn.train.synthetic import SHAPES, generate


def _digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, root).encode())
            data = open(p, "rb").read()
            h.update(data.replace(str(root).encode(), b"ROOT"))
    return h.hexdigest()


def test_layout_labels_and_determinism(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    data = generate(a, n=12, classes=4, size=96, seed=3)
    generate(b, n=12, classes=4, size=96, seed=3)
    assert _digest(a) == _digest(b)
    text = open(data).read()
    assert "classes = 4" in text and f"train = {a}/train.txt" in text
    train = open(a / "train.txt").read().split()
    valid = open(a / "valid.txt").read().split()
    assert len(train) + len(valid) == 12 and len(valid) == 2 and not set(train) & set(valid)
    assert open(a / "obj.names").read().split() == list(SHAPES[:4])
    n_obj = 0
    for p in train + valid:
        assert os.path.isfile(p) and "/JPEGImages/" in p
        lab = p.replace("/JPEGImages/", "/labels/")[:-4] + ".txt"
        for line in open(lab):
            c, x, y, w, h = line.split()
            assert 0 <= int(c) < 4
            x, y, w, h = map(float, (x, y, w, h))
            assert 0 < x <= 1 and 0 < y <= 1 and 0 < w <= 1 and 0 < h <= 1
            assert x - w / 2 >= -1e-6 and x + w / 2 <= 1 + 1e-6
            n_obj += 1
    assert n_obj >= 2 * 12          # several objects per image
    generate(tmp_path / "c", n=12, classes=4, size=96, seed=4)
    assert _digest(tmp_path / "c") != _digest(a)


def test_cli(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "d"), "-n", "3", "--classes", "2", "--size", "64"]) == 0
    assert "obj.data" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "e"), "-n", "3", "--classes", "9"]) == 2
    assert "--classes must be 1..5" in capsys.readouterr().err
