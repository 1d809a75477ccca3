"""Accuracy next to speed: per precision, the latency, the mAP@0.5 of ``darknet-prn map`` and the detection change.

    python -m benchmarks.engines --accuracy [--threads 1]

Model: the real COCO yolov3-tiny (``weights/``, ``make weights``) at its cfg's 416x416. For each precision —
ours f32 (the default, Darknet-exact), ours bf16, OpenVINO bf16 (its default on BF16 CPUs), int8 in ONNX Runtime
and in OpenVINO (the model of ``darknet-prn quantize`` calibrated on the map set's images) — it prints

* the batch-1 forward latency (each engine in its own process, interleaved rounds, median; as the latency table;
  with one thread the process CPU time per forward, which preemption on a shared machine does not inflate),
* mAP@0.5 of ``darknet_prn.evaluate`` on the shared map case (``../shared/oracle/map/coco6.data``, run from that
  directory as Darknet ran; Darknet's own figure is read from its stored report),
* the max confidence change (points) and box change (px) of ``Detector.detect`` on the shared images
  (``../shared/data/*.jpg``) against ours f32, and how many detections appeared or vanished.

The int8 model is calibrated on the same six images it is evaluated on (the only labelled set at hand): its mAP
change is an optimistic bound for a held-out set.
"""
from __future__ import annotations

import os
import re
import statistics
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _cwd(d):
    old = os.getcwd()
    os.chdir(d)
    try:
        yield
    finally:
        os.chdir(old)


def darknet_map(map_dir: Path):
    text = (map_dir / "runs" / "map_default.stdout").read_text(errors="replace")
    m = re.search(r"mean average precision \(mAP@0\.50\) = ([0-9.]+)", text)
    return float(m.group(1)) if m else None


def accuracy(args):
    from benchmarks.engines import CACHE, IMAGES, MAP_DIR, ROOT, Worker
    from darknet_prn import Darknet, Detector
    from darknet_prn.evaluation import evaluate
    from darknet_prn.precision import detection_change
    from darknet_prn.quantize import quantize
    cfg, weights = ROOT / "weights" / "yolov3-tiny.cfg", ROOT / "weights" / "yolov3-tiny.weights"
    if not weights.exists():
        raise SystemExit("weights/yolov3-tiny.weights missing: run `make weights`")
    map_dir = MAP_DIR.resolve()
    data = "coco6.data"
    CACHE.mkdir(parents=True, exist_ok=True)
    onnx = CACHE / "yolov3-tiny-real.onnx"
    int8 = CACHE / "yolov3-tiny-real.int8.onnx"
    net = Darknet.from_cfg(cfg, warn=False)
    net.load_weights(weights)
    net.export_onnx(onnx, dynamic_batch=True, verify=False)
    with _cwd(map_dir):
        quantize(map_dir / "yolov3-tiny.cfg", weights, data, int8, progress=False)
    th = args.threads[0]
    # name -> (engine worker, Detector kwargs with the weights/model file)
    variants = {
        "ours f32": ("ours", dict(weights=weights)),
        "ours bf16": ("ours-bf16", dict(weights=weights, precision="bf16")),
        "OpenVINO f32": ("ov", dict(weights=weights, backend="openvino")),
        "OpenVINO bf16": ("ov-default", dict(weights=weights, backend="openvino", precision="bf16")),
        "int8 ONNX Runtime": ("ort-int8", dict(weights=int8, backend="onnxruntime")),
        "int8 OpenVINO": ("ov-int8", dict(weights=int8, backend="openvino")),
    }
    ws = {k: Worker(e, cfg, weights, int8 if e.endswith("int8") else onnx, 416) for k, (e, _) in variants.items()}
    times = {k: [] for k in ws}
    try:
        order = list(ws)
        for r in range(args.rounds):
            for k in order[r % len(order):] + order[:r % len(order)]:
                res = ws[k].time(1, th, args.reps)
                times[k] += res.get("cpu" if th == 1 else "times", [])
                time.sleep(0.2)
    finally:
        for w in ws.values():
            w.close()
    images = sorted(str(p) for p in Path(IMAGES).glob("*.jpg"))
    ref = None
    rows = []
    dn = darknet_map(map_dir)
    print(f"\n## Accuracy and speed per precision: real yolov3-tiny 416, batch 1, {th} thread(s); mAP@0.5 on "
          f"the shared map case (Darknet: {100 * dn:.2f} %); change vs ours f32 on {len(images)} shared images\n")
    print("| precision | latency ms | speed-up | mAP@0.5 % | ΔmAP points | max Δconf points | max Δbox px | "
          "detections +/- |")
    print("|---|---|---|---|---|---|---|---|")
    for k, (e, kw) in variants.items():
        kw = dict(kw)
        w = kw.pop("weights")
        det = Detector(cfg, w, threads=th, **kw)
        dets = det.detect(images)
        with _cwd(map_dir):
            m = evaluate(data, "yolov3-tiny.cfg", w, threads=th, **kw).map
        if ref is None:
            ref, ref_map, ref_ms = dets, m, statistics.median(times[k])
        ch = [detection_change(a, b) for a, b in zip(ref, dets)]
        ms = statistics.median(times[k]) if times[k] else float("nan")
        row = dict(precision=k, ms=ms, speedup=ref_ms / ms, map=m, dmap=100 * (m - ref_map),
                   conf=max(c["conf"] for c in ch), box=max(c["box"] for c in ch),
                   unmatched=sum(c["unmatched"] for c in ch))
        rows.append(row)
        print(f"| {k} | {ms:.1f} | {row['speedup']:.2f}x | {100 * m:.2f} | {row['dmap']:+.2f} | {row['conf']:.2f} | "
              f"{row['box']:.2f} | {row['unmatched']} |", flush=True)
    return rows
