"""The bounded fuzz run of `make test` (the long one: `make fuzz`, docs/reliability.md): a few hundred seeded
cfg, weights and image mutants and the CLI path table, each in a capped worker process. Every case must be
accepted or rejected with a one-line error naming the file: no raw exception, hang or crash."""

from fuzz import runner


def test_bounded_fuzz_run_has_no_raw_exception_hang_or_crash():
    rep = runner.run(n=240, jobs=2, seed0=0, timeout=180, mem_gb=6, quick=True)
    table = runner.format_table(rep)
    bad = "\n".join(f"{r['kind']} --seed {r['seed']}: {r['outcome']}: {r.get('detail', '')}" for r in rep["bad"])
    assert rep["cases"] == 240, table
    assert not rep["bad"], f"{table}\n{bad}\n(reproduce: python -m fuzz --kind KIND --seed SEED)"
    for kind in ("cfg", "weights", "image", "cli"):
        assert rep["table"][kind].get("clean", 0) > 0, table          # the mutators do reach the error paths
