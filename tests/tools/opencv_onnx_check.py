"""Runs exported ONNX files in OpenCV's DNN module and prints the max abs difference per output as JSON.

Usage (any Python with opencv + numpy, e.g. the OpenCV 5 venv `make opencv5` builds):
    python opencv_onnx_check.py MODEL.onnx INPUT.npy REFERENCE.npz
REFERENCE.npz holds one array per ONNX output, keyed by output name."""
import json
import sys

import cv2
import numpy as np

onnx_path, x_path, ref_path = sys.argv[1:4]
net = cv2.dnn.readNetFromONNX(onnx_path)
net.setInput(np.load(x_path))
names = list(net.getUnconnectedOutLayersNames())
refs = np.load(ref_path)
outs = net.forward(names)
print(json.dumps({"opencv": cv2.__version__, "diffs": {n: float(np.abs(o.reshape(-1) - refs[n].reshape(-1)).max())
                                                      for n, o in zip(names, outs)}}))
