"""``python -m fuzz [--cases N] [--jobs J] [--kinds cfg,weights,image,cli] [--seed S] [--timeout T]
[--mem-gb G] [--nice 19] [--minutes M] [--json report.json]``: the fuzz table (cases and outcomes per kind) and
every bad case (kind, seed, detail). ``--kind K --seed S`` alone reproduces one case in this process."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from . import cases, runner


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--kinds", default=",".join(cases.KINDS))
    ap.add_argument("--kind", help="reproduce one case of this kind (with --seed), in this process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--mem-gb", type=float, default=6.0, help="address-space cap of each worker (RLIMIT_AS)")
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--minutes", type=float, help="stop starting cases after this long")
    ap.add_argument("--json", help="write the report (table, bad cases) here")
    a = ap.parse_args(argv)
    if a.kind:
        with tempfile.TemporaryDirectory() as d:
            work = Path(d) / "case"
            work.mkdir()
            print(cases.run(a.kind, a.seed, work))
        return 0
    kinds = tuple(k for k in a.kinds.split(",") if k)

    def progress(n, res):
        if res["outcome"] in runner.BAD or n % 100 == 0:
            print(f"[{n}] {res['kind']} seed {res['seed']}: {res['outcome']} {res.get('detail', '')[:150]}",
                  file=sys.stderr, flush=True)

    rep = runner.run(a.cases, a.jobs, kinds, a.seed, a.timeout, a.mem_gb, a.nice, progress,
                     a.minutes * 60 if a.minutes else None)
    print(runner.format_table(rep))
    print(f"{rep['cases']} cases in {rep['seconds']} s")
    for r in rep["bad"]:
        print(f"BAD {r['kind']} --seed {r['seed']}: {r['outcome']}: {r.get('detail', '')}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({k: v for k, v in rep.items() if k != "results"}, indent=1))
    return 1 if rep["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
