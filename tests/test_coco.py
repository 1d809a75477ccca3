"""darknet_prn.coco: Darknet's COCO image id rule and category table."""
import re
from pathlib import Path

import pytest

from darknet_prn import coco

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path, image_id", [
    ("val2017/000000000139.jpg", 139),                         # print_cocos: atoi(basecfg(path))
    ("/data/coco/images/val2014/COCO_val2014_000000000042.jpg", 42),   # get_coco_image_id's rule
    ("C:\\coco\\val_set\\000000397133.jpg", 397133),          # basecfg strips '\\' folders; '_' in a folder ignored
    ("dir.v2/12.5.png", 12),                                   # cut at the first '.'
    ("dog.jpg", None),
    ("a_b.jpg", None),
])
def test_coco_image_id(path, image_id):
    assert coco.coco_image_id(path) == image_id


def test_coco_ids_are_darknets_table():
    assert len(coco.COCO_IDS) == 80 and len(set(coco.COCO_IDS)) == 80
    assert coco.COCO_IDS[0] == 1 and coco.COCO_IDS[11] == 13 and coco.COCO_IDS[-1] == 90
    missing = sorted(set(range(1, 91)) - set(coco.COCO_IDS))
    assert missing == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]      # COCO's ten unused category ids
    assert coco.category_id(16, 80) == 18 and coco.category_id(3, 2) == 3


def test_clip_box_and_row():
    assert coco.clip_box(-5.0, 10.0, 20.0, 100.0, 50, 60) == [0.0, 10.0, 15.0, 50.0]
    r = coco.result_row(42, 0, 80, [1, 2, 3, 4], 0.5)
    assert r == {"image_id": 42, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}
