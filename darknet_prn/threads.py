"""Thread settings that hold on a busy machine.

torch (and our C kernels, which share its OpenMP team) runs every parallel region on a libgomp team whose idle
threads, by default, *spin* for a while before sleeping. On an idle machine that saves a wake-up per region; on
a machine where other processes use the cores (a web server, a notebook, CI, a browser), the scheduler parks a
spinning thread behind them and every region then waits for it: yolov3-tiny-prn's 2-thread forward took 2-3x
its passive time under load (benchmarks/contended.py, numbers in docs/performance.md), while on a quiet machine
passive threads cost a wake-up per region. libgomp reads the policy once, when it is loaded (``import torch``),
so it is chosen before that, by a short look at the machine (:func:`busy_cpus`: 0.1 s of ``/proc/stat`` for the
CPUs this process may use): other processes busy -> ``OMP_WAIT_POLICY=PASSIVE``, else libgomp's default.

* the ``darknet-prn`` command does this before it imports torch (:func:`configure_process`), unless the
  environment sets ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` itself;
* Python users call :func:`set_threads` (``darknet_prn.set_threads()``) before the first ``import torch`` of the
  process -- or export ``OMP_WAIT_POLICY=PASSIVE`` themselves.
"""
from __future__ import annotations

import os
import sys
import time
import warnings

POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


BUSY_CPUS = 0.2      # other processes' load (CPUs' worth) from which a spinning team loses to a sleeping one


def _read_stat() -> dict:
    """``{cpu: (all ticks, idle + iowait ticks)}`` from ``/proc/stat``."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                out[int(name[3:])] = (sum(v), v[3] + (v[4] if len(v) > 4 else 0))
    return out


def busy_cpus(interval: float = 0.1, read=_read_stat):
    """How many CPUs' worth of work other processes did during ``interval`` seconds on the CPUs this process may
    run on (``/proc/stat``: everything but idle and iowait; a VM's steal counts as busy); None where it cannot be
    read. The caller sleeps meanwhile, so none of it is its own."""
    try:
        mine = sorted(os.sched_getaffinity(0))
        a = read()
        time.sleep(interval)
        b = read()
    except (OSError, ValueError, AttributeError):
        return None
    total = idle = 0
    for c in mine:
        if c in a and c in b:
            total += b[c][0] - a[c][0]
            idle += b[c][1] - a[c][1]
    if total <= 0:
        return None
    return (total - idle) / total * len(mine)


def configure_process(passive: bool | None = None) -> str:
    """Chooses OpenMP's wait policy for this process before torch is imported: ``passive=True`` sets
    ``OMP_WAIT_POLICY=PASSIVE``, ``False`` keeps libgomp's default (spin, then sleep), ``None`` (the CLI) decides
    by :func:`busy_cpus` (unknown counts as busy). Nothing changes when the environment already sets a policy or
    torch is imported. Returns the policy in effect: ``"PASSIVE"``, ``"default"``, the environment's
    (``"OMP_WAIT_POLICY=…"``/``"GOMP_SPINCOUNT=…"``) or ``"fixed"`` (torch was imported first)."""
    for v in POLICY_VARS:
        if os.environ.get(v):
            return "PASSIVE" if v == "OMP_WAIT_POLICY" and os.environ[v].upper() == "PASSIVE" else \
                f"{v}={os.environ[v]}"
    if "torch" in sys.modules:
        return "fixed"
    if passive is None:
        busy = busy_cpus()
        passive = busy is None or busy >= BUSY_CPUS
    if not passive:
        return "default"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"


def set_threads(n: int | None = None, passive: bool | None = None) -> int:
    """One call for API users, before the first ``import torch``: OpenMP's wait policy as the CLI chooses it
    (``passive=None``: sleeping threads when other processes keep the CPUs busy; ``True``/``False`` to force;
    called after torch was imported, a warning says that the policy stays as it is) and ``n`` intra-op threads for
    torch and our C kernels (default: the CPUs in this process's affinity mask). Returns the thread count."""
    from .errors import DarknetError
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise DarknetError(f"threads={n!r}: must be a whole number >= 1")
    if configure_process(passive) == "fixed":
        warnings.warn("darknet_prn.set_threads: torch was imported before, so OpenMP's wait policy stays as it is; "
                      "call set_threads() before importing torch, or set OMP_WAIT_POLICY=PASSIVE in the "
                      "environment", stacklevel=2)
    import torch
    from . import native
    n = int(n) if n is not None else cpus()
    torch.set_num_threads(n)
    native.set_threads(0)          # the kernels follow torch's team
    return n
