"""Contended mode of the latency benchmark: the same interleaved comparison on an idle machine and with one core
kept busy by a background process, rows side by side.

    python -m benchmarks.latency --contended                    # yolov3-tiny-prn + yolov3-tiny, ~3-5 min
    python -m benchmarks.latency --contended --policies default,passive,spin10k --threads 1,2

The *load*: a Python busy loop pinned to the last core of this process's affinity set, started once per child
process and switched on and off with SIGSTOP/SIGCONT between phases; it ends by itself after a deadline (and is
killed when the child ends), so nothing outlives the run.

OpenMP's wait policy is read once when libgomp loads (when torch is imported), so each policy runs in its own
child process (`OMP_WAIT_POLICY` / `GOMP_SPINCOUNT` in its environment); children run in rounds
(policy A, policy B, A, B, ...), and every child times, interleaved rep by rep: idle then contended, ours then
OpenCV DNN then ONNX Runtime (and OpenVINO when installed) on our export, for the forward pass (random input,
batch 1) and for end-to-end detection over the shared images (decode, resize, forward, NMS; one image per call).
Medians over all reps of all rounds.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

# name -> environment for the child (None: the variable is removed)
POLICIES = {
    "default": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},       # libgomp's default: spin ~0.3 ms, then sleep
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},  # sleep at once
    "spin10k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"},    # a short spin
    "cli": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None,            # what `darknet-prn` sets up
            "_CLI": "1"},
}

_HOG = "import time\nend = time.monotonic() + float({seconds})\nwhile time.monotonic() < end:\n    pass\n"


class Hog:
    """A bounded busy loop on one core, paused/resumed with SIGSTOP/SIGCONT."""

    def __init__(self, seconds: float = 900.0):
        cpus = sorted(os.sched_getaffinity(0))
        self.cpu = cpus[-1]
        self.proc = subprocess.Popen([sys.executable, "-c", _HOG.format(seconds=seconds)],
                                     preexec_fn=lambda: os.sched_setaffinity(0, {self.cpu}))
        self.running = True
        self.pause()

    def pause(self):
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)
            self.running = False

    def resume(self):
        if not self.running:
            self.proc.send_signal(signal.SIGCONT)
            self.running = True
            time.sleep(0.05)          # let the scheduler see it

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------------------------
# child: one wait policy


def child(args) -> dict:
    """Runs in a fresh process (its OMP settings are in the environment). Prints one JSON line."""
    from . import latency as L
    if os.environ.get("_CLI"):
        from darknet_prn import threads as dthreads
        dthreads.configure_process()
    import warnings
    warnings.filterwarnings("ignore")
    import cv2
    import torch
    from darknet_prn.detect import Detector
    images = sorted(str(p) for p in L.IMAGES.glob("*.jpg"))
    out = {"omp": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}, "rows": []}
    with Hog() as hog:
        for name in args.models:
            cfg = L.cfg_at_size(name, args.size)
            weights = L.weights_for(name, args.size, cfg)
            real = name == "yolov3-tiny" and (L.ROOT / "weights" / "yolov3-tiny.weights").exists()
            if real:
                cfg, weights = L.ROOT / "weights" / "yolov3-tiny.cfg", L.ROOT / "weights" / "yolov3-tiny.weights"
            for th in args.threads:
                torch.set_num_threads(th)
                cv2.setNumThreads(th)
                det = Detector(str(cfg), str(weights))
                engines = {"ours": det.net}
                for b in args.engines:
                    try:
                        engines[b] = L.load_net(cfg, weights, b).set_backend(b, threads=th)
                        engines[b](torch.rand(1, 3, args.size, args.size))
                    except Exception as e:  # noqa: BLE001 -- an engine that is not installed: no column
                        print(f"  ({b}: {e})", file=sys.stderr)
                        engines.pop(b, None)
                cvn, names = L.opencv_net(cfg, weights)
                ocv = L.OpenCVDetector(cfg, weights, det.net_w)
                x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
                blob = x.numpy()
                fwd = {k: (lambda n=n: n(x)) for k, n in engines.items()}
                fwd["opencv"] = lambda: (cvn.setInput(blob), cvn.forward(names))
                e2e = {"ours": lambda: [det.detect(p) for p in images],
                       "opencv": lambda: [ocv.detect(p) for p in images]}
                for kind, fns in (("forward", fwd), ("detect", e2e)):
                    for f in fns.values():       # warm-up
                        f()
                    times = {(phase, k): [] for phase in ("idle", "contended") for k in fns}
                    t0 = time.perf_counter()
                    for r in range(args.reps):
                        for phase in ("idle", "contended"):
                            hog.resume() if phase == "contended" else hog.pause()
                            for k, f in fns.items():
                                t = time.perf_counter()
                                f()
                                times[(phase, k)].append((time.perf_counter() - t) * 1e3)
                        hog.pause()
                        if r >= 2 and time.perf_counter() - t0 > args.budget:
                            break
                    per = len(images) if kind == "detect" else 1
                    for (phase, k), v in times.items():
                        out["rows"].append(dict(model=name + (" (COCO weights)" if real else ""), kind=kind,
                                                threads=th, phase=phase, engine=k, ms=[t / per for t in v]))
    print(json.dumps(out))
    return out


# ---------------------------------------------------------------------------------------------------------------
# parent: rounds of children, the table


def run(args) -> dict:
    from . import latency as L
    raw = []                                   # every child's rows, saved after each child (a long run can stop)
    partial = L.CACHE / "contended-raw.json"
    for rnd in range(args.rounds):
        for pol in args.policies:
            env = dict(os.environ, PYTHONPATH=str(L.ROOT))
            for k, v in POLICIES[pol].items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = v
            argv = [sys.executable, "-m", "benchmarks.latency", "--contended-child", "--models",
                    ",".join(args.models), "--threads", ",".join(map(str, args.threads)), "--reps", str(args.reps),
                    "--budget", str(args.budget), "--size", str(args.size), "--backends",
                    ",".join(["torch"] + args.engines)]
            t = time.time()
            p = subprocess.run(argv, capture_output=True, text=True, cwd=L.ROOT, env=env)
            if p.returncode:
                raise SystemExit(f"child {pol} failed:\n{p.stderr[-3000:]}")
            res = json.loads(p.stdout.strip().splitlines()[-1])
            raw.extend(dict(r, policy=pol) for r in res["rows"])
            partial.write_text(json.dumps(raw))
            print(f"  round {rnd + 1}/{args.rounds} {pol}: {time.time() - t:.0f} s, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
    return {"contended": table(raw, args)}


def table(raw: list, args) -> list:
    """Medians per (model, what, threads, engine; ours: per policy) and phase; prints the markdown table."""
    rows = {}
    for r in raw:
        key = (r["model"], r["kind"], r["threads"], r["policy"] if r["engine"] == "ours" else "-", r["engine"])
        rows.setdefault(key, {}).setdefault(r["phase"], []).extend(r["ms"])
    merged = {}
    for key, ph in rows.items():
        model, kind, th, pol, engine = key
        idle, cont = statistics.median(ph["idle"]), statistics.median(ph["contended"])
        merged[key] = dict(model=model, kind=kind, threads=th, policy=pol, engine=engine, idle_ms=idle,
                           contended_ms=cont, ratio=cont / idle, reps=len(ph["idle"]))
    print(f"\n## Contended: one core busy ({args.size}x{args.size}, batch 1; medians of {args.rounds} rounds of "
          f"interleaved reps; detect = ms per image over the shared images)\n")
    print("| model | what | threads | engine (OpenMP wait policy) | idle ms | one core busy ms | busy / idle | "
          "vs OpenCV: idle, busy |")
    print("|---|---|---|---|---|---|---|---|")
    order = {"ours": 0, "opencv": 1, "onnxruntime": 2, "openvino": 3}
    for r in sorted(merged.values(), key=lambda r: (r["model"], r["kind"] != "forward", r["threads"],
                                                     order.get(r["engine"], 9), r["policy"])):
        cv = merged.get((r["model"], r["kind"], r["threads"], "-", "opencv"))
        vs = f"{r['idle_ms'] / cv['idle_ms']:.2f}, {r['contended_ms'] / cv['contended_ms']:.2f}" if cv else ""
        eng = f"ours ({r['policy']})" if r["engine"] == "ours" else r["engine"]
        print(f"| {r['model']} | {r['kind']} | {r['threads']} | {eng} | {r['idle_ms']:.1f} | {r['contended_ms']:.1f}"
              f" | **{r['ratio']:.2f}** | {vs} |", flush=True)
    return list(merged.values())
