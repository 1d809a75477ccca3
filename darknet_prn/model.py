"""``Darknet``: a cfg's layer graph as a ``torch.nn.Module``."""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from . import recurrent  # noqa: F401  (registers the reference modules of rnn, crnn, gru, lstm, conv_lstm)
from . import weights as wio
from .engines import check_backend
from .errors import DarknetError
from .fileio import atomic_write, read_cfg_file_text
from .graph import Network, network_from_text
from .limits import check_memory, estimate_memory, gib, is_allocation_error
from .modules import attr_name, build_module


# [region] and [detection] outputs are kept in their reported layouts (README "Python API"), not as feature maps:
# a layer that reads one must take any layout
_FLAT_HEADS = ("region", "detection")
_TAKES_ANY_LAYOUT = ("cost", "contrastive", "connected", "dropout", "empty", "softmax")


def check_head_consumers(graph: Network) -> None:
    """A layer that reads a ``[region]``/``[detection]`` output as a feature map is refused at build time, with
    its file and line, instead of failing at the first forward."""
    for l in graph.layers:
        if l.type in _TAKES_ANY_LAYOUT:
            continue
        srcs = list(l.refs) if l.type == "route" else ([l.index - 1] if l.index else []) + list(l.refs)
        for i in srcs:
            src = graph.layers[i] if 0 <= i < len(graph.layers) else None
            if src is not None and src.type in _FLAT_HEADS and src.index != l.index:
                raise DarknetError(f"[{l.section.name}] layer {l.index} reads the output of [{src.type}] layer "
                                   f"{src.index}: a detection head's output is not a feature map, cannot run this "
                                   f"layer", l.section.path, l.section.line)


