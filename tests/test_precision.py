"""Reduced precision (darknet_prn.precision): bf16 plans close to f32, f32 unchanged, clear errors where unsupported."""
from pathlib import Path

import pytest
import torch

from darknet_prn import Darknet, DarknetError, Detector, cli
from darknet_prn import precision as prec
from darknet_prn.fast import FastPlan
from test_fast import GEOMETRIES

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_bf16 = pytest.mark.skipif(not prec.cpu_has_bf16(), reason="CPU without BF16")

# bf16 keeps 8 significant bits: on the shared images the real yolov3-tiny's detections move by at most ~4
# confidence points and ~1.2 px (416 input); the tolerance leaves headroom over that, and no detection may appear
# or vanish
CONF_TOL, BOX_TOL = 6.0, 3.0


def _random_net(text):
    torch.manual_seed(0)
    net = Darknet.from_cfg_text(text, warn=False).eval()
    with torch.no_grad():
        for m in net.layers:
            if hasattr(m, "rolling_mean"):
                m.rolling_mean.uniform_(-0.2, 0.2)
                m.rolling_variance.uniform_(0.5, 1.5)
                m.scales.uniform_(0.5, 1.5)
                m.biases.uniform_(-0.2, 0.2)
    return net


@needs_bf16
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_bf16_plan_close_to_f32(name):
    net = _random_net(GEOMETRIES[name])
    x = torch.rand((2,) + tuple(net.graph.input_shape))
    ref = net(x)
    net.set_backend("torch", precision="bf16")
    out = net(x)
    plan = net._fast_plan
    assert isinstance(plan, FastPlan) and plan.precision == "bf16" and plan.cdt == torch.bfloat16
    for r, o in zip(ref, out):
        assert o.dtype == torch.float32 and o.shape == r.shape and o.is_contiguous()
        err = float((o - r).abs().max()) / max(float(r.std()), 1e-6)
        assert 0 < err < 0.1, err          # really computed in bf16, and within bf16's few significant digits
    net.set_backend("torch", precision="f32")  # back to f32: the Darknet-exact plan again
    for r, o in zip(ref, net(x)):
        assert torch.equal(r, o)


@pytest.fixture(scope="module")
def shared_jpgs():
    paths = sorted(SHARED_DATA.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no shared images under {SHARED_DATA}")
    return [str(p) for p in paths]


@needs_bf16
@pytest.mark.parametrize("letterbox", [False, True])
def test_bf16_detections_close_to_f32(real_tiny, shared_jpgs, letterbox):
    f32 = Detector(real_tiny["cfg"], real_tiny["weights"], letterbox=letterbox)
    bf16 = Detector(real_tiny["cfg"], real_tiny["weights"], letterbox=letterbox, precision="bf16")
    assert f32.net.precision == "f32"
    for path, a, b in zip(shared_jpgs, f32.detect(shared_jpgs, batch_size=3), bf16.detect(shared_jpgs, batch_size=3)):
        ch = prec.detection_change(a, b)
        assert ch["unmatched"] == 0 and ch["conf"] <= CONF_TOL and ch["box"] <= BOX_TOL, (path, ch)


@needs_bf16
def test_cli_precision_bf16(real_tiny, shared_jpgs, capsys):
    rc = cli.main(["detect", str(real_tiny["cfg"]), str(real_tiny["weights"]), shared_jpgs[0], "--no-save",
                   "--precision", "bf16", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "dog:" in out


def test_detection_change():
    a = [{"class_id": 1, "confidence": 0.5, "bbox": [0, 0, 10, 10]},
         {"class_id": 2, "confidence": 0.9, "bbox": [5, 5, 10, 10]}]
    b = [{"class_id": 1, "confidence": 0.52, "bbox": [1, 0, 10, 12]},
         {"class_id": 3, "confidence": 0.9, "bbox": [5, 5, 10, 10]}]
    assert prec.detection_change(a, b) == pytest.approx({"conf": 2.0, "box": 2.0, "unmatched": 2})
    assert prec.detection_change(a, a) == {"conf": 0.0, "box": 0.0, "unmatched": 0}
    # a detection that vanished is not paired with a far-away one of its class: both count as unmatched
    far = [{"class_id": 1, "confidence": 0.5, "bbox": [100, 100, 10, 10]}]
    assert prec.detection_change(a[:1], far) == {"conf": 0.0, "box": 0.0, "unmatched": 2}


def test_precision_errors(monkeypatch):
    net = _random_net(GEOMETRIES["pools"])
    with pytest.raises(DarknetError, match=r"^unknown precision 'int4' \(f32, bf16, fp16\)$"):
        net.set_backend("torch", precision="int4")
    with pytest.raises(DarknetError, match="precision fp16 needs a CUDA device"):
        net.set_backend("torch", precision="fp16")
    with pytest.raises(DarknetError, match="the onnxruntime backend runs f32 only"):
        net.set_backend("onnxruntime", precision="bf16")
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: False)
    with pytest.raises(DarknetError, match=r"^precision bf16: this CPU has no BF16 instructions"):
        net.set_backend("torch", precision="bf16")
    assert net.precision == "f32" and net.backend == "torch"


def test_cli_precision_error_one_line(real_tiny, shared_jpgs, capsys, monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: False)
    rc = cli.main(["detect", str(real_tiny["cfg"]), str(real_tiny["weights"]), shared_jpgs[0], "--no-save",
                   "--precision", "bf16"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.strip().count("\n") == 0 and "no BF16 instructions" in err, err


@needs_bf16
def test_openvino_bf16(real_tiny, shared_jpgs):
    pytest.importorskip("openvino")
    f32 = Detector(real_tiny["cfg"], real_tiny["weights"])
    ov = Detector(real_tiny["cfg"], real_tiny["weights"], backend="openvino", precision="bf16", threads=1)
    assert ov.net.fast_plan().precision == "bf16"
    for a, b in zip(f32.detect(shared_jpgs[:2]), ov.detect(shared_jpgs[:2])):
        ch = prec.detection_change(a, b)
        assert ch["unmatched"] == 0 and ch["conf"] <= CONF_TOL and ch["box"] <= BOX_TOL, ch
