"""Per-layer profile: our plan's steps (f32 and bf16) next to OpenVINO's per-layer counters (``PERF_COUNT``).

    python -m benchmarks.engines --profile yolov4-tiny --threads 1

Each engine runs in its own process (as in the latency table): a worker times our plan step by step (batch 1,
median over reps), another compiles our ONNX export in OpenVINO with ``PERF_COUNT=YES`` and sums
``get_profiling_info()`` per Darknet layer (OpenVINO node names keep the export's ``/layers.<i>/…`` prefix;
the nodes OpenVINO fused into another are 0, reorders and layout conversions are listed as ``other``).
The ``exec`` column gives OpenVINO's kernel for the layer's main node (e.g. ``brgconv_avx512_amx``, ``jit_avx512``,
a Winograd implementation), which is what a per-layer difference is read against.
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from collections import defaultdict

LAYER = re.compile(r"layers\.(\d+)")


def ours_worker(cfg, weights, size, threads, reps, precision):
    import torch
    from benchmarks.latency import time_plan_steps
    from darknet_prn import Darknet
    torch.set_num_threads(threads)
    net = Darknet.from_cfg(cfg, warn=False)
    net.load_weights(weights)
    net.eval()
    net.set_backend("torch", precision=precision)
    plan = net.fast_plan()
    x = torch.rand(1, 3, size, size)
    times = defaultdict(list)
    with torch.no_grad():
        for _ in range(reps + 2):
            time_plan_steps(plan, x, times)
    return {str(st.index): [st.kind, 1e3 * statistics.median(times[st.index][2:])] for st in plan.steps}


def ov_worker(onnx, size, threads, reps, precision):
    import numpy as np
    import openvino as ov
    core = ov.Core()
    model = core.read_model(onnx)
    model.reshape([1, 3, size, size])
    cm = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                           "INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": "YES"})
    req = cm.create_infer_request()
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    acc = defaultdict(list)
    kinds = {}
    for r in range(reps + 2):
        req.infer({0: x})
        per = defaultdict(float)
        for pi in req.get_profiling_info():
            m = LAYER.search(pi.node_name)
            k = m.group(1) if m else "other"
            us = pi.real_time.total_seconds() * 1e3
            per[k] += us
            if m and pi.node_type in ("Convolution", "GroupConvolution", "MaxPool", "Concat") and us > 0:
                kinds[k] = pi.exec_type
        if r >= 2:
            for k, v in per.items():
                acc[k].append(v)
    return {k: [kinds.get(k, ""), statistics.median(v)] for k, v in acc.items()}


def _spawn(kind, **kw):
    code = (f"import json, sys; sys.path.insert(0, '.'); from benchmarks.profile_ov import {kind}_worker as w; "
            f"print(json.dumps(w(**json.loads(sys.argv[1]))))")
    from benchmarks.engines import ROOT
    out = subprocess.run([sys.executable, "-c", code, json.dumps(kw)], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{kind} profile failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(args, name, cfg, weights):
    from darknet_prn import Darknet
    from benchmarks.engines import export_for
    onnx = export_for(name, cfg, weights, args.size)
    net = Darknet.from_cfg(cfg, warn=False)
    th = args.threads[0]
    reps = max(args.reps, 10)
    res = {}
    for key, kind, prec in (("ours", "ours", "f32"), ("ours-bf16", "ours", "bf16"), ("ov", "ov", "f32"),
                            ("ov-bf16", "ov", "bf16")):
        if kind == "ours":
            res[key] = _spawn("ours", cfg=str(cfg), weights=str(weights), size=args.size, threads=th, reps=reps,
                              precision=prec)
        else:
            res[key] = _spawn("ov", onnx=str(onnx), size=args.size, threads=th, reps=reps, precision=prec)
    print(f"\n## Per-layer profile: {name} {args.size}x{args.size}, batch 1, {th} thread(s), median ms per layer "
          f"(each engine in its own process; GFLOP/s = BFLOPs / time)\n")
    print("| layer | type | output | BFLOPs | ours f32 | GFLOP/s | OV f32 | OV exec (f32) | ours bf16 | OV bf16 "
          "| OV exec (bf16) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    tot = defaultdict(float)
    rows = []
    for l in net.graph.layers:
        k = str(l.index)
        o, ob = res["ours"].get(k, ["", 0.0]), res["ours-bf16"].get(k, ["", 0.0])
        v, vb = res["ov"].get(k, ["", 0.0]), res["ov-bf16"].get(k, ["", 0.0])
        for key, val in (("ours", o[1]), ("ours-bf16", ob[1]), ("ov", v[1]), ("ov-bf16", vb[1])):
            tot[key] += val
        gf = l.bflops / (o[1] / 1e3) if o[1] > 0 and l.bflops else 0.0
        rows.append(dict(layer=l.index, type=l.type, step=o[0], bflops=l.bflops, ours=o[1], ours_bf16=ob[1],
                         ov=v[1], ov_bf16=vb[1], ov_exec=v[0], ov_exec_bf16=vb[0]))
        print(f"| {l.index} | {l.type} | {'x'.join(map(str, l.out_shape))} | {l.bflops:.3f} | {o[1]:.2f} | "
              f"{gf:.0f} | {v[1]:.2f} | {v[0]} | {ob[1]:.2f} | {vb[1]:.2f} | {vb[0]} |")
    other = res["ov"].get("other", ["", 0.0])[1], res["ov-bf16"].get("other", ["", 0.0])[1]
    print(f"| | other (OV reorders, input/output) | | | | | {other[0]:.2f} | | | {other[1]:.2f} | |")
    print(f"| | **total** | | {sum(l.bflops for l in net.graph.layers):.3f} | {tot['ours']:.1f} | | "
          f"{tot['ov'] + other[0]:.1f} | | {tot['ours-bf16']:.1f} | {tot['ov-bf16'] + other[1]:.1f} | |")
    return rows
