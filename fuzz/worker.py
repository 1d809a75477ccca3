"""A fuzz worker: ``python -m fuzz.worker WORKDIR`` reads ``KIND SEED`` lines on stdin and answers one JSON line
per case on its original stdout (targets' own output goes to /dev/null). Raw exceptions are classified here
(``other``); the parent sees hangs (no answer in time) and crashes (the process killed by a signal)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path


def main(workdir: str) -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    sys.stdout = open(os.devnull, "w")
    sys.stderr = open(os.devnull, "w")
    import torch
    torch.set_num_threads(1)
    from . import cases
    cases._net_cls()
    base = Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    proto.write("ready\n")
    for line in sys.stdin:
        kind, seed = line.split()
        work = base / "case"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            outcome, detail = cases.run(kind, int(seed), work)
        except Exception as e:  # noqa: BLE001 -- every raw exception is a finding
            tb = traceback.extract_tb(e.__traceback__)
            where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
            outcome, detail = "other", f"{type(e).__name__} at {where}: {' '.join(str(e).split())[:200]}"
        proto.write(json.dumps({"outcome": outcome, "detail": detail}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
