"""Thread settings that hold on a busy machine.

torch (and our C kernels, which share its OpenMP team) runs every parallel region on a libgomp team whose idle
threads, by default, *spin* for a while before sleeping. On an idle machine that saves a wake-up per region; on
a machine where other processes use the cores (a web server, a notebook, CI, a browser), the scheduler parks a
spinning thread behind them and every region then waits for it: yolov3-tiny-prn's 2-thread forward took 2-3x
OpenCV's time under load, and 0.5x with ``OMP_WAIT_POLICY=PASSIVE`` (benchmarks/contended.py, numbers in
docs/performance.md). libgomp reads the policy once, when it is loaded (``import torch``), so it must be in the
environment before that:

* the ``darknet-prn`` command sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the environment already sets a policy)
  before it imports torch: :func:`configure_process`;
* Python users call :func:`set_threads` (``darknet_prn.set_threads()``) before the first ``import torch`` of the
  process -- or export ``OMP_WAIT_POLICY=PASSIVE`` themselves.
"""
from __future__ import annotations

import os
import sys
import warnings

POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_process(passive: bool = True) -> bool:
    """Sets ``OMP_WAIT_POLICY=PASSIVE`` (``passive``) or ``ACTIVE`` for this process if torch is not imported yet
    and the environment does not choose a policy itself. Returns whether the setting is (or will be) in effect."""
    want = "PASSIVE" if passive else "ACTIVE"
    if any(os.environ.get(v) for v in POLICY_VARS):
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == want
    if "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = want
    return True


def set_threads(n: int | None = None, passive: bool = True) -> int:
    """One call for API users: OpenMP threads that sleep instead of spin (``passive``; call it before the first
    ``import torch``, else a warning says that the wait policy could not change) and ``n`` intra-op threads for
    torch and our C kernels (default: the CPUs in this process's affinity mask). Returns the thread count."""
    from .errors import DarknetError
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise DarknetError(f"threads={n!r}: must be a whole number >= 1")
    if not configure_process(passive) and not any(os.environ.get(v) for v in POLICY_VARS):
        warnings.warn("darknet_prn.set_threads: torch was imported before, so OpenMP's wait policy stays as it is; "
                      "call set_threads() before importing torch, or set OMP_WAIT_POLICY=PASSIVE in the "
                      "environment", stacklevel=2)
    import torch
    from . import native
    n = int(n) if n is not None else cpus()
    torch.set_num_threads(n)
    native.set_threads(0)          # the kernels follow torch's team
    return n
