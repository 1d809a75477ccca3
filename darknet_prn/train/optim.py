"""Darknet's optimizer: ``update_network`` (SGD on the summed loss in Darknet's "update buffer" form) and
``get_current_rate`` (every ``policy``, ``burn_in``/``power``), with ``[net]`` hyper-parameters read as
``parse_net_options`` reads them.

Per step, with ``B = batch * time_steps`` of ``[net]`` (= Darknet's ``net.batch * net.subdivisions``) and
``U`` the update buffer (minus the accumulated gradient plus the momentum history):
    convolutional (and other layers):  U_w += -decay*B*W;  W += rate/B * U_w;  U *= momentum (all arrays)
    biases / scales / standalone [batchnorm]: no decay
    weighted [shortcut]:  U = clip(U, -1, 1), no decay (``update_shortcut_layer_gpu``)
    [connected]: never updated (``make_connected_layer`` never sets ``l.train``); nor the layers before the
    last ``stopbackward=1`` (``parse_network_cfg`` builds them with ``train = 0``)
``adam=1`` (B1, B2, eps): convolutional layers take ``adam_update_gpu`` instead (Darknet's GPU build).
"""
from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass, field

import torch

from ..cfg import read_cfg_text
from ..errors import DarknetError

POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid", "random", "sgdr")
_NO_UPDATE = ("connected",)          # l.train == 0 in Darknet
_NO_DECAY = ("biases", "scales")
_CLIPPED = ("shortcut",)


def _f32(v) -> float:
    return struct.unpack("<f", struct.pack("<f", float(v)))[0]


