"""SIGKILL at a random moment of save_weights, ONNX export, ``detect --out`` (images and video) leaves the old file
or a complete new one, and no temporary survives the next successful run."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_detect import TINY_CFG

ROOT = Path(__file__).resolve().parents[1]
BIG = ("[net]\nwidth=64\nheight=64\nchannels=3\n\n[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\n"
       "activation=leaky\n\n[connected]\noutput=1024\nactivation=linear\n")   # 32 MB of weights: kills land mid-write


CHILD = r"""
import sys, torch
from darknet_prn import Darknet, cli
d = sys.argv[1]
big = Darknet.from_cfg(d + "/big.cfg")
tiny = Darknet.from_cfg(d + "/tiny.cfg").eval()
print("ready", flush=True)
k = 0
while True:
    k += 1
    with torch.no_grad():
        for p in big.parameters():
            p.fill_(float(k))
    big.save_weights(d + "/big.weights")
    if k % 3 == 1:
        tiny.export_onnx(d + "/m.onnx", verify=False)
    cli.main(["detect", d + "/tiny.cfg", d + "/tiny.weights", d + "/dog.jpg", d + "/clip.mp4", "--out", d + "/out",
              "--quiet", "--no-progress"])
"""


def _temps(d):
    return [n for n in os.listdir(d) if ".part" in n]


def _check_complete(d: Path, n_floats: int):
    import cv2
    import onnx
    w = d / "big.weights"
    if w.exists():                                       # one complete version: every float the same value
        data = np.fromfile(w, dtype="<f4", offset=20)
        assert data.size == n_floats and np.all(data == data[0]), "torn .weights file"
    if (d / "m.onnx").exists():
        onnx.checker.check_model(onnx.load(str(d / "m.onnx")))
    img = d / "out" / "dog.jpg"
    if img.exists():
        raw = img.read_bytes()
        assert raw.endswith(b"\xff\xd9") and cv2.imdecode(np.frombuffer(raw, np.uint8), 1) is not None
    vid = d / "out" / "clip.mp4"
    if vid.exists():
        cap = cv2.VideoCapture(str(vid))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        assert n == 3, f"torn video: {n} frames"


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_sigkill_leaves_old_or_complete_files_and_no_temp_survives(tmp_path, seed):
    import cv2
    import torch
    from darknet_prn import Darknet, cli
    d = tmp_path
    (d / "tiny.cfg").write_text(TINY_CFG)
    (d / "big.cfg").write_text(BIG)
    torch.manual_seed(0)
    Darknet.from_cfg(d / "tiny.cfg").save_weights(d / "tiny.weights")
    dog = cv2.imread(str(ROOT / "tests" / "data" / "dog.jpg"))
    cv2.imwrite(str(d / "dog.jpg"), dog)
    wr = cv2.VideoWriter(str(d / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 72))
    if not wr.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video")
    for k in range(3):
        wr.write(cv2.resize(dog, (96, 72)))
    wr.release()
    n_floats = Darknet.from_cfg(d / "big.cfg").graph.weights_floats
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(d)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        rng = random.Random(seed)
        deadline = time.monotonic() + 120
        while not (d / "out" / "clip.mp4").exists() and time.monotonic() < deadline:   # one full round done
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))                # then somewhere in the middle of the loop
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    _check_complete(d, n_floats)
    # the next successful run (a new process: this one) removes the dead writer's temporaries
    big = Darknet.from_cfg(d / "big.cfg")
    with torch.no_grad():
        for p in big.parameters():
            p.fill_(-1.0)
    big.save_weights(d / "big.weights")
    Darknet.from_cfg(d / "tiny.cfg").eval().export_onnx(d / "m.onnx", verify=False)
    assert cli.main(["detect", str(d / "tiny.cfg"), str(d / "tiny.weights"), str(d / "dog.jpg"),
                     str(d / "clip.mp4"), "--out", str(d / "out"), "--quiet", "--no-progress"]) == 0
    assert _temps(d) == [] and _temps(d / "out") == []
    _check_complete(d, n_floats)
