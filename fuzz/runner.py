"""Runs fuzz cases in worker processes under a memory cap (``RLIMIT_AS``) and a per-case timeout, and tallies
the outcomes: ``ok`` / ``clean`` (one-line error naming the file) / ``other`` (a raw exception, a multi-line
or anonymous message, a write through a symlink, a broken round trip) / ``hang`` / ``crash``."""
from __future__ import annotations

import json
import os
import queue
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from .cases import CLI_TABLE, KINDS

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("ok", "clean", "other", "hang", "crash", "pending")   # pending: a CLI row another issue owns
BAD = ("other", "hang", "crash")


class Worker:
    def __init__(self, workdir: Path, mem_bytes: int, nice: int, env: dict):
        self.workdir, self.mem, self.nice, self.env = workdir, mem_bytes, nice, env
        self.proc = None
        self.done = 0

    def _limits(self):
        if self.mem:
            resource.setrlimit(resource.RLIMIT_AS, (self.mem, self.mem))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.nice:
            os.nice(self.nice)

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "fuzz.worker", str(self.workdir)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=self.env, preexec_fn=self._limits, text=True, bufsize=1)
        line = self._read(300)
        if line != "ready":
            self.stop()
            raise RuntimeError(f"fuzz worker did not start ({line!r})")
        self.done = 0

    def _read(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline().strip()

    def stop(self):
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()
            self.proc = None

    def run(self, kind: str, seed: int, timeout: float) -> dict:
        if self.proc is None or self.done >= 250:      # fresh workers now and then: no state piles up
            self.stop()
            self.start()
        self.done += 1
        t0 = time.monotonic()
        try:
            self.proc.stdin.write(f"{kind} {seed}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._read(timeout)
        dt = time.monotonic() - t0
        if line is None:
            self.stop()
            return {"outcome": "hang", "detail": f"no answer in {timeout:.0f} s", "s": dt}
        if not line:
            rc = self.proc.wait()
            self.proc = None
            how = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc} (memory cap?)"
            return {"outcome": "crash", "detail": how, "s": dt}
        res = json.loads(line)
        res["s"] = dt
        return res


def schedule(n: int, kinds=KINDS, seed0: int = 0) -> list:
    """``n`` cases: the CLI table once (when ``cli`` is a kind), the rest spread over the other kinds
    (cfg 40 %, image 35 %, weights 25 %), seeds ``seed0, seed0 + 1, ...`` per kind."""
    jobs = [("cli", i) for i in range(len(CLI_TABLE))] if "cli" in kinds else []
    share = {"cfg": 0.40, "image": 0.35, "weights": 0.25}
    rest = [k for k in kinds if k in share]
    left = max(0, n - len(jobs))
    tot = sum(share[k] for k in rest) or 1
    counts = {k: int(left * share[k] / tot) for k in rest}
    if rest:
        counts[rest[0]] += left - sum(counts.values())
    per = {k: [(k, seed0 + i) for i in range(c)] for k, c in counts.items()}
    while any(per.values()):                          # interleave the kinds
        for k in rest:
            if per[k]:
                jobs.append(per[k].pop(0))
    return jobs


def run(n: int = 300, jobs: int = 2, kinds=KINDS, seed0: int = 0, timeout: float = 60.0,
        mem_gb: float = 6.0, nice: int = 0, progress=None, deadline: float | None = None,
        quick: bool = False) -> dict:
    """Runs ``schedule(n)`` on ``jobs`` workers; returns ``{"table": {kind: Counter}, "bad": [...], ...}``.
    ``deadline``: seconds after which no new case starts (the cases run so far are reported); ``quick``: cfg
    cases mutate the small corpus cfgs only."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DARKNET_PRN_MAX_MEMORY="2G",
               DARKNET_PRN_FUZZ_QUICK="1" if quick else "0",
               PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p))
    todo = queue.Queue()
    for j in schedule(n, kinds, seed0):
        todo.put(j)
    results, lock = [], threading.Lock()
    tmp = Path(tempfile.mkdtemp(prefix="darknet-prn-fuzz-"))
    t_start = time.monotonic()

    def loop(wi):
        w = Worker(tmp / f"w{wi}", int(mem_gb * 2 ** 30), nice, env)
        try:
            while True:
                if deadline is not None and time.monotonic() - t_start > deadline:
                    return
                try:
                    kind, seed = todo.get_nowait()
                except queue.Empty:
                    return
                res = w.run(kind, seed, timeout)
                res.update(kind=kind, seed=seed)
                with lock:
                    results.append(res)
                    if progress:
                        progress(len(results), res)
        finally:
            w.stop()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shutil.rmtree(tmp, ignore_errors=True)
    table = {k: Counter() for k in kinds}
    for r in results:
        table[r["kind"]][r["outcome"]] += 1
    bad = sorted((r for r in results if r["outcome"] in BAD), key=lambda r: (r["kind"], r["seed"]))
    return {"table": {k: dict(v) for k, v in table.items()}, "bad": bad, "cases": len(results),
            "seconds": round(time.monotonic() - t_start, 1), "results": results}


def format_table(report: dict) -> str:
    rows = ["| kind | cases | " + " | ".join(OUTCOMES) + " |", "|---|---:|" + "---:|" * len(OUTCOMES)]
    tot = Counter()
    for k, c in report["table"].items():
        n = sum(c.values())
        tot.update(c)
        rows.append(f"| {k} | {n} | " + " | ".join(str(c.get(o, 0)) for o in OUTCOMES) + " |")
    rows.append(f"| all | {sum(tot.values())} | " + " | ".join(str(tot.get(o, 0)) for o in OUTCOMES) + " |")
    return "\n".join(rows)
