"""Every ```python block of README.md runs as written, from the repository root, after the README's first command
(`make install weights`: weights/yolov3-tiny.* exist; tests/data/dog.jpg ships with the repository).

Each block runs on its own (a fresh namespace) in a scratch copy of the root (weights/, tests/, cfg/ and the
shared folder linked, so files a block writes land in the scratch folder). A block that truly cannot run here
is skipped when the line before its fence is ``<!-- no-test: why -->``; the reason is shown in the skip.
"""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NO_TEST = re.compile(r"<!--\s*no-test:?\s*(.*?)\s*-->\s*$")


def readme_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = NO_TEST.search(before)
        out.append(pytest.param(m.group(1), line, skip.group(1) if skip else None, id=f"README.md:{line}"))
    return out


BLOCKS = readme_blocks()


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code, line, skip", BLOCKS)
def test_readme_block_runs(code, line, skip, tmp_path, monkeypatch):
    if skip is not None:
        pytest.skip(f"README.md:{line} marked no-test: {skip or 'no reason given'}")
    if not (ROOT / "weights" / "yolov3-tiny.weights").exists():
        pytest.skip("weights/yolov3-tiny.weights missing: run `make weights` (the README's first command)")
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("weights", "tests", "cfg", "darknet_prn", "benchmarks", "docs", "README.md"):
        if (ROOT / name).exists():
            os.symlink(ROOT / name, root / name)
    if (ROOT.parent / "shared").exists():
        os.symlink(ROOT.parent / "shared", tmp_path / "shared")
    monkeypatch.chdir(root)
    import torch
    threads = torch.get_num_threads()      # a block may call set_threads(): keep the suite's setting
    try:
        # the block's own line numbers in tracebacks
        exec(compile("\n" * line + code, str(ROOT / "README.md"), "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)
