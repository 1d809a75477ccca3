"""Latency benchmark: darknet-prn's eval-mode forward against OpenCV's DNN module, interleaved.

    python -m benchmarks.latency            # the full run (docs/performance.md holds one), ~15-25 min on 2 cores
    python -m benchmarks.latency --quick    # smoke run: yolov3-tiny-prn + yolov4-tiny, batch 1, few reps
    python -m benchmarks.latency --contended   # idle vs one core busy, per OpenMP wait policy (contended.py)
    make bench

What it measures, every pair in the same process and interleaved (A B A B ...), medians:

1. forward latency: ``net.eval(); net(x)`` (the default API, i.e. the fast plan) vs OpenCV
   ``cv2.dnn.readNetFromDarknet`` on the same cfg (``[net]`` width/height set to ``--size``) and the same
   ``.weights`` (random, written by ``net.save_weights``), for every model x batch x threads; ratio = ours/OpenCV.
   ``--backends torch,onnxruntime,openvino`` adds columns for the other engines of ``Darknet.set_backend``.
2. weights loading: ``Darknet.load_weights`` vs a raw ``numpy.fromfile`` of the same file (page cache warm).
3. peak memory: the peak RSS of a fresh process that loads the model and runs two batch-1 forwards, ours vs
   OpenCV (also minus the RSS right after the imports).
4. end-to-end detection over a directory of 50 images: ``Detector(cfg, weights).detect(path)`` per image vs
   the same work with OpenCV (imread, blobFromImage, forward, decode, NMSBoxes).
5. ``--profile MODEL``: per-layer times of our plan next to OpenCV's ``getPerfProfile`` for the same layer.

Thread pools: by default the environment is left alone, so ours runs with libgomp's default (spin, then sleep)
wait policy, which is what a user gets and the fastest on an idle machine. On a machine shared with other
busy processes ``--omp-wait-policy passive`` (``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported; libgomp
reads it once) avoids the 8-16 ms stalls per parallel region that a spinning OpenMP team suffers when the
scheduler parks one of its threads; OpenCV's pthreads pool is not affected. See docs/performance.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("DARKNET_PRN_CORPUS", ROOT / ".." / "shared" / "cfg-corpus")).resolve()
IMAGES = Path(os.environ.get("DARKNET_PRN_IMAGES", ROOT / ".." / "shared" / "data")).resolve()
CACHE = ROOT / "build" / "bench"
MODELS = ["yolov3-tiny-prn", "yolov3-tiny", "yolov4-tiny", "yolov4", "yolov7-tiny"]
QUICK_MODELS = ["yolov3-tiny-prn", "yolov4-tiny"]
CONTENDED_MODELS = ["yolov3-tiny-prn", "yolov3-tiny"]
# random weights leave every yolo objectness near 0.5, so ~50k boxes pass a 0.25 threshold and NMS dominates
# both pipelines; the benchmark weights shift the head convs' objectness biases by this much instead
OBJ_BIAS = -4.0


def parse_args(argv=None):
    from darknet_prn.engines import BACKENDS     # torch-free (the OpenMP policy is set before torch loads)
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 models, batch 1, 2 threads, few reps")
    p.add_argument("--models", help=f"comma-separated corpus cfg names (default: {','.join(MODELS)})")
    p.add_argument("--size", type=int, default=416, help="network width and height (default 416)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default 1,2)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per row and engine (default 15)")
    p.add_argument("--budget", type=float, default=None, help="seconds per row after which fewer reps are "
                   "accepted (at least 3; default 60)")
    p.add_argument("--backends", default="torch", help="our engines to time, comma-separated: "
                   + ", ".join(BACKENDS) + " (torch: the default API)")
    p.add_argument("--skip", default="", help="sections to skip: latency,load,memory,detect (comma-separated)")
    p.add_argument("--profile", metavar="MODEL", help="only print a per-layer profile of MODEL vs OpenCV")
    p.add_argument("--ablation", metavar="MODEL", help="only time MODEL with the plan's optimisations switched on "
                   "one by one (batch 1 and 8, the largest --threads), interleaved with OpenCV")
    p.add_argument("--detect-images", type=int, default=50, help="images in the detect benchmark (default 50)")
    p.add_argument("--omp-wait-policy", default="default", choices=("passive", "active", "default"),
                   help="OMP_WAIT_POLICY set before torch is imported ('default', the default, leaves the "
                        "environment alone; 'passive' for machines shared with other busy processes)")
    p.add_argument("--contended", action="store_true", help="idle vs one core kept busy, side by side, per OpenMP "
                   "wait policy (benchmarks/contended.py; default models yolov3-tiny-prn,yolov3-tiny, batch 1)")
    p.add_argument("--policies", default="default,passive", help="--contended: OpenMP settings to compare "
                   "(default, passive, spin10k, cli; comma-separated)")
    p.add_argument("--rounds", type=int, default=3, help="--contended: rounds of child processes (default 3)")
    p.add_argument("--contended-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args(argv)
    contended = a.contended or a.contended_child
    a.models = a.models.split(",") if a.models else (
        QUICK_MODELS[:1] if a.quick and contended else CONTENDED_MODELS if contended else
        QUICK_MODELS if a.quick else MODELS)
    a.batches = [int(v) for v in a.batches.split(",")] if a.batches else ([1] if a.quick else [1, 8])
    a.threads = [int(v) for v in a.threads.split(",")] if a.threads else (
        [len(os.sched_getaffinity(0))] if contended else [2] if a.quick else [1, 2])
    a.reps = a.reps or (3 if a.quick and contended else 8 if contended else 6 if a.quick else 15)
    a.budget = a.budget or (15.0 if a.quick else 60.0)
    if contended and a.backends == "torch":
        a.backends = "torch,onnxruntime,openvino"
    a.backends = [b for b in a.backends.split(",") if b]
    bad = [b for b in a.backends if b not in BACKENDS]
    if bad:
        p.error(f"--backends: unknown {', '.join(bad)} (one of {', '.join(BACKENDS)})")
    a.engines = [b for b in a.backends if b != "torch"]
    a.policies = [s for s in a.policies.split(",") if s]
    if a.quick and contended:
        a.rounds = 1
    a.skip = set(s for s in a.skip.split(",") if s)
    if a.quick:
        a.detect_images = min(a.detect_images, 10)
    return a


def set_omp_policy(policy: str):
    if policy == "default":
        return
    if "torch" in sys.modules:
        print("warning: torch already imported, OMP_WAIT_POLICY not applied", file=sys.stderr)
    os.environ.setdefault("OMP_WAIT_POLICY", policy.upper())


# ---------------------------------------------------------------------------------------------------------------
# models


def cfg_at_size(name: str, size: int) -> Path:
    """The corpus cfg with [net] width/height = size (batch=1): the file both engines read."""
    src = CORPUS / f"{name}.cfg"
    if not src.is_file():
        raise SystemExit(f"cfg not found: {src} (set DARKNET_PRN_CORPUS)")
    out = CACHE / f"{name}-{size}.cfg"
    lines, in_net = [], False
    for line in src.read_text().splitlines():
        s = line.strip()
        if s.startswith("["):
            in_net = s.lower() in ("[net]", "[network]")
        key = s.split("=", 1)[0].strip().lower() if "=" in s and not s.startswith("#") else None
        if in_net and key in ("width", "height"):
            line = f"{key}={size}"
        elif in_net and key in ("batch", "subdivisions"):
            line = f"{key}=1"
        lines.append(line)
    CACHE.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return out


def weights_for(name: str, size: int, cfg: Path) -> Path:
    """Random weights of the right size (torch.manual_seed(0) init, head objectness biases shifted)."""
    import torch
    from darknet_prn import Darknet
    out = CACHE / f"{name}-{size}.weights"
    if out.exists():
        return out
    torch.manual_seed(0)
    net = Darknet.from_cfg(cfg, warn=False)
    with torch.no_grad():
        for l in net.graph.layers:
            if l.type == "yolo" and l.index > 0 and net.graph.layers[l.index - 1].type == "convolutional":
                b = net.layers[l.index - 1].biases.view(len(l.p["mask"]), -1)
                b[:, 4] += OBJ_BIAS
    net.save_weights(out)
    return out


def load_net(cfg, weights, backend="torch"):
    from darknet_prn import Darknet
    net = Darknet.from_cfg(cfg, warn=False)
    net.load_weights(weights)
    net.eval()
    net.set_backend(backend)
    return net


def opencv_net(cfg, weights):
    import cv2
    n = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    n.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    n.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return n, n.getUnconnectedOutLayersNames()


# ---------------------------------------------------------------------------------------------------------------
# timing


def interleaved(fns: dict, reps: int, budget: float, warmup: int = 2) -> dict:
    """Runs fns A B C A B C ... ``reps`` times (fewer, but >= 3, once ``budget`` seconds passed); medians in ms."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    t0 = time.perf_counter()
    for r in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
        if r + 1 >= 3 and time.perf_counter() - t0 > budget:
            break
    return {k: {"median_ms": 1e3 * statistics.median(v), "min_ms": 1e3 * min(v), "reps": len(v)}
            for k, v in times.items()}


