"""Cross-check with an independent reader: OpenCV 4.x's Darknet importer (removed in OpenCV 5)."""
import numpy as np
import pytest
import torch

from conftest import materialize, oracle_cases
from darknet_prn import Darknet

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromDarknet") or int(cv2.__version__.split(".")[0]) >= 5:
    pytest.skip("OpenCV >= 5 has no Darknet importer", allow_module_level=True)


def _ours(cfg, weights, x):
    net = Darknet.from_cfg(cfg).eval()
    net.load_weights(weights)
    with torch.no_grad():
        return net, [o.numpy() for o in net.layer_outputs(torch.from_numpy(x))]


def test_real_yolov3_tiny_heads_match_opencv(real_tiny):
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    cv = cv2.dnn.readNetFromDarknet(str(real_tiny["cfg"]), str(real_tiny["weights"]))
    cv.setInput(x)
    conv15, conv22, y16, y23 = cv.forward(["conv_15", "conv_22", "yolo_16", "yolo_23"])
    net, outs = _ours(real_tiny["cfg"], real_tiny["weights"], x)
    for ref, ours in ((conv15, outs[15]), (conv22, outs[22])):
        assert np.abs(ref - ours).max() / ref.std() < 2e-3
    # OpenCV's [yolo] rows are (cell, anchor): x, y, w, h relative to the image, objectness
    for idx, rows in ((16, y16), (23, y23)):
        p = net.graph.layers[idx].p
        o = outs[idx][0]
        n, (_, h, w) = len(p["mask"]), o.shape
        o = o.reshape(n, 85, h, w).transpose(2, 3, 0, 1).reshape(-1, 85)      # (row, col, anchor)
        col = np.tile(np.repeat(np.arange(w), n), h)
        row = np.repeat(np.arange(h), w * n)
        aw = np.tile([p["anchors"][2 * m] for m in p["mask"]], h * w)
        ah = np.tile([p["anchors"][2 * m + 1] for m in p["mask"]], h * w)
        dec = np.stack([(col + o[:, 0]) / w, (row + o[:, 1]) / h, np.exp(o[:, 2]) * aw / 416,
                        np.exp(o[:, 3]) * ah / 416, o[:, 4]], 1)
        assert np.abs(dec - rows[:, :5]).max() < 2e-3


@pytest.mark.parametrize("name", ["yolov3-tiny-prn", "yolov4-tiny", "yolov2-tiny"])
def test_oracle_cfgs_match_opencv(name):
    case = next(c for c in oracle_cases() if c.name == name)
    w, inp = materialize(case)
    x = np.load(inp)[None]
    net, outs = _ours(case / "model.cfg", w, x)
    cv = cv2.dnn.readNetFromDarknet(str(case / "model.cfg"), str(w))
    cv.setInput(x)
    # compare the convolution feeding every head (OpenCV names it conv_<index>)
    names = [f"conv_{i - 1}" for i in net.output_layers]
    for i, ref in zip(net.output_layers, cv.forward(names)):
        ours = outs[i - 1]
        assert np.abs(ref - ours).max() / ref.std() < 2e-3, (name, i)
