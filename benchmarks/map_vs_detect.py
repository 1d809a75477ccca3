"""``python -m benchmarks.map_vs_detect``: the time of ``map`` over the shared labelled set (../shared/oracle/map,
six images) vs ``detect`` over the same images, in one process, interleaved (A B A B ...), medians.

* ``map``: :func:`darknet_prn.evaluation.collect` + ``score`` (decode in background threads, forward, decoding
  at 0.005, NMS, labels, Darknet's scoring) with one already-built Detector-equivalent per call excluded: the
  network is loaded once for both sides;
* ``detect``: ``Detector.detect(path)`` per image at 0.25 (decode, forward, NMS, Darknet's print order).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.latency import interleaved

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / ".." / "shared" / "oracle" / "map"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds after which fewer reps are run")
    ap.add_argument("--weights", default=str(ROOT / "weights" / "yolov3-tiny.weights"))
    args = ap.parse_args(argv)
    import numpy as np
    from darknet_prn.dataset import read_list
    from darknet_prn.detect import Detector
    from darknet_prn import evaluation as ev
    from darknet_prn.metrics import MapAccumulator

    os.chdir(MAP)
    paths = read_list("list.txt")
    det_map = Detector("yolov3-tiny.cfg", args.weights, names="coco.names", thresh=ev.MAP_THRESH, nms=ev.MAP_NMS,
                       hier=0.0)
    det = Detector("yolov3-tiny.cfg", args.weights, names="coco.names")
    from darknet_prn.dataset import read_dataset
    classes = det_map.classes

    def run_map():
        truths, _ = read_dataset(paths, classes, warn=False)
        acc = MapAccumulator(classes)
        for k, (_, _, _, d, _) in enumerate(ev.run_detector(det_map, paths, progress=False)):
            acc.add(d.boxes, d.probs, truths[k])
        return acc.result(0)

    def run_detect():
        for p in paths:
            det.detect(p)

    assert abs(run_map().map - 0.089077) < 1e-6
    res = interleaved({"map": run_map, "detect": run_detect}, args.reps, args.budget)
    res["ratio_map_over_detect"] = res["map"]["median_ms"] / res["detect"]["median_ms"]
    res["images"] = len(paths)
    json.dump(res, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
