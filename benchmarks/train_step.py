"""Training-step benchmark: one Darknet training step (training forward, loss, backward, ``update_network``)
through ``Darknet.loss`` + ``DarknetOptimizer``, per shared training-oracle case at its size and batch on 1
thread, next to Darknet's own time for the same step (``case.json`` ``timing``: median of 5 ``train_network``
calls, 1 OpenMP thread, recorded when the oracle was built -- not in this run); then yolov3-tiny-prn at 416,
batch 8, 2 threads (random weights, random boxes).

    python -m benchmarks.train_step               # all cases, 5 timed steps each (after 1 warm-up)
    python -m benchmarks.train_step --reps 3 --cases yolov3-tiny-prn,synthetic-train
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
CACHE = ROOT / "build" / "oracle-cache"
sys.path.insert(0, str(SHARED / "oracle" / "train"))


def _step(net, opt, x, truth):
    t0 = time.perf_counter()
    loss, _ = net.loss(x, truth)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return time.perf_counter() - t0


def time_steps(net, x, truth, reps):
    from darknet_prn.train import DarknetOptimizer
    net.train()
    opt = DarknetOptimizer(net, iteration=1000)
    _step(net, opt, x, truth)                                     # warm-up
    return [_step(net, opt, x, truth) for _ in range(reps)]


def bench_case(case: Path, reps: int):
    import train_case
    from darknet_prn import Darknet
    m = train_case.materialize(case, CACHE / ("train-" + case.name))
    meta = train_case.read_case_json(case)
    net = Darknet.from_cfg(case / "train.cfg", warn=False)
    net.load_weights(m["weights"])
    times = time_steps(net, torch.from_numpy(np.load(m["input"])), np.load(m["truth"]), reps)
    return statistics.median(times), meta["timing"]["bench_median_s_omp1"], meta["batch"], meta["run_width"]


def bench_prn416(reps: int, threads: int = 2, batch: int = 8):
    from darknet_prn import Darknet
    cfg = SHARED / "cfg-corpus" / "yolov3-tiny-prn.cfg"
    torch.manual_seed(0)
    net = Darknet.from_cfg(cfg, 416, 416, warn=False)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((batch, 3, 416, 416), dtype=np.float32))
    truth = [np.column_stack([rng.uniform(.1, .9, (n, 2)), rng.uniform(.05, .5, (n, 2)), rng.integers(0, 80, n)])
             .astype(np.float32) for n in rng.integers(2, 8, batch)]
    torch.set_num_threads(threads)
    return statistics.median(time_steps(net, x, truth, reps))


def main(argv=None):
    import train_case
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--cases", help="comma-separated case names (default: all shared training cases)")
    p.add_argument("--no-416", action="store_true", help="skip the yolov3-tiny-prn 416 / batch 8 / 2 threads row")
    a = p.parse_args(argv)
    cases = [Path(c) for c in train_case.list_cases(str(SHARED / "oracle" / "train"))]
    if a.cases:
        want = a.cases.split(",")
        cases = [c for c in cases if c.name in want]
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {a.reps} steps (forward + loss + backward + update)")
    print(f"{'case':<18} {'B':>2} {'px':>4} {'ours s':>8} {'darknet s':>10} {'ratio':>6}")
    for c in cases:
        ours, dk, b, px = bench_case(c, a.reps)
        print(f"{c.name:<18} {b:>2} {px:>4} {ours:>8.3f} {dk:>10.3f} {ours / dk:>6.2f}", flush=True)
    if not a.no_416:
        t = bench_prn416(a.reps)
        print(f"yolov3-tiny-prn 416x416, batch 8, 2 threads: {t:.3f} s per step")


if __name__ == "__main__":
    main()
