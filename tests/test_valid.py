"""`darknet-prn valid` (Darknet's detector valid, COCO results) + `--coco-eval` with pycocotools, and `detect
--coco` with the same image id rule."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from darknet_prn import cli
from darknet_prn.coco import COCO_IDS

ROOT = Path(__file__).resolve().parents[1]
MAP = (ROOT / ".." / "shared" / "oracle" / "map").resolve()


def run_cli(args, capsys):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def coco_set(tmp_path):
    """The oracle images renamed as COCO 2014 files, and a COCO annotation file made from their labels."""
    import cv2
    d = tmp_path / "coco"
    (d / "images").mkdir(parents=True)
    images, anns, lines = [], [], []
    for k, src in enumerate(sorted((MAP / "data").glob("*.jpg")), 1):
        name = f"COCO_val2014_{k:012d}.jpg"
        shutil.copy(src, d / "images" / name)
        h, w = cv2.imread(str(src)).shape[:2]
        images.append({"id": k, "file_name": name, "width": w, "height": h})
        for line in src.with_suffix(".txt").read_text().splitlines():
            c, x, y, bw, bh = line.split()
            x, y, bw, bh = float(x) * w, float(y) * h, float(bw) * w, float(bh) * h
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": COCO_IDS[int(c)], "iscrowd": 0,
                         "bbox": [x - bw / 2, y - bh / 2, bw, bh], "area": bw * bh})
        lines.append(str(d / "images" / name))
    cats = [{"id": i, "name": n} for i, n in zip(COCO_IDS, (MAP / "coco.names").read_text().splitlines())]
    (d / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (d / "list.txt").write_text("\n".join(lines) + "\n")
    shutil.copy(MAP / "coco.names", d)
    (d / "coco.data").write_text(f"classes=80\nvalid={d / 'list.txt'}\nnames={d / 'coco.names'}\neval=coco\n")
    return d, len(anns)


def test_valid_and_coco_eval_end_to_end(real_tiny, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    d, n_ann = coco_set(tmp_path)
    out = tmp_path / "results.json"
    rc, stdout, err = run_cli(["valid", d / "coco.data", real_tiny["cfg"], real_tiny["weights"], "-o", out,
                               "--coco-eval", d / "ann.json"], capsys)
    assert rc == 0, err
    rows = json.loads(out.read_text())
    assert {r["image_id"] for r in rows} == set(range(1, 7))                 # COCO_val2014_000000000042 -> 42
    assert {r["category_id"] for r in rows} <= set(COCO_IDS)
    assert min(r["score"] for r in rows) >= 0.001 and len(rows) > 174    # Darknet's 0.001 (%f); map's 0.005 gives 174
    for r in rows:
        x, y, w, h = r["bbox"]
        assert x >= 0 and y >= 0 and w >= 0 and h >= 0
    # pycocotools' standard summary, 12 lines
    summary = [l for l in stdout.splitlines() if l.startswith(" Average")]
    assert len(summary) == 12 and "IoU=0.50 " in summary[1]
    ap50 = float(summary[1].rsplit("=", 1)[1])
    assert 0.3 < ap50 <= 1.0       # the labels are Darknet's own detections, jittered: most of them are found


def test_valid_errors(real_tiny, tmp_path, capsys):
    d, _ = coco_set(tmp_path)
    rc, _, err = run_cli(["valid", d / "coco.data", real_tiny["cfg"], real_tiny["weights"], "-o",
                          tmp_path / "nodir" / "r.json"], capsys)
    assert rc == 2 and "its folder does not exist" in err
    rc, _, err = run_cli(["valid", d / "coco.data", real_tiny["cfg"], real_tiny["weights"], "-o", tmp_path / "r.json",
                          "--coco-eval", tmp_path / "none.json"], capsys)
    assert rc == 2 and "none.json: annotation file not found" in err and not (tmp_path / "r.json").exists()


def test_detect_coco_ids_and_hint(real_tiny, tmp_path, capsys):
    img = tmp_path / "COCO_val2014_000000000042.jpg"
    shutil.copy(MAP / "data" / "dog.jpg", img)
    rc, _, err = run_cli(["detect", real_tiny["cfg"], real_tiny["weights"], img, "--coco", tmp_path / "c.json",
                          "--no-save", "-q"], capsys)
    assert rc == 0, err
    rows = json.loads((tmp_path / "c.json").read_text())
    assert rows and {r["image_id"] for r in rows} == {42} and 18 in {r["category_id"] for r in rows}   # dog
    assert "--thresh 0.005" in err and "darknet-prn valid" in err