def bench_latency(args, models):
    import cv2
    import torch
    rows = []
    print(f"\n## Forward latency ({args.size}x{args.size}, medians of interleaved runs, ratio = ours / OpenCV)\n")
    hdr = ["model", "batch", "threads"] + [f"{b} ms" for b in args.backends] + ["OpenCV ms"] + \
          [f"ratio {b}" for b in args.backends] + ["reps", "load avg"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, (cfg, weights) in models.items():
        nets = {b: load_net(cfg, weights, b) for b in args.backends}
        cvn, names = opencv_net(cfg, weights)
        for batch in args.batches:
            x = torch.rand((batch, 3, args.size, args.size), generator=torch.Generator().manual_seed(batch))
            blob = x.numpy()
            for th in args.threads:
                torch.set_num_threads(th)
                cv2.setNumThreads(th)
                fns = {}
                for b, net in nets.items():
                    if b in ("onnxruntime", "openvino"):
                        net.set_backend(b, threads=th)
                    fns[b] = (lambda net=net, x=x: net(x))
                fns["opencv"] = lambda cvn=cvn, blob=blob, names=names: (cvn.setInput(blob), cvn.forward(names))
                res = interleaved(fns, args.reps, args.budget)
                cv = res["opencv"]["median_ms"]
                row = dict(model=name, batch=batch, threads=th, opencv_ms=cv, load=os.getloadavg()[0],
                           **{f"{b}_ms": res[b]["median_ms"] for b in args.backends},
                           **{f"{b}_min_ms": res[b]["min_ms"] for b in args.backends},
                           opencv_min_ms=res["opencv"]["min_ms"],
                           **{f"ratio_{b}": res[b]["median_ms"] / cv for b in args.backends},
                           reps=res["opencv"]["reps"])
                rows.append(row)
                cells = [name, str(batch), str(th)] + [f"{row[f'{b}_ms']:.1f}" for b in args.backends] + \
                        [f"{cv:.1f}"] + [f"**{row[f'ratio_{b}']:.2f}**" for b in args.backends] + [str(row["reps"]), f"{row['load']:.1f}"]
                print("| " + " | ".join(cells) + " |", flush=True)
        del nets, cvn
    return rows


def bench_load(args, models):
    import numpy as np
    from darknet_prn import Darknet
    print("\n## Weights loading (page cache warm; medians of interleaved runs)\n")
    print("| model | MB | load_weights ms | numpy.fromfile ms | ratio |")
    print("|---|---|---|---|---|")
    rows = []
    for name, (cfg, weights) in models.items():
        net = Darknet.from_cfg(cfg, warn=False)
        res = interleaved({"ours": lambda: net.load_weights(weights),
                           "numpy": lambda: np.fromfile(weights, dtype=np.float32)}, 15 if not args.quick else 3, 30)
        mb = os.path.getsize(weights) / 1e6
        r = res["ours"]["median_ms"] / res["numpy"]["median_ms"]
        rows.append(dict(model=name, mb=mb, ours_ms=res["ours"]["median_ms"], numpy_ms=res["numpy"]["median_ms"],
                         ratio=r))
        print(f"| {name} | {mb:.0f} | {res['ours']['median_ms']:.1f} | {res['numpy']['median_ms']:.1f} | "
              f"**{r:.2f}** |", flush=True)
    return rows


_MEM_CHILD = r"""
import json, os, sys
def status(key):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
def rss():
    return status("VmRSS")
engine, cfg, weights, size, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import numpy as np
if engine == "opencv":
    import cv2
    cv2.setNumThreads(threads)
    base = rss()
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    blob = np.random.rand(1, 3, size, size).astype(np.float32)
    for _ in range(2):
        net.setInput(blob); net.forward(net.getUnconnectedOutLayersNames())
else:
    import torch
    from darknet_prn import Darknet
    torch.set_num_threads(threads)
    base = rss()
    net = Darknet.from_cfg(cfg, warn=False); net.load_weights(weights); net.eval(); net.set_backend(engine)
    x = torch.rand(1, 3, size, size)
    for _ in range(2):
        net(x)
peak = status("VmHWM")
print(json.dumps(dict(base=base, peak=peak)))
"""


def bench_memory(args, models):
    print("\n## Peak memory (fresh process: load + 2 forwards at batch 1; MB)\n")
    engines = [b for b in args.backends if b != "exact"] + ["opencv"]
    print("| model | " + " | ".join(f"{e} peak (above imports)" for e in engines) + " |")
    print("|---|" + "---|" * len(engines))
    rows = []
    th = max(args.threads)
    for name, (cfg, weights) in models.items():
        row = dict(model=name)
        for e in engines:
            out = subprocess.run([sys.executable, "-c", _MEM_CHILD, e, str(cfg), str(weights), str(args.size),
                                  str(th)], capture_output=True, text=True, cwd=ROOT,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
            if out.returncode:
                row[e] = None
                print(f"  ({e} failed: {out.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            row[e] = dict(peak_mb=r["peak"] / 1e6, above_imports_mb=(r["peak"] - r["base"]) / 1e6)
        rows.append(row)
        cells = [f"{row[e]['peak_mb']:.0f} ({row[e]['above_imports_mb']:.0f})" if row.get(e) else "failed"
                 for e in engines]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# end-to-end detection


def both_threads(args) -> int:
    """The run's largest thread count, set for torch and OpenCV alike (one-thread-count sections)."""
    import cv2
    import torch
    th = max(args.threads)
    torch.set_num_threads(th)
    cv2.setNumThreads(th)
    return th


def image_dir(n: int) -> Path:
    srcs = sorted(glob.glob(str(IMAGES / "*.jpg"))) or [str(ROOT / "tests" / "data" / "dog.jpg")]
    d = CACHE / f"images-{n}"
    if not d.is_dir() or len(os.listdir(d)) != n:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for i in range(n):
            src = srcs[i % len(srcs)]
            shutil.copyfile(src, d / f"{i:03d}-{os.path.basename(src)}")
    return d


class OpenCVDetector:
    """The same work with OpenCV: imread, blobFromImage (resize, RGB, /255), forward, decode, NMSBoxes."""

    def __init__(self, cfg, weights, size, thresh=0.25, nms=0.45):
        import cv2
        self.cv2 = cv2
        self.net, self.names = opencv_net(cfg, weights)
        self.size, self.thresh, self.nms = size, thresh, nms

    def detect(self, path):
        import numpy as np
        cv2 = self.cv2
        img = cv2.imread(str(path))
        h, w = img.shape[:2]
        self.net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, (self.size, self.size), swapRB=True, crop=False))
        out = np.concatenate([o.reshape(-1, o.shape[-1]) for o in self.net.forward(self.names)])
        scores = out[:, 5:]
        cls = scores.argmax(1)
        conf = scores[np.arange(len(cls)), cls]
        keep = conf > self.thresh
        b, cls, conf = out[keep, :4], cls[keep], conf[keep]
        boxes = np.stack([(b[:, 0] - b[:, 2] / 2) * w, (b[:, 1] - b[:, 3] / 2) * h, b[:, 2] * w, b[:, 3] * h], 1)
        idx = cv2.dnn.NMSBoxesBatched(boxes.tolist(), conf.tolist(), cls.tolist(), self.thresh, self.nms) \
            if len(conf) else []
        return [dict(class_id=int(cls[i]), confidence=float(conf[i]), box=boxes[i].tolist())
                for i in np.asarray(idx).ravel()]


def bench_detect(args, models):
    try:
        from darknet_prn.detect import Detector
    except ImportError:
        print("\n## End-to-end detect: skipped (darknet_prn.detect.Detector not available)")
        return []
    th = both_threads(args)
    d = image_dir(args.detect_images)
    paths = sorted(d.iterdir())
    jobs = []
    if "yolov3-tiny-prn" in models:
        jobs.append(("yolov3-tiny-prn (random weights)", *models["yolov3-tiny-prn"]))
    real = ROOT / "weights" / "yolov3-tiny.weights"
    if real.exists():
        jobs.append(("yolov3-tiny (COCO weights)", ROOT / "weights" / "yolov3-tiny.cfg", real))
    elif "yolov3-tiny" in models:
        jobs.append(("yolov3-tiny (random weights)", *models["yolov3-tiny"]))
    print(f"\n## End-to-end detect: {len(paths)} JPEGs ({d.relative_to(ROOT)}), one image per call, {th} threads, "
          f"images/s; ratio = our time / OpenCV's time for the same images\n")
    print("| model | ours img/s | OpenCV img/s | time ratio ours/OpenCV | ours: decode / prepare / forward / "
          "postprocess ms per image | boxes/img ours, OpenCV |")
    print("|---|---|---|---|---|---|")
    rows = []
    for label, cfg, weights in jobs:
        det = Detector(str(cfg), str(weights))
        ocv = OpenCVDetector(cfg, weights, det.net_w)
        n_ours = n_cv = 0

        def ours_pass():
            nonlocal n_ours
            n_ours = sum(len(det.detect(str(p))) for p in paths)

        def cv_pass():
            nonlocal n_cv
            n_cv = sum(len(ocv.detect(p)) for p in paths)
        res = interleaved({"ours": ours_pass, "opencv": cv_pass}, 1 if args.quick else 3, 1e9, warmup=1)
        # where our time goes (one more pass through the Detector's steps)
        parts = dict(decode=0.0, prepare=0.0, forward=0.0, post=0.0)
        for p in paths:
            t0 = time.perf_counter()
            rgb = det.load(str(p))
            t1 = time.perf_counter()
            inp = det.prepare(rgb)[None]
            t2 = time.perf_counter()
            heads, _ = det.forward(inp)
            t3 = time.perf_counter()
            det.postprocess(heads[0], rgb.shape[1], rgb.shape[0])
            t4 = time.perf_counter()
            for k, a, b in (("decode", t0, t1), ("prepare", t1, t2), ("forward", t2, t3), ("post", t3, t4)):
                parts[k] += (b - a) * 1e3 / len(paths)
        o, c = res["ours"]["median_ms"], res["opencv"]["median_ms"]
        row = dict(model=label, ours_img_s=len(paths) / o * 1e3, opencv_img_s=len(paths) / c * 1e3, ratio=o / c,
                   parts_ms=parts, boxes_ours=n_ours / len(paths), boxes_opencv=n_cv / len(paths))
        rows.append(row)
        print(f"| {label} | {row['ours_img_s']:.1f} | {row['opencv_img_s']:.1f} | **{row['ratio']:.2f}** | "
              f"{parts['decode']:.1f} / {parts['prepare']:.1f} / {parts['forward']:.1f} / {parts['post']:.1f} | "
              f"{row['boxes_ours']:.1f}, {row['boxes_opencv']:.1f} |", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# ablation: what each optimisation buys


def ablation(args, name, cfg, weights):
    import torch
    from darknet_prn.fast import FastPlan
    th = both_threads(args)
    net = load_net(cfg, weights)
    cvn, names = opencv_net(cfg, weights)
    steps = [
        ("exact modules, autograd on (what `net(x)` did before the plan)", None),
        ("exact modules under torch.no_grad()", None),
        ("plan: BN folded + in-place activations, NCHW, F.conv2d", dict(fuse=False, channels_last=False, pool=False)),
        ("+ channels-last activations", dict(fuse=False, channels_last=True, pool=False)),
        ("+ oneDNN conv with fused activation, pre-packed weights", dict(fuse=True, channels_last=True, pool=False)),
        ("+ separable max-pool", dict(fuse=True, channels_last=True, pool=True)),
        ("+ batch chunks sized to the cache (the default plan)", {}),
    ]
    print(f"\n## Ablation: {name} {args.size}x{args.size}, {th} threads (median ms, interleaved with OpenCV)\n")
    print("| step | batch 1 ms | ratio | " + " | ".join(f"batch {b} ms | ratio" for b in args.batches if b != 1) + " |")
    print("|---|---|---|" + "---|---|" * len([b for b in args.batches if b != 1]))
    results = {}
    for batch in args.batches:
        x = torch.rand((batch, 3, args.size, args.size))
        blob = x.numpy()
        fns = {}
        for i, (label, kw) in enumerate(steps):
            if i == 0:
                fns[label] = lambda: net._run(x, keep_all=False)
            elif i == 1:
                fns[label] = lambda: torch.no_grad()(net._run)(x, keep_all=False)
            else:
                if kw:
                    kw = dict(kw, chunk=1 << 30)
                plan = FastPlan(net, **kw)
                fns[label] = lambda plan=plan: torch.no_grad()(plan)(x)
        fns["OpenCV"] = lambda: (cvn.setInput(blob), cvn.forward(names))
        results[batch] = interleaved(fns, args.reps, args.budget * 3)
    for label in [s[0] for s in steps] + ["OpenCV"]:
        cells = []
        for batch in args.batches:
            r = results[batch]
            cells += [f"{r[label]['median_ms']:.1f}", f"{r[label]['median_ms'] / r['OpenCV']['median_ms']:.2f}"]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# per-layer profile


def time_plan_steps(plan, x, times):
    """One pass of ``plan``'s steps on ``x`` (batch 1), appending each step's seconds to ``times[index]``; every
    output is kept (the per-layer tables read the pattern, not the sum)."""
    import torch
    outs = {}
    y = x.contiguous(memory_format=torch.channels_last)
    for st in plan.steps:
        t = time.perf_counter()
        y = st.fn(y, outs)
        times[st.index].append(time.perf_counter() - t)
        outs[st.index] = y


def finish(results: dict, t0: float, json_path) -> int:
    """The run's last line (seconds, load average) and the optional JSON file."""
    print(f"\n({time.time() - t0:.0f} s; load average now {os.getloadavg()[0]:.2f})")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


def profile(args, name, cfg, weights):
    import re
    from collections import defaultdict
    import cv2
    import numpy as np
    import torch
    th = both_threads(args)
    net = load_net(cfg, weights)
    cvn, names = opencv_net(cfg, weights)
    x = torch.rand(1, 3, args.size, args.size)
    blob = x.numpy()
    plan = net.fast_plan()
    ours, theirs = defaultdict(list), defaultdict(list)
    lnames = cvn.getLayerNames()
    freq = cv2.getTickFrequency()
    with torch.no_grad():
        for rep in range(args.reps + 2):
            time_plan_steps(plan, x, ours)
            cvn.setInput(blob)
            cvn.forward(names)
            _, lt = cvn.getPerfProfile()
            acc = defaultdict(float)
            for nm, v in zip(lnames, np.asarray(lt).ravel()):
                m = re.match(r"^[a-z_]+?_(\d+)$", nm)
                acc[int(m.group(1)) if m else -1] += v / freq
            for k, v in acc.items():
                theirs[k].append(v)
    print(f"\n## Per-layer profile: {name} {args.size}x{args.size}, batch 1, {th} threads (median ms; OpenCV layer "
          f"times by its layer names, activations/BN it fuses count 0; OpenCV's activation of conv i is named i+1)\n")
    print("| layer | type | step | output | BFLOPs | ours ms | OpenCV ms |")
    print("|---|---|---|---|---|---|---|")
    to = tc = 0.0
    for st in plan.steps:
        l = net.graph.layers[st.index]
        a = 1e3 * statistics.median(ours[st.index][2:])
        b = 1e3 * statistics.median(theirs[st.index][2:]) if theirs.get(st.index) else 0.0
        to += a
        tc += b
        print(f"| {st.index} | {l.type} | {st.kind} | {'x'.join(map(str, l.out_shape))} | {l.bflops:.3f} | "
              f"{a:.2f} | {b:.2f} |")
    print(f"| | total | | | | {to:.1f} | {tc:.1f} |")


# ---------------------------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import cv2
    import numpy as np
    import torch
    info = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                opencv=cv2.__version__, numpy=np.__version__, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                load_avg=os.getloadavg())
    for mod in ("onnxruntime", "openvino"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    set_omp_policy(args.omp_wait_policy)
    sys.path.insert(0, str(ROOT))
    if args.contended_child:
        from . import contended
        contended.child(args)
        return 0
    if args.contended:
        from . import contended
        res = contended.run(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1, default=str)
        return 0
    import warnings
    warnings.filterwarnings("ignore")
    import torch  # noqa: F401  -- after OMP_WAIT_POLICY
    info = machine()
    print("# darknet-prn latency benchmark\n")
    print(f"machine: {info['cpu']}, {info['cores']} cores; load average {info['load_avg'][0]:.2f}; "
          f"python {info['python']}, torch {info['torch']}, opencv {info['opencv']}, numpy {info['numpy']}"
          + "".join(f", {m} {info[m]}" for m in ("onnxruntime", "openvino") if m in info)
          + f"; OMP_WAIT_POLICY={info['omp_wait_policy']}")
    models = {}
    one = args.profile or args.ablation
    for name in ([one] if one else args.models):
        cfg = cfg_at_size(name, args.size)
        models[name] = (cfg, weights_for(name, args.size, cfg))
    if args.profile:
        profile(args, args.profile, *models[args.profile])
        return 0
    if args.ablation:
        ablation(args, args.ablation, *models[args.ablation])
        return 0
    results = dict(machine=info, args={k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()})
    t0 = time.time()
    if "latency" not in args.skip:
        results["latency"] = bench_latency(args, models)
    if "load" not in args.skip:
        results["load"] = bench_load(args, models)
    if "memory" not in args.skip:
        results["memory"] = bench_memory(args, models)
    if "detect" not in args.skip:
        results["detect"] = bench_detect(args, models)
    return finish(results, t0, args.json)


if __name__ == "__main__":
    sys.exit(main())
