"""End-to-end training demonstration (docs/training.md holds one run's numbers):

    python -m benchmarks.train_demo OUT_DIR [--iterations 300] [--size 160]   # ~1 h on 2 busy cores

1. ``darknet-prn synth``: 300 images (224 px, 3 classes, seed 7), 240 train / 60 valid.
2. cfg: ``cfg/yolov3-tiny-prn.cfg`` with 3 classes, ``--size`` input, batch 16 / subdivisions 2,
   learning_rate 0.002, burn_in 50, steps at 80 % and 90 %, ``random=0``.
3. ``darknet-prn train --map`` twice: from scratch, and from the real yolov3-tiny's first 11 layers
   (Darknet's ``partial`` file ``yolov3-tiny.conv.11``; those layers are the same in yolov3-tiny-prn).
   Checkpoints every 100 iterations (``saveweights=100`` in the .data file), mAP@0.5 on valid every 100.
4. The mAP of every mAP run of both logs, and the final ``.weights`` of the scratch run through OpenCV 4's
   Darknet importer next to ours (head inputs, max |Δ| / std)."""
from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def demo_cfg(size: int, iterations: int) -> str:
    text = (ROOT / "cfg" / "yolov3-tiny-prn.cfg").read_text()
    subs = {"batch": "16", "subdivisions": "2", "width": str(size), "height": str(size),
            "max_batches": str(iterations), "burn_in": "50", "learning_rate": "0.002",
            "steps": f"{int(iterations * .8)},{int(iterations * .9)}"}
    for k, v in subs.items():
        text = re.sub(rf"(?m)^{k}\s*=.*$", f"{k}={v}", text)
    text = re.sub(r"(?m)^classes\s*=.*$", "classes=3", text)
    text = re.sub(r"(?m)^filters\s*=\s*255\s*$", "filters=24", text)
    return re.sub(r"(?m)^random\s*=.*$", "random=0", text)


def map_table(log_csv) -> list:
    with open(log_csv, newline="") as f:
        return [(int(float(r["iteration"])), float(r["map"])) for r in csv.DictReader(f) if r["map"]]


def opencv_check(cfg, weights, size: int, cv_cfg=None) -> float:
    """max |OpenCV − ours| / std over the inputs of the heads; ``cv_cfg``: the stock-Darknet form of ``cfg``
    (``darknet-prn convert-cfg --to darknet``: OpenCV does not know ``[partial_shortcut]``)."""
    import cv2
    import torch
    from darknet_prn import Darknet
    net = Darknet.from_cfg(cfg).eval()
    net.load_weights(weights)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        outs = [o.numpy() for o in net.layer_outputs(torch.from_numpy(x))]
    cv = cv2.dnn.readNetFromDarknet(str(cv_cfg or cfg), str(weights))
    cv.setInput(x)
    names = [f"conv_{i - 1}" for i in net.output_layers]
    return max(float(np.abs(ref - outs[i - 1]).max() / ref.std()) for i, ref in zip(net.output_layers, cv.forward(names)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_demo", description=__doc__.split("\n")[0])
    p.add_argument("out", help="working directory")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--weights", default=str(ROOT / "weights" / "yolov3-tiny.weights"))
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    py = [sys.executable, "-m", "darknet_prn"]
    subprocess.run(py + ["synth", str(out), "-n", "300", "--classes", "3", "--size", "224", "--seed", "7"], check=True)
    with open(out / "obj.data", "a") as f:
        f.write("saveweights = 100\nsavelast = 50\n")
    cfg = out / "prn-demo.cfg"
    cfg.write_text(demo_cfg(a.size, a.iterations))
    partial = out / "yolov3-tiny.conv.11"
    subprocess.run(py + ["partial", str(ROOT / "weights" / "yolov3-tiny.cfg"), a.weights, str(partial), "11"],
                   check=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    for name, extra in (("scratch", []), ("finetune", [str(partial)])):
        subprocess.run(py + ["train", str(out / "obj.data"), str(cfg), *extra, "--map", "--workers", "1",
                             "--backup", str(out / name), "--quiet"], check=True, env=env)
    for name in ("scratch", "finetune"):
        print(name, " ".join(f"{it}: {100 * m:.1f}%" for it, m in map_table(out / name / "prn-demo_log.csv")))
    stock = out / "prn-demo-darknet.cfg"
    subprocess.run(py + ["convert-cfg", str(cfg), "-o", str(stock), "--to", "darknet"], check=True)
    for name in ("scratch", "finetune"):
        print(f"OpenCV vs ours on the final {name} weights, max |diff|/std:",
              opencv_check(cfg, out / name / "prn-demo_final.weights", a.size, stock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
