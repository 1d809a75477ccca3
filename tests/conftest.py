import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
CORPUS = SHARED / "cfg-corpus"
ORACLE = SHARED / "oracle"
CASES_DIR = ORACLE / "cases"
WEIGHTS = ROOT / "weights"
CACHE = ROOT / "build" / "oracle-cache"       # materialized oracle weights, reused between runs

sys.path.insert(0, str(ORACLE))
sys.path.insert(0, str(ROOT))


def oracle_cases():
    import oracle_case
    return [Path(p) for p in oracle_case.list_cases(str(CASES_DIR))]


def materialize(case):
    """(weights_path, input_path) of an oracle case, cached under build/oracle-cache."""
    import oracle_case
    return oracle_case.materialize(str(case), str(CACHE / Path(case).name))


@pytest.fixture(scope="session")
def real_tiny():
    """The real COCO yolov3-tiny files (`make weights`)."""
    w = WEIGHTS / "yolov3-tiny.weights"
    if not w.exists():
        pytest.skip("weights/yolov3-tiny.weights missing: run `make weights`")
    return {"cfg": WEIGHTS / "yolov3-tiny.cfg", "weights": w, "names": WEIGHTS / "coco.names"}


@pytest.fixture(autouse=True)
def _quiet_cfg_warnings():
    with warnings.catch_warnings():
        from darknet_prn.cfg import CfgWarning
        warnings.simplefilter("ignore", CfgWarning)
        yield
