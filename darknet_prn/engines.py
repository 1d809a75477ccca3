"""The inference backends, once: the table ``Darknet.set_backend``, ``detect --backend`` and the plans read, and
the one place an ONNX Runtime session or an OpenVINO model is created. No torch here (``detect``'s argument
parser reads the table without importing torch).

A new backend is one entry in ``BACKENDS`` plus its plan (``darknet_prn.fast``: ``FastPlan`` runs ``torch``,
``OnnxPlan`` the ``ONNX_BACKENDS``).
"""
from __future__ import annotations

from .errors import DarknetError

BACKENDS = {
    "torch": "the compiled inference plan (BN folded, oneDNN convolutions, channels-last; darknet_prn.fast)",
    "exact": "the layer modules one by one, as layer_outputs",
    "onnxruntime": "the exported ONNX graph in ONNX Runtime (pip install onnxruntime)",
    "openvino": "the exported ONNX graph in OpenVINO (pip install openvino)",
}
ONNX_BACKENDS = ("onnxruntime", "openvino")          # the backends that run the exported ONNX graph


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise DarknetError(f"unknown backend '{name}' ({', '.join(BACKENDS)})")
    return name


def _engine(name: str):
    try:
        if name == "onnxruntime":
            import onnxruntime
            return onnxruntime
        import openvino
        return openvino
    except ImportError:
        raise DarknetError(f"backend {name} needs: pip install {name}") from None


def ort_session(path: str, threads: int | None = None):
    """An ONNX Runtime CPU session of the file at ``path``, warnings off; ``threads``: intra-op threads, one
    inter-op thread and no busy-waiting between operators (on a shared CPU spinning threads cost more than
    they save)."""
    ort = _engine("onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def openvino_model(path: str, threads: int, precision: str = "f32"):
    """The file at ``path`` compiled by OpenVINO for the CPU (latency hint; ``precision`` f32 or bf16)."""
    ov = _engine("openvino")
    return ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": precision})
