"""Training benchmark: one Darknet training iteration in darknet-prn, and the data pipeline's images/s.

    python -m benchmarks.train_iter                  # oracle cases + yolov3-tiny-prn 416 batch 64/8 + pipeline
    python -m benchmarks.train_iter --quick          # oracle cases + pipeline only (no 416 iteration)

1. The shared training-oracle cases (``../shared/oracle/train``) at their size and batch: forward, Darknet's
   loss, backward and ``DarknetOptimizer.step`` (one ``train_network()`` of Darknet), median of ``--reps``,
   at 1 thread, next to the Darknet step time the oracle README gives for the same case (1 OpenMP thread,
   measured on a shared 2-core machine: read ±50 %).
2. yolov3-tiny-prn at 416, batch 64 / subdivisions 8: one whole iteration (8 mini-batches of 8 images,
   accumulation, one update), random input and synthetic truth, 2 threads.
3. The data pipeline: ``darknet-prn train``'s DataLoader (Darknet's augmentation incl. mosaic, at 416) on a
   generated dataset, images/s with 0, 1 and 2 workers, against the training step's images/s of (2).

No Darknet build is run here (``--darknet`` is not implemented): Darknet's figures are the oracle README's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORACLE = Path(os.environ.get("DARKNET_PRN_TRAIN_ORACLE", ROOT / ".." / "shared" / "oracle" / "train")).resolve()


def _step_time(net, opt, x, truth, reps: int) -> list:
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        loss, _ = net.loss(x, truth)
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return times[1:]          # the first one warms up allocators


def bench_oracle_cases(reps: int) -> list:
    import torch
    from darknet_prn import Darknet
    from darknet_prn.train import DarknetOptimizer
    sys.path.insert(0, str(ORACLE))
    import train_case
    torch.set_num_threads(1)
    rows = []
    for case in sorted(p for p in ORACLE.iterdir() if (p / "case.json").exists()):
        info = json.loads((case / "case.json").read_text())
        net = Darknet.from_cfg(case / "train.cfg", warn=False)
        net.train()
        c, h, w = net.graph.input_shape
        x = torch.rand(info["batch"], c, h, w, generator=torch.Generator().manual_seed(0))
        truth = train_case.truth_array(case)
        opt = DarknetOptimizer(net, iteration=int(info["optimizer"].get("iteration_before", 0) or 0))
        ours = statistics.median(_step_time(net, opt, x, truth, reps))
        dk = info["timing"]["bench_median_s_omp1"]
        rows.append({"case": case.name, "batch": info["batch"], "size": f"{w}x{h}", "ours_s": round(ours, 4),
                     "darknet_s": dk, "ratio": round(ours / dk, 2)})
        print(f"  {case.name:18s} B={info['batch']} {w}x{h}: ours {ours:.3f} s, Darknet {dk:.3f} s, "
              f"ratio {ours / dk:.2f}", flush=True)
    return rows


PRN_CFG = ROOT / "cfg" / "yolov3-tiny-prn.cfg"


def _cfg_text(batch: int, subdivisions: int, size: int, classes: int | None = None) -> str:
    import re
    text = PRN_CFG.read_text()
    text = re.sub(r"(?m)^batch\s*=.*$", f"batch={batch}", text, count=1)
    text = re.sub(r"(?m)^subdivisions\s*=.*$", f"subdivisions={subdivisions}", text, count=1)
    text = re.sub(r"(?m)^width\s*=.*$", f"width={size}", text, count=1)
    text = re.sub(r"(?m)^height\s*=.*$", f"height={size}", text, count=1)
    if classes is not None:
        text = re.sub(r"(?m)^classes\s*=.*$", f"classes={classes}", text)
        text = re.sub(r"(?m)^filters\s*=\s*255\s*$", f"filters={3 * (5 + classes)}", text)
    return text


def bench_prn_iteration(reps: int, threads: int) -> dict:
    import numpy as np
    import torch
    from darknet_prn import Darknet
    from darknet_prn.train import DarknetOptimizer
    from darknet_prn.train.trainer import train_iteration, _LossModule
    torch.set_num_threads(threads)
    net = Darknet.from_cfg_text(_cfg_text(64, 8, 416), path="yolov3-tiny-prn-416-64-8.cfg", warn=False)
    net.train()
    opt = DarknetOptimizer(net, iteration=1000)
    rng = np.random.default_rng(0)
    minis = []
    for _ in range(8):
        x = torch.rand(8, 3, 416, 416, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
        t = torch.zeros(8, 200, 5)
        for b in range(8):
            for k in range(int(rng.integers(2, 7))):
                t[b, k] = torch.tensor([rng.uniform(.1, .9), rng.uniform(.1, .9), rng.uniform(.05, .4),
                                        rng.uniform(.05, .4), int(rng.integers(0, 80))])
        minis.append((x, t))
    model = _LossModule(net)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        train_iteration(model, opt, minis)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[1:])
    print(f"  yolov3-tiny-prn 416, batch 64 / subdivisions 8, {threads} threads: {med:.1f} s per iteration "
          f"({64 / med:.1f} images/s)", flush=True)
    return {"iteration_s": round(med, 2), "images_per_s": round(64 / med, 2), "threads": threads}


def bench_loader(n_batches: int, size: int = 416) -> list:
    from darknet_prn.cfg import read_cfg_text
    from darknet_prn.dataset import DataConfig
    from darknet_prn.train.augment import AugmentParams
    from darknet_prn.train.loader import batches, make_loader, read_training_set
    from darknet_prn.train.synthetic import generate
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = generate(Path(tmp) / "d", n=64, classes=5, size=500, seed=0)
        text = _cfg_text(64, 8, size, classes=5).replace("[net]", "[net]\nmosaic=1", 1)
        params = AugmentParams.from_sections(read_cfg_text(text), "prn.cfg")
        params.random = 0
        d = DataConfig.read(data)
        paths, labels = read_training_set(d.train, 5)
        for workers in (0, 1, 2):
            it = batches(make_loader(paths, labels, params, 8, 8, 10 ** 6, seed=1, workers=workers))
            next(it)
            t0 = time.perf_counter()
            for _ in range(n_batches):
                next(it)
            dt = time.perf_counter() - t0
            ips = n_batches * 8 / dt
            rows.append({"workers": workers, "images_per_s": round(ips, 1)})
            print(f"  data pipeline at {size}, mosaic=1, {workers} workers: {ips:.1f} images/s", flush=True)
            del it
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_iter", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="skip the yolov3-tiny-prn 416 batch-64 iteration")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of each oracle case step (default 3)")
    p.add_argument("--iter-reps", type=int, default=1, help="timed 416 iterations (default 1)")
    p.add_argument("--threads", type=int, default=2, help="threads for the 416 iteration (default 2)")
    p.add_argument("--pipeline-batches", type=int, default=6, help="mini-batches of 8 per loader timing")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle cases")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    out = {}
    if not args.no_oracle:
        print("oracle cases, one training step (1 thread):")
        out["oracle_cases"] = bench_oracle_cases(args.reps)
    print("data pipeline:")
    out["pipeline"] = bench_loader(args.pipeline_batches)
    if not args.quick:
        print("one iteration:")
        out["prn416"] = bench_prn_iteration(args.iter_reps, args.threads)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
