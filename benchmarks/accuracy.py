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

``--synthetic DIR`` adds the same columns (no latency) for a model trained on ``darknet-prn synth`` data: ``DIR``
holds the ``obj.data`` of ``synth`` and a ``*.cfg`` with its trained ``*_final.weights`` (e.g. the fine-tuned run
of ``python -m benchmarks.train_demo DIR``, or ``darknet-prn train`` on that set); the int8 model is calibrated on
its ``train=`` images and evaluated on its ``valid=`` images, which it has not seen.
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
    from darknet_prn import Darknet
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
    variants = precision_variants(weights, int8)
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
    dn = darknet_map(map_dir)
    print(f"\n## Accuracy and speed per precision: real yolov3-tiny 416, batch 1, {th} thread(s); mAP@0.5 on "
          f"the shared map case (Darknet: {100 * dn:.2f} %); change vs ours f32 on {len(images)} shared images\n")
    rows = _precision_rows(variants, cfg, "yolov3-tiny.cfg", data, map_dir, images, th, times)
    if getattr(args, "synthetic", None):
        rows += synthetic_accuracy(Path(args.synthetic).resolve(), th)
    return rows


def precision_variants(weights, int8) -> dict:
    """Table row name -> (engine worker, ``Detector`` kwargs with the ``.weights`` or int8 ONNX file)."""
    return {
        "ours f32": ("ours", dict(weights=weights)),
        "ours bf16": ("ours-bf16", dict(weights=weights, precision="bf16")),
        "OpenVINO f32": ("ov", dict(weights=weights, backend="openvino")),
        "OpenVINO bf16": ("ov-default", dict(weights=weights, backend="openvino", precision="bf16")),
        "int8 ONNX Runtime": ("ort-int8", dict(weights=int8, backend="onnxruntime")),
        "int8 OpenVINO": ("ov-int8", dict(weights=int8, backend="openvino")),
    }


def _precision_rows(variants, cfg, map_cfg, data, data_dir, images, th, times=None):
    """One table row per precision: latency (when timed), mAP@0.5 of ``evaluate`` on ``data`` (run from
    ``data_dir``), the detection change against the first variant on ``images``."""
    from darknet_prn import Detector
    from darknet_prn.evaluation import evaluate
    from darknet_prn.precision import detection_change
    timed = times is not None
    if timed:
        print("| precision | latency ms | speed-up | mAP@0.5 % | ΔmAP points | max Δconf points | max Δbox px | "
              "detections +/- |")
        print("|---|---|---|---|---|---|---|---|")
    else:
        print("| precision | mAP@0.5 % | ΔmAP points | max Δconf points | max Δbox px | detections +/- |")
        print("|---|---|---|---|---|---|")
    ref = None
    rows = []
    for k, (e, kw) in variants.items():
        kw = dict(kw)
        w = kw.pop("weights")
        dets = Detector(cfg, w, threads=th, **kw).detect(images)
        with _cwd(data_dir):
            m = evaluate(data, map_cfg, w, threads=th, **kw).map
        ms = statistics.median(times[k]) if timed and times[k] else float("nan")
        if ref is None:
            ref, ref_map, ref_ms = dets, m, ms
        ch = [detection_change(a, b) for a, b in zip(ref, dets)]
        row = dict(precision=k, ms=ms, speedup=ref_ms / ms, map=m, dmap=100 * (m - ref_map),
                   conf=max(c["conf"] for c in ch), box=max(c["box"] for c in ch),
                   unmatched=sum(c["unmatched"] for c in ch), data=str(data_dir / data))
        rows.append(row)
        cells = ([f"{ms:.1f}", f"{row['speedup']:.2f}x"] if timed else []) + \
            [f"{100 * m:.2f}", f"{row['dmap']:+.2f}", f"{row['conf']:.2f}", f"{row['box']:.2f}", str(row["unmatched"])]
        print(f"| {k} | " + " | ".join(cells) + " |", flush=True)
    return rows


def synthetic_accuracy(run_dir: Path, th: int):
    """The precision rows for a model trained on ``darknet-prn synth`` data in ``run_dir`` (module docstring)."""
    from darknet_prn.dataset import DataConfig, read_list
    from darknet_prn.quantize import quantize
    data = run_dir / "obj.data"
    finals = sorted(run_dir.rglob("*_final.weights"))
    if not data.is_file() or not finals:
        raise SystemExit(f"{run_dir}: needs obj.data (darknet-prn synth) and a trained *_final.weights")
    weights = finals[-1]
    cfg = run_dir / (weights.name[:-len("_final.weights")] + ".cfg")
    if not cfg.is_file():
        raise SystemExit(f"{cfg}: the cfg of {weights.name} not found")
    int8 = run_dir / (cfg.stem + ".int8.onnx")
    with _cwd(run_dir):
        quantize(cfg, weights, data, int8, progress=False)
        images = [str(Path(p).resolve()) for p in read_list(DataConfig.read(data).valid)]
    variants = precision_variants(weights, int8)
    print(f"\n## Accuracy per precision: {cfg.name} trained on {run_dir.name}'s synthetic set ({weights.name}); "
          f"mAP@0.5 on its {len(images)} valid= images; int8 calibrated on its train= images\n")
    return _precision_rows(variants, cfg, str(cfg), str(data), run_dir, images, th)