class Darknet(nn.Module):
    """A Darknet network. ``forward`` returns the network outputs (every detection head, else the last
    non-[cost] layer) as a list; ``layer_outputs`` returns every layer's output as Darknet holds it."""

    def __init__(self, graph: Network, cfg_text: str | None = None, max_memory: int | None = None):
        check_memory(graph, max_memory)      # before any allocation (darknet_prn.limits)
        check_head_consumers(graph)
        super().__init__()
        self.graph = graph
        self.cfg_text = cfg_text
        self.weights_header = None
        try:
            self.layers = nn.ModuleList(build_module(l) for l in graph.layers)
        except (MemoryError, RuntimeError) as e:     # under the limit but more than the machine can give
            if not is_allocation_error(e):
                raise
            raise DarknetError(f"not enough memory to build the network (about {gib(estimate_memory(graph)[0])}); "
                               f"{type(e).__name__}", graph.path) from None
        for l, m in zip(graph.layers, self.layers):
            if l.type == "convolutional" and l.p.get("share_index") is not None:
                m.share = (self.layers[l.p["share_index"]],)    # a tuple: not registered twice
        self.output_layers = graph.output_layers
        self._needed, self._free_after = graph.liveness()     # free intermediate outputs early
        # layers followed by a standalone [batchnorm]: in training its backward overwrites their delta
        self._bn_overwrites = {l.index - 1 for l in graph.layers if l.type == "batchnorm" and l.index > 0}
        self._arena = wio.Arena(self)      # the .weights arrays as views of one tensor in file order
        # the layers start in inference mode whatever nn.Module's default: only an explicit ``net.train()``
        # switches them to Darknet's training forward (batch statistics, dropout, ...)
        self.layers.eval()

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def from_cfg(cls, path, width=None, height=None, warn: bool = True, max_memory: int | None = None) -> "Darknet":
        """``max_memory``: bytes the network may need (parameters + largest activations), default
        ``DARKNET_PRN_MAX_MEMORY`` or 8 GiB; 0: no limit (darknet_prn.limits)."""
        path = os.fspath(path)
        return cls.from_cfg_text(read_cfg_file_text(path), width, height, path, warn, max_memory)

    @classmethod
    def from_cfg_text(cls, text: str, width=None, height=None, path="<cfg>", warn: bool = True,
                      max_memory: int | None = None) -> "Darknet":
        return cls(network_from_text(text, width, height, path, warn), text, max_memory)

    # -- execution -------------------------------------------------------------------------------------
    def _check_input(self, x):
        """(N, C, H, W) of the cfg's input size; flat-input nets ([net] inputs=) take any 4-D view of it."""
        if x.dim() != 4:
            raise DarknetError(f"input must be (N, C, H, W), got shape {tuple(x.shape)}")
        want = tuple(self.graph.input_shape)
        if tuple(x.shape[1:]) != want:
            if int(x[0].numel()) != int(want[0] * want[1] * want[2]):
                raise DarknetError(f"input is {tuple(x.shape[1:])} but the cfg expects {want} (C, H, W); "
                                   f"use from_cfg(..., width=, height=) for another size")
            x = x.reshape((x.shape[0],) + want)
        return x

    def _run(self, x, keep_all: bool):
        x = self._check_input(x)
        outs = {}
        all_outs = []
        for i, m in enumerate(self.layers):
            x = m(x, outs)
            if keep_all:
                all_outs.append(x)
            if i in self._needed:
                # the other consumers' gradient is lost, as Darknet's [batchnorm] backward copies its delta
                outs[i] = x.detach() if self.training and i in self._bn_overwrites else x
            for r in self._free_after.get(i, ()):
                outs.pop(r, None)
        return all_outs if keep_all else [outs[i] for i in self.output_layers]

    # -- inference fast path (darknet_prn.fast; docs/performance.md) ---------------------------------------
    backend = "torch"      # eval-mode engine: torch (the FastPlan), exact (module by module), onnxruntime, openvino
    threads = None         # if set, forward() calls torch.set_num_threads(threads) (process-wide) first
    onnx_model = None      # an ONNX file the onnxruntime/openvino backends run instead of the export
    precision = "f32"      # eval-mode precision: f32 (Darknet-exact), bf16, fp16 (darknet_prn.precision)
    _fast_plan = None

    def forward(self, x: torch.Tensor):
        """The network outputs. Training mode, ``backend == "exact"`` or an input that requires grad (with grad
        enabled): the layer modules one by one, with autograd. Eval mode otherwise: the compiled fast plan (BN
        folded, fused conv+activation, channels-last) under ``torch.no_grad()``; its outputs carry no autograd
        history."""
        if self.training or self.backend == "exact" or (x.requires_grad and torch.is_grad_enabled()):
            return self._run(x, keep_all=False)
        return self.fast_forward(x)

    def set_backend(self, backend: str = "torch", threads: int | None = None, precision: str | None = None,
                    model=None) -> "Darknet":
        """Selects the eval-mode engine: ``"torch"`` (default: the fast plan), ``"exact"`` (the layer modules,
        as ``layer_outputs``), ``"onnxruntime"`` or ``"openvino"`` (the exported ONNX graph in that engine; needs
        the package); optionally the thread count ``forward`` uses, and the ``precision``: ``"f32"`` (default,
        Darknet-exact), ``"bf16"`` (CPUs with BF16, CUDA; torch and openvino backends) or ``"fp16"`` (CUDA);
        ``model``: an ONNX file of this network to run instead of the export (onnxruntime/openvino backends; e.g.
        the int8 model of ``darknet-prn quantize``)."""
        from .engines import ONNX_BACKENDS
        from .precision import check_backend_precision
        backend = check_backend(backend)
        if precision is not None:
            check_backend_precision(backend, precision, self._device())
            self.precision = precision
        if model is not None and backend not in ONNX_BACKENDS:
            raise DarknetError(f"an ONNX model runs with backend {' or '.join(ONNX_BACKENDS)}, not {backend}",
                               os.fspath(model))
        self.onnx_model = None if model is None else os.fspath(model)
        self.backend = backend
        if threads is not None:
            self.threads = int(threads) if threads else None
        self._fast_plan = None
        return self

    def fast_plan(self):
        """The compiled inference plan of ``backend``, rebuilt when any parameter or buffer changed (in-place
        writes such as ``load_weights``/``load_state_dict``/optimizer steps bump tensor versions) or when the
        backend or thread count changed."""
        from .fast import FastPlan, OnnxPlan, fingerprint
        backend = "torch" if self.backend == "exact" else self.backend
        plan = self._fast_plan
        if plan is None or plan.backend != backend or plan.fingerprint != fingerprint(self) or \
                plan.precision != self.precision or getattr(plan, "model", None) != self.onnx_model or \
                (backend != "torch" and plan.threads != (self.threads or torch.get_num_threads())):
            self._fast_plan = None                 # free the old plan's folded weights before building
            plan = FastPlan(self, precision=self.precision) if backend == "torch" else \
                OnnxPlan(self, backend, self.threads, precision=self.precision, model=self.onnx_model)
            self._fast_plan = plan
        return plan

    def _device(self):
        p = next(iter(self.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def invalidate_fast_plan(self):
        """Drops the compiled plan (it is rebuilt on the next eval-mode forward)."""
        self._fast_plan = None

    def fast_forward(self, x: torch.Tensor):
        """``forward`` through the compiled plan (in any mode), without autograd."""
        x = self._check_input(x)
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.no_grad():
            plan = self.fast_plan()
            if x.device != plan.device or x.dtype != plan.dtype:
                return self._run(x, keep_all=False)
            return plan(x)

    def reset_state(self) -> "Darknet":
        """Zeroes the state recurrent layers keep between calls (Darknet runs one time step per call)."""
        for m in self.layers:
            if hasattr(m, "reset_state"):
                m.reset_state()
        return self

    def layer_outputs(self, x: torch.Tensor) -> list:
        """One tensor per cfg layer, exactly what Darknet's ``l.output`` holds (batch first)."""
        return self._run(x, keep_all=True)

    # -- training (darknet_prn.train) ----------------------------------------------------------------------
    def loss(self, x: torch.Tensor, truth, verbose: bool = False):
        """Darknet's training loss of a batch (training mode): ``(loss, stats)``. ``loss.backward()`` leaves
        minus Darknet's deltas in every layer's output gradient and minus its ``*_updates`` in every ``.grad``;
        ``loss`` is the sum of the heads' ``l.cost``. truth: Darknet's ``net.truth`` (B, max_boxes*6) or a list
        per image of (n, 5) ``x, y, w, h, class`` boxes; classifiers: (B, classes) one-hot or (B,) ids.
        ``stats``: ``heads`` (per loss layer: cost, avg_iou, count, ..., Darknet's printed ``line``), ``loss``,
        ``darknet_loss`` (what Darknet's train_network returns: mean head cost / batch). ``verbose`` prints
        the lines."""
        from .train.step import training_loss
        return training_loss(self, x, truth, verbose)

    @property
    def seen(self) -> int:
        """Images trained on, as the ``.weights`` header holds it (Darknet's ``*net.seen``)."""
        return self.weights_header.seen if self.weights_header is not None else 0

    @seen.setter
    def seen(self, value: int):
        self.weights_header = wio.Header.darknet(int(value))

    # -- weights ---------------------------------------------------------------------------------------
    def tensor(self, index: int, name: str) -> torch.Tensor:
        """The tensor of layer ``index`` that holds the ``.weights`` array ``name``."""
        return getattr(self.layers[index], attr_name(name))

    def load_weights(self, path, partial: bool = False):
        return wio.load_weights(self, path, partial=partial)

    def save_weights(self, path):
        wio.save_weights(self, path)

    def save_checkpoint(self, path):
        """A plain PyTorch checkpoint: the state_dict plus the cfg text and input size."""
        ck = {"state_dict": self.state_dict(), "cfg_text": self.cfg_text, "cfg_path": self.graph.path,
              "width": self.graph.width, "height": self.graph.height,
              "weights_header": self.weights_header.raw if self.weights_header else None}
        atomic_write(path, lambda f: torch.save(ck, f), "checkpoint", durable=True)

    @classmethod
    def load_checkpoint(cls, path, map_location="cpu") -> "Darknet":
        try:
            ck = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise DarknetError("checkpoint not found", path) from None
        except Exception as e:  # noqa: BLE001 -- any unpickling problem is a bad file
            raise DarknetError(f"not a darknet-prn checkpoint ({type(e).__name__})", path) from None
        if not isinstance(ck, dict) or "state_dict" not in ck or not ck.get("cfg_text"):
            raise DarknetError("not a darknet-prn checkpoint (no state_dict/cfg_text)", path)
        net = cls.from_cfg_text(ck["cfg_text"], ck.get("width"), ck.get("height"), ck.get("cfg_path", "<cfg>"),
                                warn=False)
        net.load_state_dict(ck["state_dict"])
        if ck.get("weights_header"):
            net.weights_header = wio.Header.parse(ck["weights_header"], os.fspath(path))
        return net

    def export_onnx(self, path, **kw):
        """Writes this model as ONNX (see :func:`darknet_prn.export.export_onnx` for the options)."""
        from .export import export_onnx
        return export_onnx(self, path, **kw)
