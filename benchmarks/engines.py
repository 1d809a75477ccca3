"""Engine comparison: darknet-prn (f32, bf16) against ONNX Runtime, OpenVINO and OpenCV DNN, each in its own process.

    python -m benchmarks.engines            # 5 models x batch 1/8 x 1/2 threads (docs/performance.md holds one)
    python -m benchmarks.engines --quick    # yolov3-tiny-prn + yolov4-tiny, batch 1, 1 and 2 threads
    python -m benchmarks.engines --profile yolov4-tiny --threads 1   # per layer: ours vs OpenVINO's PERF_COUNT
    python -m benchmarks.engines --contended                         # the same, one core kept busy
    python -m benchmarks.engines --accuracy [--synthetic DIR]        # mAP@0.5 and detection change per precision

How it measures. Every engine runs in a worker process of its own (thread pools of engines that share a process
slow each other down), started once per model and kept alive; the workers idle on a pipe while another one
runs. For every row (model x batch x threads) the parent runs ``--rounds`` rounds; in each round every engine,
in rotating order, times ``--reps`` forward passes after a warm-up (5 forwards at batch 1, 1 above), and the
row gives the median over all the rounds' timings. Between two engines the parent sleeps 0.2 s so that
spinning worker threads of the last engine (OpenMP, TBB) have gone to sleep. The network is the corpus cfg with ``[net]`` width/height = ``--size`` and
random weights of the right size (``benchmarks.latency``'s); the peers run our ONNX export of it
(``Darknet.export_onnx``: BN folded, standard ops), with a static input shape (batch fixed per row).

Engines: ``ours`` (``net.eval(); net(x)``, f32, the default; with the OpenMP wait policy the ``darknet-prn``
command picks on this machine -- ``PASSIVE`` when other processes keep the CPUs busy, else libgomp's default --
decided once per model before the workers start; ``--omp-wait-policy`` fixes it), ``ours-bf16`` (``set_backend("torch",
precision="bf16")``), ``ort`` (ONNX Runtime, CPU provider, ``intra_op_num_threads``, its default spinning),
``ov`` (OpenVINO, ``INFERENCE_PRECISION_HINT=f32``, ``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_NUM_THREADS``),
``ov-default`` (OpenVINO's own default precision: bf16 on CPUs with AMX/AVX-512 BF16), ``opencv`` (cv2.dnn on
the ONNX file), ``ort-int8`` / ``ov-int8`` (the int8 QDQ model ``darknet_prn.quantize`` writes, calibrated on
the images of ``--int8-data``, by default the shared map set; with random weights the calibration only sets the
ranges, the timing is what counts here).
``--contended`` keeps a busy loop on the last core (``benchmarks.contended.Hog``) while a model's rows run; it is
started before that model's workers, so the wait-policy check sees the busy machine.
Numbers from a shared machine are noisy: compare the columns of one row, not rows of different runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import CACHE, MODELS, QUICK_MODELS, cfg_at_size, finish, machine, weights_for  # noqa: E402

ENGINES = ["ours", "ours-bf16", "ort", "ov", "ov-default", "opencv", "ort-int8", "ov-int8"]
F32_PEERS = ["ort", "ov", "opencv"]
MAP_DIR = ROOT / ".." / "shared" / "oracle" / "map"
IMAGES = ROOT / ".." / "shared" / "data"


# ---------------------------------------------------------------------------------------------------------------
# worker side: one engine, commands on stdin ({"batch", "threads", "reps"}), one JSON line per command on stdout


class Engine:
    def __init__(self, engine, cfg, weights, onnx, size):
        self.engine, self.cfg, self.weights, self.onnx, self.size = engine, cfg, weights, onnx, size
        self.cache = {}

    def runner(self, batch, threads):
        key = (batch, threads)
        if key in self.cache:
            return self.cache[key]
        e = self.engine
        if e.startswith("ours"):
            import torch
            from darknet_prn import Darknet
            torch.set_num_threads(threads)
            if "net" not in self.cache:
                net = Darknet.from_cfg(self.cfg, warn=False)
                net.load_weights(self.weights)
                net.eval()
                net.set_backend("torch", precision="bf16" if e == "ours-bf16" else "f32")
                self.cache["net"] = net
            net = self.cache["net"]

            def run(x, net=net, threads=threads):
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
                net(torch.from_numpy(x))
        elif e.startswith("ort"):
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(self.onnx), so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name

            def run(x, sess=sess, name=name):
                sess.run(None, {name: x})
        elif e.startswith("ov"):
            import openvino as ov
            core = self.cache.setdefault("core", ov.Core())
            model = core.read_model(str(self.onnx))
            model.reshape([batch, 3, self.size, self.size])
            cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            if e == "ov":
                cfg["INFERENCE_PRECISION_HINT"] = "f32"
            cm = core.compile_model(model, "CPU", cfg)
            req = cm.create_infer_request()
            v = cm.get_property("INFERENCE_PRECISION_HINT")
            self.precision = v.to_string() if hasattr(v, "to_string") else str(v)

            def run(x, req=req):
                req.infer({0: x})
        elif e == "opencv":
            import cv2
            cv2.setNumThreads(threads)
            n = self.cache.get("cvnet")
            if n is None:
                n = self.cache["cvnet"] = cv2.dnn.readNetFromONNX(str(self.onnx))
                n.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
                n.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
            names = n.getUnconnectedOutLayersNames()

            def run(x, n=n, names=names, threads=threads):
                cv2.setNumThreads(threads)
                n.setInput(x)
                n.forward(names)
        else:
            raise SystemExit(f"unknown engine {e}")
        self.cache[key] = run
        return run

    def time(self, batch, threads, reps, warmup=None):
        import numpy as np
        # after the pause between engines the first forwards run on cold caches and sleeping threads: warm up
        # long enough that each engine's timed forwards are its steady state (5 at batch 1, 1 of a batch of 8)
        warmup = warmup if warmup is not None else (5 if batch == 1 else 1)
        x = np.random.default_rng(batch).random((batch, 3, self.size, self.size), dtype=np.float32)
        run = self.runner(batch, threads)
        for _ in range(warmup):
            run(x)
        ts, cpu = [], []
        for _ in range(reps):
            c = time.process_time()
            t = time.perf_counter()
            run(x)
            ts.append(1e3 * (time.perf_counter() - t))
            cpu.append(1e3 * (time.process_time() - c))
        return ts, cpu


def worker(args):
    import warnings
    warnings.filterwarnings("ignore")
    policy = os.environ.get("OMP_WAIT_POLICY") or "default" if args.worker.startswith("ours") else None
    eng = Engine(args.worker, args.cfg, args.weights, args.onnx, args.size)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            ts, cpu = eng.time(cmd["batch"], cmd["threads"], cmd["reps"])
            out = {"times": ts, "cpu": cpu, "precision": getattr(eng, "precision", None), "omp": policy}
        except Exception as e:  # noqa: BLE001 -- reported in the table, the run goes on
            out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        print(json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parent side


class Worker:
    def __init__(self, engine, cfg, weights, onnx, size, omp_wait_policy="default"):
        self.engine = engine
        env = dict(os.environ)
        if engine.startswith("ours") and omp_wait_policy in ("passive", "active"):
            env.setdefault("OMP_WAIT_POLICY", omp_wait_policy.upper())
        elif engine.startswith("ours") and omp_wait_policy == "default":
            env.pop("OMP_WAIT_POLICY", None)
        self.p = subprocess.Popen([sys.executable, "-m", "benchmarks.engines", "--worker", engine, "--cfg", str(cfg),
                                   "--weights", str(weights), "--onnx", str(onnx), "--size", str(size)],
                                  cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def time(self, batch, threads, reps):
        self.p.stdin.write(json.dumps({"batch": batch, "threads": threads, "reps": reps}) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            return {"error": "worker exited"}
        return json.loads(line)

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()


def export_for(name, cfg, weights, size) -> Path:
    """Our ONNX export (dynamic batch) of the benchmark model, cached next to its weights."""
    out = CACHE / f"{name}-{size}.onnx"
    if not out.exists() or out.stat().st_mtime < weights.stat().st_mtime:
        from darknet_prn import Darknet
        net = Darknet.from_cfg(cfg, warn=False)
        net.load_weights(weights)
        net.export_onnx(out, dynamic_batch=True, verify=False)
    return out


def int8_for(name, cfg, weights, size, data) -> Path:
    """The int8 model of the benchmark network (``darknet_prn.quantize``), cached."""
    out = CACHE / f"{name}-{size}.int8.onnx"
    if not out.exists() or out.stat().st_mtime < weights.stat().st_mtime:
        from darknet_prn.quantize import quantize
        quantize(cfg, weights, data, out, images=8, progress=False)
    return out


def bench_engines(args, models):
    rows = []
    engines = args.engines
    hdr = ["model", "batch", "threads"] + [f"{e} ms" for e in engines] + \
          ["ours / best f32 peer", "bf16 speed-up", "int8 speed-up", "ours OpenMP", "load avg"]
    print(f"\n## Forward latency ({args.size}x{args.size}; each engine in its own process; medians over "
          f"{args.rounds} interleaved rounds x {args.reps} reps (batch > 1: {args.reps_batch}); "
          + ("one core kept busy by a background loop" if args.contended else "idle") + ")\n")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, (cfg, weights) in models.items():
        onnx = export_for(name, cfg, weights, args.size)
        int8 = args.int8.get(name)
        if int8 is None and args.int8_data and any(e.endswith("-int8") for e in engines):
            int8 = int8_for(name, cfg, weights, args.size, args.int8_data)
        ws = {}
        # --contended: a busy loop on the last core during the whole model, started before the workers (so the
        # CLI's wait-policy check sees a busy machine, as a user's would)
        hog = None
        if args.contended:
            from benchmarks.contended import Hog
            hog = Hog()
            hog.resume()
        policy = args.omp_wait_policy
        if policy == "cli":
            # what the darknet-prn command picks (threads.configure_process), decided here once before any worker
            # starts, so the check sees the machine and not the other engines loading
            from darknet_prn.threads import BUSY_CPUS, busy_cpus
            busy = busy_cpus()
            policy = "passive" if busy is None or busy >= BUSY_CPUS else "default"
        for e in engines:
            src = int8 if e.endswith("-int8") else onnx
            if src is None:
                continue
            ws[e] = Worker(e, cfg, weights, src, args.size, policy)
        try:
            for batch in args.batches:
                for th in args.threads:
                    times = {e: [] for e in ws}
                    cpus = {e: [] for e in ws}
                    errors, precs, omp = {}, {}, None
                    order = list(ws)
                    for r in range(args.rounds):
                        for e in order[r % len(order):] + order[:r % len(order)]:
                            if e in errors:
                                continue
                            res = ws[e].time(batch, th, args.reps if batch == 1 else args.reps_batch)
                            if "error" in res:
                                errors[e] = res["error"]
                                print(f"  {name} b{batch} t{th} {e}: {res['error']}", file=sys.stderr)
                                continue
                            times[e] += res["times"]
                            cpus[e] += res["cpu"]
                            precs[e] = res.get("precision")
                            if res.get("omp"):
                                omp = res["omp"]
                            time.sleep(0.2)
                    med = {e: statistics.median(v) for e, v in times.items() if v}
                    cpu = {e: statistics.median(v) for e, v in cpus.items() if v}
                    peers = [med[e] for e in F32_PEERS if e in med]
                    row = dict(model=name, batch=batch, threads=th, ms=med, cpu_ms=cpu, errors=errors,
                               precision=precs, omp_wait_policy=omp, contended=bool(args.contended),
                               load=os.getloadavg()[0], reps=args.rounds * args.reps)
                    if "ours" in med and peers:
                        row["ratio_best_f32"] = med["ours"] / min(peers)
                    if "ours" in med and "ours-bf16" in med:
                        row["bf16_speedup"] = med["ours"] / med["ours-bf16"]
                    q = [med[e] for e in ("ort-int8", "ov-int8") if e in med]
                    if "ours" in med and q:
                        row["int8_speedup"] = med["ours"] / min(q)
                    rows.append(row)
                    cells = [name, str(batch), str(th)] + [f"{med[e]:.1f}" if e in med else "—" for e in engines]
                    cells += [f"**{row['ratio_best_f32']:.2f}**" if "ratio_best_f32" in row else "—",
                              f"{row['bf16_speedup']:.2f}x" if "bf16_speedup" in row else "—",
                              f"{row['int8_speedup']:.2f}x" if "int8_speedup" in row else "—", omp or "—",
                              f"{row['load']:.1f}"]
                    print("| " + " | ".join(cells) + " |", flush=True)
        finally:
            for w in ws.values():
                w.close()
            if hog is not None:
                hog.close()
    one = [r for r in rows if r["threads"] == 1]
    if one:
        print("\n## The 1-thread rows by process CPU time per forward (ms; robust to the preemption a shared "
              "machine adds to wall time, close to an idle machine's latency)\n")
        hdr = ["model", "batch"] + [f"{e} cpu ms" for e in engines] + ["ours / best f32 peer", "bf16 speed-up",
                                                                        "int8 speed-up"]
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for r in one:
            c = r["cpu_ms"]
            peers = [c[e] for e in F32_PEERS if e in c]
            q = [c[e] for e in ("ort-int8", "ov-int8") if e in c]
            r["cpu_ratio_best_f32"] = c["ours"] / min(peers) if "ours" in c and peers else None
            r["cpu_bf16_speedup"] = c["ours"] / c["ours-bf16"] if "ours" in c and "ours-bf16" in c else None
            r["cpu_int8_speedup"] = c["ours"] / min(q) if "ours" in c and q else None
            cells = [r["model"], str(r["batch"])] + [f"{c[e]:.1f}" if e in c else "—" for e in engines]
            cells += [f"**{r['cpu_ratio_best_f32']:.2f}**" if r["cpu_ratio_best_f32"] else "—",
                      f"{r['cpu_bf16_speedup']:.2f}x" if r["cpu_bf16_speedup"] else "—",
                      f"{r['cpu_int8_speedup']:.2f}x" if r["cpu_int8_speedup"] else "—"]
            print("| " + " | ".join(cells) + " |")
    ovp = {r["precision"].get("ov-default") for r in rows if r["precision"].get("ov-default")}
    if ovp:
        print(f"\n(ov-default ran at OpenVINO's inference precision {', '.join(sorted(ovp))})")
    return rows


# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 models, batch 1, 1 and 2 threads, 3 rounds")
    p.add_argument("--models", help=f"comma-separated corpus cfg names (default: {','.join(MODELS)})")
    p.add_argument("--size", type=int, default=416)
    p.add_argument("--batches", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--threads", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated (default {','.join(ENGINES)})")
    p.add_argument("--int8", action="append", default=[], metavar="MODEL=FILE",
                   help="int8 ONNX model of MODEL (darknet-prn quantize) for the ort-int8/ov-int8 engines")
    p.add_argument("--int8-data", default=str(MAP_DIR / "coco6.data") if (MAP_DIR / "coco6.data").exists() else None,
                   help="Darknet .data whose images calibrate the int8 models (default: the shared map set)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per row (default 5, quick 3)")
    p.add_argument("--reps", type=int, help="timed forwards per engine and round (default 5, batch 8: 2)")
    p.add_argument("--profile", metavar="MODEL", help="only a per-layer profile of MODEL: ours vs OpenVINO f32")
    p.add_argument("--accuracy", action="store_true", help="only the accuracy table (mAP, detection change)")
    p.add_argument("--synthetic", metavar="DIR", help="with --accuracy: also a model trained on darknet-prn synth "
                                                      "data in DIR (benchmarks/accuracy.py)")
    p.add_argument("--omp-wait-policy", default="cli", choices=("cli", "passive", "active", "default"),
                   help="OpenMP wait policy of our workers (default cli: what the darknet-prn command picks -- "
                        "PASSIVE when other processes keep the CPUs busy, else libgomp's default; 'default' leaves "
                        "the environment alone)")
    p.add_argument("--contended", action="store_true",
                   help="keep one core busy with a background loop during the run (the contended rows)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cfg", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return a
    a.models = a.models.split(",") if a.models else (QUICK_MODELS if a.quick else MODELS)
    a.batches = [int(v) for v in a.batches.split(",")] if a.batches else ([1] if a.quick else [1, 8])
    a.threads = [int(v) for v in a.threads.split(",")] if a.threads else [1, 2]
    a.rounds = a.rounds or (3 if a.quick else 5)
    a.reps_batch = a.reps or 2
    a.reps = a.reps or 5
    a.int8 = dict(v.split("=", 1) for v in a.int8)
    a.engines = [e for e in a.engines.split(",") if e]
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import warnings
    warnings.filterwarnings("ignore")
    info = machine()
    print("# darknet-prn engine comparison\n")
    print(f"machine: {info['cpu']}, {info['cores']} cores; load average {info['load_avg'][0]:.2f}; "
          f"torch {info['torch']}, opencv {info['opencv']}"
          + "".join(f", {m} {info[m]}" for m in ("onnxruntime", "openvino") if m in info))
    names = [args.profile] if args.profile else args.models
    models = {}
    for name in names:
        cfg = cfg_at_size(name, args.size)
        models[name] = (cfg, weights_for(name, args.size, cfg))
    results = dict(machine=info, args=vars(args))
    t0 = time.time()
    if args.profile:
        from benchmarks.profile_ov import profile
        results["profile"] = profile(args, args.profile, *models[args.profile])
    elif args.accuracy:
        from benchmarks.accuracy import accuracy
        results["accuracy"] = accuracy(args)
    else:
        results["latency"] = bench_engines(args, models)
    return finish(results, t0, args.json)


if __name__ == "__main__":
    sys.exit(main())