@dataclass
class Schedule:
    """``[net]`` learning-rate parameters as ``parse_net_options`` reads them (floats rounded to float32)."""
    learning_rate: float = 0.001
    policy: str = "constant"
    burn_in: int = 0
    power: float = 4.0
    max_batches: int = 0
    step: int = 1
    scale: float = 1.0
    steps: list = field(default_factory=list)
    scales: list = field(default_factory=list)
    gamma: float = 1.0
    learning_rate_min: float = 0.00001
    batches_per_cycle: int = 0
    batches_cycle_mult: int = 2

    @classmethod
    def from_section(cls, s) -> "Schedule":
        policy = s.get_str("policy", "constant")
        if policy not in POLICIES:
            policy = "constant"              # get_policy: "Couldn't find policy ..., going with constant"
        max_batches = s.get_int("max_batches", 0)
        sch = cls(learning_rate=_f32(s.get_float("learning_rate", 0.001)), policy=policy,
                  burn_in=s.get_int("burn_in", 0), power=_f32(s.get_float("power", 4)), max_batches=max_batches,
                  learning_rate_min=_f32(s.get_float("learning_rate_min", 0.00001)),
                  batches_per_cycle=s.get_int("sgdr_cycle", max_batches), batches_cycle_mult=s.get_int("sgdr_mult", 2))
        if policy == "step":
            sch.step, sch.scale = s.get_int("step", 1), _f32(s.get_float("scale", 1))
        elif policy in ("steps", "sgdr"):
            steps, scales = s.get_ints("steps"), s.get_floats("scales")
            if policy == "steps" and (steps is None or scales is None):
                raise DarknetError("STEPS policy must have steps and scales in cfg file", s.path, s.line)
            steps = steps or []
            scales = list(scales or [])
            scales += [1.0] * (len(steps) - len(scales))
            sch.steps, sch.scales = steps, [_f32(v) for v in scales[:len(steps)]]
        elif policy in ("exp", "sigmoid"):
            sch.gamma = _f32(s.get_float("gamma", 1))
            if policy == "sigmoid":
                sch.step = s.get_int("step", 1)
        return sch

    def rate(self, batch_num: int, rng=random) -> float:
        """``get_current_rate`` for the update number ``batch_num`` (1 for the first update)."""
        lr = self.learning_rate
        if batch_num < self.burn_in:
            return _f32(lr * _f32(batch_num / self.burn_in) ** self.power)
        p = self.policy
        if p == "constant":
            return lr
        if p == "step":
            return _f32(lr * self.scale ** (batch_num // self.step))
        if p == "steps":
            r = lr
            for st, sc in zip(self.steps, self.scales):
                if st > batch_num:
                    return r
                r = _f32(r * sc)
            return r
        if p == "exp":
            return _f32(lr * self.gamma ** batch_num)
        if p == "poly":
            return _f32(lr * _f32(1 - _f32(batch_num / self.max_batches)) ** self.power)
        if p == "random":
            return _f32(lr * rng.uniform(0, 1) ** self.power)
        if p == "sigmoid":
            return _f32(lr * (1.0 / (1.0 + math.exp(self.gamma * (batch_num - self.step)))))
        # sgdr
        start, cycle = 0, self.batches_per_cycle
        while start + cycle < batch_num:
            start += cycle
            cycle *= self.batches_cycle_mult
        return _f32(self.learning_rate_min + 0.5 * (lr - self.learning_rate_min)
                    * (1.0 + math.cos(_f32(batch_num - start) * 3.14159265 / cycle)))


def get_current_rate(schedule: Schedule, batch_num: int) -> float:
    return schedule.rate(batch_num)


def net_section(net):
    """The ``[net]`` section of the model's cfg text."""
    if not net.cfg_text:
        raise DarknetError("the model has no cfg text to read [net] training parameters from")
    return read_cfg_text(net.cfg_text, net.graph.path)[0]


def images_per_update(sec) -> int:
    """Darknet's ``net.batch * net.subdivisions`` (cfg batch, x time_steps): images per update and per ``seen``."""
    subdivs = sec.get_int("subdivisions", 1)
    return (sec.get_int("batch", 1) // subdivs) * subdivs * sec.get_int("time_steps", 1)


class DarknetOptimizer:
    """Darknet's ``update_network`` on a :class:`~darknet_prn.Darknet` model.

    ``iteration``: updates already done (default: the loaded ``.weights`` header's ``seen`` / images per
    update, as Darknet's ``get_current_batch``). ``step()`` uses ``batch_num = iteration + 1``, updates the
    parameters from their ``.grad`` (summed over the images since the last ``zero_grad``, i.e. over all
    subdivisions), then advances ``iteration`` and the model's ``seen`` by one batch. Hyper-parameters come from
    ``[net]``; keyword arguments override them (``learning_rate``, ``momentum``, ``decay``, ``policy``, ...).
    An explicit ``iteration`` also sets the model's ``seen`` to ``iteration * batch`` (Darknet derives one from
    the other)."""

    def __init__(self, net, iteration: int | None = None, **overrides):
        sec = net_section(net)
        self.adam = bool(sec.get_int("adam", 0))
        if self.adam:
            self.B1, self.B2 = _f32(sec.get_float("B1", .9)), _f32(sec.get_float("B2", .999))
            self.eps = _f32(sec.get_float("eps", .000001))
        self.net = net
        self.batch = images_per_update(sec)
        self.momentum = _f32(overrides.pop("momentum", sec.get_float("momentum", 0.9)))
        self.decay = _f32(overrides.pop("decay", sec.get_float("decay", 0.0001)))
        self.loss_scale = _f32(sec.get_float("loss_scale", 1))
        self.schedule = Schedule.from_section(sec)
        for k, v in overrides.items():
            if not hasattr(self.schedule, k):
                raise TypeError(f"DarknetOptimizer: unknown option {k!r}")
            setattr(self.schedule, k, v)
        self.max_batches = self.schedule.max_batches
        if iteration is None:
            self.iteration = int(net.seen // self.batch)
        else:                            # Darknet keeps only seen: iteration = seen / (batch * subdivisions)
            self.iteration = int(iteration)
            net.seen = self.iteration * self.batch
        self.groups = self._groups()
        self.buffers = {id(p): torch.zeros_like(p) for g in self.groups for p, _ in g["params"]}
        if self.adam:                     # adam_update_gpu's m and v (convolutional layers)
            self.moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in self.groups
                            if g["type"] == "convolutional" for p, _ in g["params"]}

    def _groups(self):
        """(param, array name) per layer with Darknet's rule for it (decay on 'weights'; clip for shortcuts)."""
        from .step import frozen_layers
        frozen = frozen_layers(self.net.graph)
        groups = []
        for layer, m in zip(self.net.graph.layers, self.net.layers):
            if layer.type in _NO_UPDATE or layer.index in frozen:
                continue
            params = [(p, n) for n, p in m.named_parameters(recurse=True)]
            if not params:
                continue
            lr_scale = _f32(layer.section.get_float("learning_rate", 1)) if layer.type == "convolutional" else 1.0
            groups.append(dict(layer=layer.index, type=layer.type, params=params, lr_scale=lr_scale,
                               clip=layer.type in _CLIPPED))
        return groups

    @property
    def batch_num(self) -> int:
        return self.iteration + 1

    def rate(self, batch_num: int | None = None) -> float:
        return self.schedule.rate(self.batch_num if batch_num is None else batch_num)

    @torch.no_grad()
    def step(self) -> float:
        """One ``update_network``; returns the learning rate it used."""
        rate = self.rate()
        B = self.batch
        for g in self.groups:
            lr = _f32(rate * g["lr_scale"] / self.loss_scale)
            if self.adam and g["type"] == "convolutional":
                self._adam(g, lr)
                continue
            for p, name in g["params"]:
                u = self.buffers[id(p)]
                if p.grad is not None:
                    u.sub_(p.grad)                                  # Darknet's *_updates hold minus the gradient
                if g["clip"]:
                    u.clamp_(-1, 1)
                elif not name.endswith(_NO_DECAY) and g["type"] != "batchnorm":
                    u.add_(p, alpha=-self.decay * B * self.loss_scale)
                p.add_(u, alpha=lr / B)
                u.mul_(self.momentum)
        self.iteration += 1
        self.net.seen = self.net.seen + B
        return rate

    def _adam(self, g, lr):
        """``adam_update_gpu`` (Darknet's GPU build; ``update_convolutional_layer_gpu`` with ``adam=1``): every
        array (biases and scales too) gets the decay; the step is not divided by the batch; t = batch_num."""
        t = self.batch_num
        for p, _ in g["params"]:
            m, v = self.moments[id(p)]
            d = -p.grad if p.grad is not None else torch.zeros_like(p)
            d = d - self.decay * self.batch * self.loss_scale * p
            m.mul_(self.B1).add_(d, alpha=1 - self.B1)
            v.mul_(self.B2).add_(d * d, alpha=1 - self.B2)
            mhat = m / (1 - self.B1 ** t)
            vhat = v / (1 - self.B2 ** t)
            p.add_(lr * mhat / (vhat.sqrt() + self.eps))

    def zero_grad(self, set_to_none: bool = True):
        for g in self.groups:
            for p, _ in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self) -> dict:
        state = {"iteration": self.iteration, "buffers": [self.buffers[id(p)].clone() for g in self.groups
                                                          for p, _ in g["params"]]}
        if self.adam:
            state["moments"] = [tuple(t.clone() for t in mv) for mv in self.moments.values()]
        return state

    def load_state_dict(self, state: dict):
        self.iteration = int(state["iteration"])
        bufs = [self.buffers[id(p)] for g in self.groups for p, _ in g["params"]]
        if len(bufs) != len(state["buffers"]):
            raise DarknetError("optimizer state does not fit this model")
        for b, s in zip(bufs, state["buffers"]):
            b.copy_(s)
        for mv, saved in zip(self.moments.values() if self.adam else (), state.get("moments", ())):
            for t, s in zip(mv, saved):
                t.copy_(s)
