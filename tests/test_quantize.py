"""`darknet-prn quantize` (int8 QDQ ONNX calibrated on a .data set) and running an ONNX model in place of .weights."""
from pathlib import Path

import pytest

from darknet_prn import DarknetError, Detector, cli
from darknet_prn.evaluation import evaluate
from darknet_prn.precision import detection_change

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]
MAP = (ROOT / ".." / "shared" / "oracle" / "map").resolve()
DOG = ROOT / ".." / "shared" / "data" / "dog.jpg"


@pytest.fixture(scope="module")
def int8_model(real_tiny, tmp_path_factory):
    if not (MAP / "coco6.data").exists():
        pytest.skip(f"shared map case missing under {MAP}")
    out = tmp_path_factory.mktemp("q") / "yolov3-tiny.int8.onnx"
    rc = cli.main(["quantize", str(MAP / "yolov3-tiny.cfg"), str(real_tiny["weights"]), "--data",
                   str(MAP / "coco6.data"), "-o", str(out)])
    assert rc == 0 and out.stat().st_size > 0
    return out


def test_quantized_model_is_int8_with_float_heads(int8_model):
    import onnx
    m = onnx.load(str(int8_model))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    # float weights only in the heads' last convolutions (yolov3-tiny: one per [yolo]), the rest int8
    from darknet_prn.quantize import head_nodes
    producer = {o: n for n in m.graph.node for o in n.output}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    float_convs = {n.name for n in convs
                   if n.input[1] not in producer or producer[n.input[1]].op_type != "DequantizeLinear"}
    heads = set(head_nodes(m))
    assert len(convs) == 13 and float_convs == {n.name for n in convs if n.name in heads} and len(float_convs) == 2


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.slow)])
def test_int8_detections_and_map(int8_model, real_tiny, backend, monkeypatch):
    pytest.importorskip(backend)
    f32 = Detector(real_tiny["cfg"], real_tiny["weights"])
    q = Detector(real_tiny["cfg"], int8_model, backend=backend, threads=2)
    assert q.net.backend == backend and q.net.onnx_model == str(int8_model)
    ch = detection_change(f32.detect(str(DOG)), q.detect(str(DOG)))
    # int8 moves confidences by ~10 points and boxes by ~10 px here; the same six objects are found
    assert ch["unmatched"] == 0 and ch["conf"] < 20 and ch["box"] < 20, ch
    monkeypatch.chdir(MAP)
    m32 = evaluate("coco6.data", "yolov3-tiny.cfg", real_tiny["weights"]).map
    m8 = evaluate("coco6.data", "yolov3-tiny.cfg", int8_model, backend=backend, threads=2).map
    assert abs(m8 - m32) < 0.005, (m32, m8)          # mAP@0.5 within half a point (Darknet: 8.91 %)


def test_onnx_weights_default_backend_and_errors(int8_model, real_tiny, tmp_path, capsys):
    assert Detector(real_tiny["cfg"], int8_model).net.backend == "onnxruntime"
    with pytest.raises(DarknetError, match="an ONNX model runs with backend onnxruntime or openvino, not exact"):
        Detector(real_tiny["cfg"], int8_model, backend="exact")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DarknetError, match=r"bad\.onnx: not an ONNX model"):
        Detector(real_tiny["cfg"], bad).detect(str(DOG))
    prn = ROOT / "cfg" / "yolov3-tiny-prn.cfg"
    with pytest.raises(DarknetError, match=r"outputs \['yolo_16', 'yolo_23'\] are not this cfg's heads"):
        Detector(prn, int8_model).detect(str(DOG))
    out = tmp_path / "x.onnx"
    rc = cli.main(["quantize", str(real_tiny["cfg"]), str(real_tiny["weights"]), "--data", str(tmp_path / "no.data"),
                   "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "no.data" in err and err.strip().count("\n") == 0 and not out.exists(), err
