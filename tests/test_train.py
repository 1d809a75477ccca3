"""Darknet's training step (darknet_prn.train) against Darknet's own numbers (shared/oracle/train, cuDNN
semantics): every layer's training output and delta, every parameter gradient, the update, the printed [yolo]
statistics; plus the optimizer schedule, an overfit run, eq. 1 of the PRN paper through the real loss, the
.weights header after training and the error paths."""
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CACHE, ORACLE

sys.path.insert(0, str(ORACLE / "train"))
import train_case  # noqa: E402

from darknet_prn import Darknet, DarknetError  # noqa: E402
from darknet_prn.train import DarknetOptimizer, Schedule  # noqa: E402

TRAIN_CASES = ORACLE / "train"
SLOW_CASES = {"yolov3-giou-12"}
LOSS_LAYERS = ("yolo", "softmax", "cost")


def _case_params():
    out = []
    for p in train_case.list_cases(str(TRAIN_CASES)):
        name = Path(p).name
        marks = [pytest.mark.slow] if name in SLOW_CASES else []
        out.append(pytest.param(Path(p), id=name, marks=marks))
    return out


def leaky_hint_hook(idx, darknet_positive):
    """Forces Darknet's leaky decisions near 0 (oracle README): output x slope_darknet / slope_ours there."""
    idx = torch.from_numpy(idx.astype(np.int64))
    dk = torch.from_numpy(darknet_positive.astype(bool))

    def hook(mod, args, out):
        flat = out.detach().reshape(-1)
        ours = flat[idx] > 0
        f = torch.ones_like(flat)
        f[idx] = torch.where(dk, 1.0, 0.1) / torch.where(ours, 1.0, 0.1)
        return out * f.view_as(out)
    return hook


def capture(net, indices):
    """{layer: (input, output)} of a forward, with gradients retained on both (forward hooks on net.layers[i])."""
    kept = {}
    for i in indices:
        def keep(mod, args, out, i=i):
            for t in (args[0], out):
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    t.retain_grad()
            kept[i] = (args[0], out)
        net.layers[i].register_forward_hook(keep)
    return kept


def run_step(case: Path, hints: bool = True):
    """One Darknet training step through the public API; returns (arrays for train_case.compare, stats, net,
    optimizer, materialized paths)."""
    m = train_case.materialize(case, CACHE / ("train-" + case.name))
    meta = train_case.read_case_json(case)
    net = Darknet.from_cfg(case / "train.cfg", warn=False)
    net.load_weights(m["weights"])
    net.train()
    if hints:
        for i, (idx, pos) in train_case.decision_hints(case)["leaky"].items():
            net.layers[i].register_forward_hook(leaky_hint_hook(idx, pos))
    kept = capture(net, range(len(net.layers)))
    x = torch.from_numpy(np.load(m["input"]))
    loss, stats = net.loss(x, np.load(m["truth"]))
    loss.backward()
    arrays = {}
    for l in net.graph.layers:
        inp, out = kept[l.index]
        arrays[f"fwd:{l.index}"] = out.detach()
        t = inp if l.type in LOSS_LAYERS else out        # loss layers: what they add to their input's delta
        arrays[f"delta:{l.index}"] = -t.grad if t.grad is not None else torch.zeros_like(t)
        for spec in l.arrays:
            p = net.tensor(l.index, spec.name)
            if isinstance(p, torch.nn.Parameter):
                arrays[f"grad:{l.index}:{spec.name}"] = -p.grad if p.grad is not None else torch.zeros_like(p)
    opt = DarknetOptimizer(net, iteration=meta["optimizer"]["iteration_before"])
    rate = opt.step()
    assert rate == pytest.approx(meta["optimizer"]["rate"], rel=1e-6)
    before = np.fromfile(m["weights"], "<f4", offset=20)
    for r in train_case.oracle_case.read_manifest(case):
        t = net.tensor(r["layer"], r["array"]).detach().reshape(-1)
        arrays[f"after:{r['layer']}:{r['array']}"] = t
        arrays[f"step:{r['layer']}:{r['array']}"] = t.double() - torch.from_numpy(
            before[r["offset"]:r["offset"] + r["count"]].astype(np.float64))
    opt.zero_grad()
    return arrays, stats, net, opt, m


@pytest.mark.parametrize("case", _case_params())
def test_training_step_matches_darknet(case, tmp_path):
    torch.manual_seed(0)
    arrays, stats, net, opt, m = run_step(case)
    res = train_case.assert_matches(case, arrays, require="all")
    assert res["checked"] == len(train_case.keys(case))
    meta = train_case.read_case_json(case)
    # the loss Darknet's train_network returns, and the header Darknet saves after the step
    assert stats["darknet_loss"] == pytest.approx(meta["costs"]["train_network_return"], rel=1e-4)
    out = tmp_path / "after.weights"
    net.save_weights(out)
    assert out.read_bytes()[:20] == bytes.fromhex(meta["updated_header_hex"])


@pytest.mark.parametrize("case", [p for p in _case_params() if p.id in ("yolov3-tiny-prn", "yolov4-tiny",
                                                                          "synthetic-train")])
def test_yolo_statistics_match_darknet_line(case):
    """The per-head statistics and the `v3 (...) Region N Avg (IOU: ...)` line Darknet printed."""
    arrays, stats, *_ = run_step(case, hints=False)
    meta = train_case.read_case_json(case)
    heads = [h for h in stats["heads"] if h["type"] == "yolo"]
    assert [h["layer"] for h in heads] == [y["layer"] for y in meta["yolo"]]
    for ours, dk in zip(heads, meta["yolo"]):
        pr = dk["printed"]
        assert max(ours["count"], 1) == pr["count"]
        assert ours["avg_iou"] == pytest.approx(pr["avg_iou"], abs=2e-6)
        assert ours["cost"] == pytest.approx(dk["cost"], rel=1e-5)
        for key, theirs in (("classification_loss", dk["classification_loss"]), ("loss", dk["loss"])):
            assert ours[key] == pytest.approx(theirs, rel=1e-5)
        assert ours["iou_loss"] == pytest.approx(dk["iou_loss"], rel=1e-3, abs=1e-3)
        head = ours["line"].split(" Avg")[0]
        assert head == pr["line"].split(" Avg")[0]
        nums = [float(v) for v in ours["line"].replace(",", " ").split() if v.replace(".", "").isdigit()]
        theirs = [float(v) for v in pr["line"].replace(",", " ").split() if v.replace(".", "").isdigit()]
        assert nums == pytest.approx(theirs, rel=1e-4, abs=2e-4)


# -- optimizer and schedule ------------------------------------------------------------------------------
def _sched(text):
    from darknet_prn.cfg import read_cfg_text
    return Schedule.from_section(read_cfg_text("[net]\n" + text + "\n[avgpool]\n")[0])


def _f(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


@pytest.mark.parametrize("cfg,batch_num,expected", [
    ("learning_rate=0.01\nburn_in=100\npower=4", 50, 0.01 * 0.5 ** 4),
    ("learning_rate=0.01\nburn_in=100\npower=2\npolicy=constant", 100, 0.01),
    ("learning_rate=0.01\npolicy=steps\nsteps=100,200\nscales=.1,.5", 99, 0.01),
    ("learning_rate=0.01\npolicy=steps\nsteps=100,200\nscales=.1,.5", 100, 0.01 * 0.1),
    ("learning_rate=0.01\npolicy=steps\nsteps=100,200\nscales=.1,.5", 250, 0.01 * 0.1 * 0.5),
    ("learning_rate=0.1\npolicy=step\nstep=10\nscale=.5", 25, 0.1 * 0.5 ** 2),
    ("learning_rate=0.1\npolicy=exp\ngamma=0.99", 10, 0.1 * 0.99 ** 10),
    ("learning_rate=0.1\npolicy=poly\npower=4\nmax_batches=1000", 250, 0.1 * 0.75 ** 4),
    ("learning_rate=0.1\npolicy=sigmoid\ngamma=0.5\nstep=20", 22, 0.1 / (1 + math.exp(0.5 * 2))),
    ("learning_rate=0.1\npolicy=sgdr\nsgdr_cycle=100\nlearning_rate_min=0.001", 50,
     0.001 + 0.5 * (0.1 - 0.001) * (1 + math.cos(50 * 3.14159265 / 100))),
    # second cycle (100..300, mult 2): 150 is a quarter into it
    ("learning_rate=0.1\npolicy=sgdr\nsgdr_cycle=100\nlearning_rate_min=0.001", 150,
     0.001 + 0.5 * (0.1 - 0.001) * (1 + math.cos(50 * 3.14159265 / 200))),
    ("learning_rate=0.1\npolicy=sgdr\nsgdr_cycle=100\nsgdr_mult=3\nlearning_rate_min=0", 250,
     0.5 * 0.1 * (1 + math.cos(150 * 3.14159265 / 300))),
    ("learning_rate=0.1\npolicy=nonsense", 5, 0.1),
])
def test_get_current_rate(cfg, batch_num, expected):
    assert _sched(cfg).rate(batch_num) == pytest.approx(expected, rel=2e-6)


def test_random_policy_is_lr_times_uniform_power():
    import random
    s = _sched("learning_rate=0.1\npolicy=random\npower=2")
    r = s.rate(5, rng=random.Random(3))
    assert r == pytest.approx(0.1 * random.Random(3).uniform(0, 1) ** 2, rel=1e-6)


TINY = """[net]
batch={batch}
subdivisions={subdivisions}
width=32
height=32
channels=3
momentum=0.9
decay=0.0005
learning_rate={lr}
burn_in=0
max_batches=1000
policy=constant

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=6,8, 12,12, 20,24
classes=2
num=3
ignore_thresh=.7
truth_thresh=1
random=0
"""


def _tiny(batch=2, subdivisions=1, lr=0.01):
    torch.manual_seed(0)
    return Darknet.from_cfg_text(TINY.format(batch=batch, subdivisions=subdivisions, lr=lr), warn=False)


BOXES = [np.array([[0.3, 0.4, 0.3, 0.4, 0], [0.7, 0.6, 0.5, 0.3, 1]], np.float32),
         np.array([[0.5, 0.5, 0.6, 0.6, 1]], np.float32)]


def test_sgd_update_rule_by_hand():
    """update_network on a conv: U = -g - decay*B*W; W += lr/B U; U *= momentum (twice, with history)."""
    net = _tiny()
    net.train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    opt = DarknetOptimizer(net, iteration=0)
    w = net.layers[2].weights
    b = net.layers[0].biases
    u_w = torch.zeros_like(w)
    u_b = torch.zeros_like(b)
    for _ in range(2):
        loss, _ = net.loss(x, BOXES)
        loss.backward()
        w0, b0, gw, gb = w.detach().clone(), b.detach().clone(), w.grad.clone(), b.grad.clone()
        opt.step()
        opt.zero_grad()
        u_w = u_w - gw - 0.0005 * 2 * w0
        u_b = u_b - gb
        torch.testing.assert_close(w.detach(), w0 + 0.01 / 2 * u_w, rtol=0, atol=1e-7)
        torch.testing.assert_close(b.detach(), b0 + 0.01 / 2 * u_b, rtol=0, atol=1e-7)
        u_w, u_b = u_w * 0.9, u_b * 0.9
    assert opt.iteration == 2 and net.seen == 4


def test_subdivisions_accumulate_to_the_full_batch():
    """batch=4, subdivisions=2: two half-batch backwards then one update == one full-batch step (BN statistics
    are per mini-batch, so compare a BN-free quantity: the head conv's gradient sums over images)."""
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    boxes = BOXES + BOXES
    net = _tiny(batch=4, subdivisions=2)
    net.train()
    for k in (0, 2):
        loss, _ = net.loss(x[k:k + 2], boxes[k:k + 2])
        loss.backward()
    opt = DarknetOptimizer(net)
    assert opt.batch == 4 and opt.iteration == 0
    g_acc = net.layers[2].weights.grad.clone()
    ref = _tiny(batch=4, subdivisions=2)
    ref.train()
    total = torch.zeros_like(g_acc)
    for k in (0, 2):
        ref.zero_grad()
        loss, _ = ref.loss(x[k:k + 2], boxes[k:k + 2])
        loss.backward()
        total += ref.layers[2].weights.grad
    torch.testing.assert_close(g_acc, total)


def test_overfit_tiny_cfg_loss_falls():
    """A few hundred Darknet steps on one fixed batch: the loss falls by far."""
    torch.set_num_threads(1)
    net = _tiny(lr=0.05)
    net.train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    opt = DarknetOptimizer(net, iteration=0)
    losses = []
    for _ in range(300):
        loss, stats = net.loss(x, BOXES)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(stats["loss"])
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    assert stats["heads"][0]["avg_iou"] > 0.5


def test_save_after_training_writes_seen_and_round_trips(tmp_path):
    net = _tiny()
    net.train()
    x = torch.rand(2, 3, 32, 32)
    opt = DarknetOptimizer(net)
    for _ in range(3):
        loss, _ = net.loss(x, BOXES)
        loss.backward()
        opt.step()
        opt.zero_grad()
    p = tmp_path / "t.weights"
    net.save_weights(p)
    data = p.read_bytes()
    assert data[:20] == struct.pack("<iiiQ", 0, 2, 5, 6)
    back = _tiny()
    back.load_weights(p)
    assert back.seen == 6 and DarknetOptimizer(back).iteration == 3
    q = tmp_path / "u.weights"
    back.save_weights(q)
    assert q.read_bytes() == data


PRN = """[net]
batch=2
subdivisions=1
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[partial_shortcut]
from=-2
channels=4
activation=linear

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=6,8, 12,12, 20,24
classes=2
num=3
ignore_thresh=.7
"""


def test_partial_residual_gradient_eq1():
    """Eq. 1 of the PRN paper, x_l = [H(x)[0:c] + x_{l-k}[0:c], H(x)[c:C]]: through Darknet's real loss the
    earlier layer receives the shortcut's gradient only on its first c channels; H receives all of it."""
    torch.manual_seed(0)
    net = Darknet.from_cfg_text(PRN, warn=False)
    net.train()
    io = capture(net, (0, 1, 2))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    loss, _ = net.loss(x, BOXES)
    loss.backward(retain_graph=True)
    kept = {i: io[i][1] for i in range(3)}
    g0, g1, g2 = (kept[i].grad.clone() for i in range(3))     # (autograd.grad below also feeds retained grads)
    torch.testing.assert_close(g1, g2)                              # linear activation: H gets all channels
    through_h = torch.autograd.grad(kept[1], kept[0], grad_outputs=g1)[0]
    residual = g0 - through_h
    torch.testing.assert_close(residual[:, :4], g2[:, :4], rtol=1e-5, atol=1e-6)
    assert residual[:, 4:].abs().max() < 1e-6 * g2.abs().max()      # no residual gradient beyond c
    assert g2[:, 4:].abs().max() > 0


# -- training-mode layers ----------------------------------------------------------------------------------
def test_eval_mode_unchanged_after_training():
    """Eval forward after a step equals the layer modules' inference (rolling statistics) path."""
    net = _tiny()
    net.train()
    x = torch.rand(2, 3, 32, 32)
    opt = DarknetOptimizer(net)
    loss, _ = net.loss(x, BOXES)
    loss.backward()
    opt.step()
    net.eval()
    fast = net(x)
    exact = net.set_backend("exact")(x)
    torch.testing.assert_close(fast[0], exact[0], rtol=1e-4, atol=1e-4)


def test_dropout_scales_in_training_only():
    cfg = TINY.format(batch=2, subdivisions=1, lr=0.01).replace(
        "[convolutional]\nfilters=21", "[dropout]\nprobability=.25\n\n[convolutional]\nfilters=21")
    net = Darknet.from_cfg_text(cfg, warn=False)
    x = torch.rand(2, 3, 32, 32)
    drop = net.layers[2]
    inp = torch.rand(2, 16, 8, 8) + 0.5
    assert torch.equal(drop.eval()(inp), inp)
    y = drop.train()(inp)
    kept = y != 0
    torch.testing.assert_close(y[kept], inp[kept] / 0.75)
    assert 0.6 < kept.float().mean() < 0.9
    net.train()
    loss, _ = net.loss(x, BOXES)
    loss.backward()


def test_standalone_batchnorm_overwrites_previous_delta():
    """[batchnorm] after a conv: other consumers' gradient into the conv output is lost (Darknet's copy)."""
    cfg = """[net]
batch=2
width=16
height=16
channels=3

[convolutional]
filters=8
size=3
stride=1
pad=1
activation=linear

[batchnorm]

[shortcut]
from=-2
activation=linear

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=6,8, 12,12, 20,24
classes=2
num=3
"""
    net = Darknet.from_cfg_text(cfg, warn=False)
    net.train()
    io = capture(net, (0, 1))
    loss, _ = net.loss(torch.rand(2, 3, 16, 16), BOXES)
    loss.backward(retain_graph=True)
    kept = {i: io[i][1] for i in range(2)}
    g0 = kept[0].grad.clone()        # (autograd.grad below also feeds retained grads)
    only_bn = torch.autograd.grad(kept[1], kept[0], grad_outputs=kept[1].grad)[0]
    torch.testing.assert_close(g0, only_bn)


# -- errors --------------------------------------------------------------------------------------------------
def test_loss_needs_training_mode():
    net = _tiny()
    with pytest.raises(DarknetError, match="training mode"):
        net.loss(torch.rand(2, 3, 32, 32), BOXES)


@pytest.mark.parametrize("truth,msg", [
    (np.zeros((2, 7), np.float32), r"max_boxes\*6"),
    (np.zeros((3, 1200), np.float32), r"B=2"),
    ([np.zeros((1, 4), np.float32), np.zeros((0, 5))], r"\(n, 5\)"),
    ([np.zeros((1, 5), np.float32)], r"list of 1 images for a batch of 2"),
    ([np.array([[0.5, 0.5, -1, 0.2, 0]], np.float32), np.zeros((0, 5))], "w/h < 0"),
])
def test_wrong_truth_is_refused(truth, msg):
    net = _tiny()
    net.train()
    with pytest.raises(DarknetError, match=msg):
        net.loss(torch.rand(2, 3, 32, 32), truth)


def test_classifier_truth_ids_equal_one_hot():
    cfg = """[net]
batch=2
width=8
height=8
channels=3

[convolutional]
filters=5
size=3
stride=1
pad=1
activation=leaky

[avgpool]

[softmax]

[cost]
type=sse
"""
    x = torch.rand(2, 3, 8, 8)
    grads = []
    for truth in (np.array([1, 3]), np.eye(5, dtype=np.float32)[[1, 3]]):
        torch.manual_seed(0)
        net = Darknet.from_cfg_text(cfg, warn=False)
        net.train()
        loss, stats = net.loss(x, truth)
        loss.backward()
        grads.append(net.layers[0].weights.grad)
        assert [h["type"] for h in stats["heads"]] == ["softmax", "cost"]
    torch.testing.assert_close(grads[0], grads[1])
    with pytest.raises(DarknetError, match=r"class ids must be integers in \[0, 5\)"):
        net.loss(x, np.array([1, 7]))
    with pytest.raises(DarknetError, match=r"\(B=2, classes=5\)"):
        net.loss(x, np.zeros((2, 4), np.float32))


def test_contrastive_is_refused(tmp_path):
    cfg = tmp_path / "c.cfg"
    cfg.write_text("[net]\nbatch=2\nwidth=8\nheight=8\nchannels=3\n\n[convolutional]\nfilters=4\nsize=1\n"
                   "activation=linear\n\n[contrastive]\nclasses=2\n")
    net = Darknet.from_cfg(cfg, warn=False)
    net.train()
    with pytest.raises(DarknetError, match=r"c\.cfg:\d+: \[contrastive\].*not supported"):
        net.loss(torch.rand(2, 3, 8, 8), np.zeros((2, 1200), np.float32))


def test_adam_update_by_hand():
    """adam=1: adam_update_gpu on the conv arrays (decay on all of them, no /batch, t = batch_num)."""
    net = Darknet.from_cfg_text(TINY.format(batch=2, subdivisions=1, lr=0.01).replace(
        "policy=constant", "policy=constant\nadam=1\nB1=0.8\nB2=0.99\neps=0.001"), warn=False)
    net.train()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    opt = DarknetOptimizer(net, iteration=4)
    b = net.layers[0].biases
    m = torch.zeros_like(b)
    v = torch.zeros_like(b)
    for t in (5, 6):
        loss, _ = net.loss(x, BOXES)
        loss.backward()
        b0, g = b.detach().clone(), b.grad.clone()
        opt.step()
        opt.zero_grad()
        d = -g - 0.0005 * 2 * b0
        m = 0.8 * m + 0.2 * d
        v = 0.99 * v + 0.01 * d * d
        want = b0 + 0.01 * (m / (1 - 0.8 ** t)) / ((v / (1 - 0.99 ** t)).sqrt() + 0.001)
        torch.testing.assert_close(b.detach(), want, rtol=1e-5, atol=1e-7)


DETECTION = """[net]
batch=2
width=16
height=16
channels=3

[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky

[connected]
output={out}
activation=linear

[detection]
classes=3
coords=4
rescore=0
side=2
num=2
softmax=1
sqrt=1
object_scale=2
noobject_scale=0.5
class_scale=1.5
coord_scale=3
"""


def test_detection_delta_is_the_gradient_of_its_closed_form():
    """[detection] (YOLOv1) deltas = minus the gradient w.r.t. its (softmax'ed) output of 0.5 ns conf^2
    (all), 0.5 os (1 - conf)^2 (responsible box), 0.5 cs |t - box|^2 (sqrt w, h), 0.5 cls |onehot - p|^2."""
    S, C, n = 2, 3, 2
    torch.manual_seed(1)
    net = Darknet.from_cfg_text(DETECTION.format(out=S * S * (C + 5 * n)), warn=False)
    net.train()
    io = capture(net, (2,))
    boxes = [np.array([[0.3, 0.2, 0.4, 0.3, 1], [0.8, 0.9, 0.2, 0.2, 2]], np.float32),
             np.array([[0.6, 0.3, 0.5, 0.5, 0]], np.float32)]
    loss, stats = net.loss(torch.rand(2, 3, 16, 16), boxes)
    loss.backward()
    ours = -io[2][0].grad
    y = io[2][1].detach().clone().requires_grad_(True)
    conf = y[:, S * S * C:S * S * (C + n)]
    ref = 0.5 * 0.5 * (conf ** 2).sum()
    from darknet_prn.train.box import box_iou
    for b, bx in enumerate(boxes):
        for x, yy, w, h, c in bx:
            col, row = int(x * S), int(yy * S)
            cell = col + row * S
            tbox = ((x * S - col) / S, (yy * S - row) / S, w, h)
            yv = y.detach()[b]
            ious, rmses = [], []
            for j in range(n):
                k = S * S * (C + n) + (cell * n + j) * 4
                p = [float(v) for v in yv[k:k + 4]]
                p = (p[0] / S, p[1] / S, p[2] ** 2, p[3] ** 2)
                ious.append(box_iou(p, tbox))
                rmses.append(math.dist(p, tbox))
            j = int(np.argmax(ious)) if max(ious) > 0 else int(np.argmin(rmses))   # Darknet: rmse when no overlap
            pc = S * S * C + cell * n + j
            ref = ref - 0.5 * 0.5 * y[b, pc] ** 2 + 0.5 * 2 * (1 - y[b, pc]) ** 2
            k = S * S * (C + n) + (cell * n + j) * 4
            t = torch.tensor([x * S - col, yy * S - row, math.sqrt(w), math.sqrt(h)])
            ref = ref + 0.5 * 3 * ((t - y[b, k:k + 4]) ** 2).sum()
            onehot = torch.nn.functional.one_hot(torch.tensor(int(c)), C).float()
            ref = ref + 0.5 * 1.5 * ((onehot - y[b, cell * C:cell * C + C]) ** 2).sum()
    ref.backward()
    torch.testing.assert_close(ours, -y.grad.view_as(ours), rtol=1e-4, atol=1e-6)
    st = stats["heads"][0]
    assert st["type"] == "detection" and st["count"] == 3 and st["line"].startswith("Detection Avg IOU: ")


GAUSSIAN = """[net]
batch=2
width=32
height=32
channels=3

[convolutional]
filters=22
size=3
stride=8
pad=1
activation=linear

[Gaussian_yolo]
mask=0,1
anchors=8,8, 20,20
classes=2
num=2
ignore_thresh=1
iou_normalizer=0.5
uc_normalizer=0.8
"""


def test_gaussian_yolo_delta_is_the_gradient_of_its_gaussian_nll():
    """[Gaussian_yolo] (mse): minus the gradient w.r.t. its output of s/2 [in (t - mu)^2 / (2 sigma^2) +
    uc log(sigma + 0.3)] per coordinate (s = 2 - w h, in = iou_normalizer, uc = uc_normalizer), 0.5 obj^2
    (negatives), 0.5 (1 - obj)^2 and 0.5 |onehot - p|^2 (positive), the delta passed on unchanged."""
    torch.manual_seed(2)
    net = Darknet.from_cfg_text(GAUSSIAN, warn=False)
    net.train()
    io = capture(net, (1,))
    boxes = [np.array([[0.40, 0.55, 0.3, 0.3, 1]], np.float32), np.array([[0.8, 0.2, 0.7, 0.6, 0]], np.float32)]
    loss, stats = net.loss(torch.rand(2, 3, 32, 32), boxes)
    loss.backward()
    ours = -io[1][0].grad
    y = io[1][1].detach().clone().requires_grad_(True)
    v = y.view(2, 2, 11, 4, 4)
    ref = 0.5 * (v[:, :, 8] ** 2).sum()
    for b, t in enumerate(boxes):
        tx, ty, tw, th, c = (float(z) for z in t[0])
        i, j = int(tx * 4), int(ty * 4)
        a = 0 if tw * th < 0.1 else 1                 # anchors 8/32 and 20/32 by shape IoU
        aw = (8, 20)[a]
        s = v[b, a, :, j, i]
        scale = 2 - tw * th
        targets = (tx * 4 - i, ty * 4 - j, math.log(tw * 32 / aw), math.log(th * 32 / aw))
        for k, tk in enumerate(targets):
            mu, sig = s[2 * k], s[2 * k + 1]
            ref = ref + 0.5 * scale * 0.5 * (tk - mu) ** 2 / (2 * sig.detach() ** 2)          # iou_normalizer
            ref = ref + 0.5 * scale * 0.8 * ((tk - mu.detach()) ** 2 / (2 * sig ** 2) + torch.log(sig + 0.3))
        ref = ref - 0.5 * s[8] ** 2 + 0.5 * (1 - s[8]) ** 2
        onehot = torch.nn.functional.one_hot(torch.tensor(int(c)), 2).float()
        ref = ref + 0.5 * ((onehot - s[9:]) ** 2).sum()
    ref.backward()
    torch.testing.assert_close(ours, -y.grad, rtol=1e-4, atol=1e-6)
    st = stats["heads"][0]
    assert st["type"] == "gaussian_yolo" and st["count"] == 2 and st["line"].startswith("Region 1 Avg IOU: ")


# -- [region] (no Darknet oracle: its deltas against the closed form they are the gradient of) ----------------
REGION = """[net]
batch=2
width=32
height=32
channels=3

[convolutional]
filters=16
size=3
stride=8
pad=1
activation=linear

[region]
anchors=1,1, 2.5,2.5
bias_match=1
classes=3
coords=4
num=2
softmax=1
thresh=.99
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
"""


def test_region_delta_is_the_gradient_of_its_closed_form():
    """With the decisions fixed (positive slot: truth cell, anchor by shape; nothing above thresh; seen past
    12800), Darknet's [region] delta is minus the gradient of 0.5 ns obj^2 (negatives) + 0.5 os (1-obj)^2 +
    0.5 cs |t - (sx, sy, w, h)|^2 (positive) + class_scale x softmax cross-entropy."""
    torch.manual_seed(0)
    net = Darknet.from_cfg_text(REGION, warn=False)
    net.seen = 20000
    net.train()
    io = capture(net, (1,))
    boxes = [np.array([[0.40, 0.55, 0.5, 0.5, 2]], np.float32), np.array([[0.8, 0.2, 0.55, 0.45, 0]], np.float32)]
    loss, stats = net.loss(torch.rand(2, 3, 32, 32), boxes)
    loss.backward()
    ours = -io[1][0].grad
    x = io[1][0].detach().clone().requires_grad_(True)
    v = x.view(2, 2, 8, 4, 4).permute(0, 3, 4, 1, 2)             # (B, h, w, anchor, 8)
    obj = torch.sigmoid(v[..., 4])
    ref = 0.5 * (obj ** 2).sum()
    for b, t in enumerate(boxes):
        tx, ty, tw, th, c = t[0]
        i, j = int(tx * 4), int(ty * 4)
        a = 1                                                     # w, h 0.625 vs 0.25: the second anchor
        s = v[b, j, i, a]
        ref = ref - 0.5 * torch.sigmoid(s[4]) ** 2 + 0.5 * 5 * (1 - torch.sigmoid(s[4])) ** 2
        target = torch.tensor([tx * 4 - i, ty * 4 - j, math.log(tw * 4 / 2.5), math.log(th * 4 / 2.5)])
        pred = torch.stack([torch.sigmoid(s[0]), torch.sigmoid(s[1]), s[2], s[3]])
        ref = ref + 0.5 * ((target - pred) ** 2).sum() - torch.log_softmax(s[5:], 0)[int(c)]
    ref.backward()
    torch.testing.assert_close(ours, -x.grad, rtol=1e-4, atol=1e-6)
    st = stats["heads"][0]
    assert st["type"] == "region" and st["count"] == 2
    assert st["line"].startswith("Region Avg IOU: ") and "count: 2" in st["line"]
    assert st["cost"] == pytest.approx(float((ours.double() ** 2).sum()), rel=1e-5)


def test_region_prior_pulls_boxes_to_anchors_early():
    """seen < 12800: every slot's box delta is 0.01 x (cell centre / anchor - prediction), Darknet's warm-up."""
    torch.manual_seed(0)
    net = Darknet.from_cfg_text(REGION, warn=False)
    net.train()
    io = capture(net, (1,))
    loss, _ = net.loss(torch.rand(2, 3, 32, 32), [np.zeros((0, 5), np.float32)] * 2)
    loss.backward()
    d = (-io[1][0].grad).view(2, 2, 8, 4, 4)
    x = io[1][0].detach().view(2, 2, 8, 4, 4)
    sx = torch.sigmoid(x[:, :, 0])
    torch.testing.assert_close(d[:, :, 0], 0.01 * (0.5 - sx) * sx * (1 - sx))
    torch.testing.assert_close(d[:, :, 2], -0.01 * x[:, :, 2])


# -- [yolo] options no shared case uses: the delta at the positive slot against Darknet's formulas -----------
def _positive_slot(net, extra):
    """Loss layer 3 of TINY with `extra` keys: (output, delta from the input gradient) at the one truth's slot."""
    cfg = TINY.format(batch=2, subdivisions=1, lr=0.01).replace("random=0", "random=0\n" + extra)
    net = Darknet.from_cfg_text(cfg, warn=False)
    torch.manual_seed(0)
    net.train()
    io = capture(net, (3,))
    boxes = [np.array([[0.55, 0.45, 0.4, 0.4, 1]], np.float32), np.zeros((0, 5), np.float32)]
    loss, stats = net.loss(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)), boxes)
    loss.backward()
    # 8x8 grid, cell (4, 3); a 12.8 px square truth: anchor 12x12 (shape IoU .88) -> mask index 1
    y = io[3][1].detach().view(2, 3, 7, 8, 8)[0, 1, :, 3, 4]
    d = (-io[3][0].grad).view(2, 3, 7, 8, 8)[0, 1, :, 3, 4]
    return y, d, stats, (-io[3][0].grad)


@pytest.mark.parametrize("extra,cls_delta", [
    ("", lambda p, c: (torch.arange(2) == c).float() - p),
    ("label_smooth_eps=0.1", lambda p, c: (torch.arange(2) == c).float() * 0.9 + 0.05 - p),
    ("focal_loss=1", lambda p, c: ((torch.arange(2) == c).float() - p) * 0.5
     * -(1 - p[c]) * (2 * p[c] * torch.log(p[c]) + p[c] - 1)),
    ("counters_per_class=100,25\ncls_normalizer=0.5", lambda p, c: ((torch.arange(2) == c).float() - p)
     * torch.tensor([1.0, 4.0 * 0.5])),
])
def test_yolo_class_delta_options(extra, cls_delta):
    y, d, _, _ = _positive_slot(None, extra)
    torch.testing.assert_close(d[5:], cls_delta(y[5:], 1), rtol=1e-5, atol=1e-6)
    mult = 4.0 if "counters" in extra else 1.0
    torch.testing.assert_close(d[4], mult * (1 - y[4]), rtol=1e-5, atol=1e-6)


def test_yolo_delta_normalizer_scales_the_whole_delta():
    _, _, _, full = _positive_slot(None, "")
    _, _, _, half = _positive_slot(None, "delta_normalizer=0.5")
    torch.testing.assert_close(half, 0.5 * full)


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
def test_yolo_iou_loss_box_delta_is_dx_box_iou(kind):
    from darknet_prn.train.box import dx_box_iou
    y, d, stats, _ = _positive_slot(None, f"iou_loss={kind}\niou_normalizer=0.3")
    x = y[:4].double()
    pred = ((4 + x[0].item()) / 8, (3 + x[1].item()) / 8, math.exp(x[2].item()) * 12 / 32,
            math.exp(x[3].item()) * 12 / 32)
    g = dx_box_iou(pred, (0.55, 0.45, 0.4, 0.4), kind)
    want = torch.tensor([g[0], g[1], g[2] * math.exp(x[2].item()), g[3] * math.exp(x[3].item())]) * 0.3
    torch.testing.assert_close(d[:4].double(), want.double(), rtol=1e-4, atol=1e-6)
    assert stats["heads"][0]["line"].startswith(f"v3 ({'giou' if kind == 'giou' else 'iou'} loss")


@pytest.mark.parametrize("case", [pytest.param(Path(p), id=Path(p).name) for p in train_case.list_cases(str(TRAIN_CASES))
                                  if Path(p).name != "darknet19"])
def test_yolo_delta_from_darknets_own_output(case):
    """The [yolo] loss alone: from Darknet's stored l.output of each head, our delta equals Darknet's l.delta
    (no forward differences in between; the network-level tolerance is 2e-3)."""
    from darknet_prn.graph import load_network
    from darknet_prn.train.yolo_loss import YoloParams, yolo_delta
    graph = load_network(case / "train.cfg", warn=False)
    truth = train_case.truth_array(case)
    recs = train_case.load_expected(case)["records"]
    meta = train_case.read_case_json(case)
    for y in meta["yolo"]:
        i = y["layer"]
        out = recs[f"fwd:{i}"]["full"].astype(np.float32)
        delta, st = yolo_delta(YoloParams.from_layer(graph.layers[i]), out, truth, graph.width, graph.height)
        err = np.abs(delta - recs[f"delta:{i}"]["full"].reshape(delta.shape)).max() / recs[f"delta:{i}"]["std"]
        assert err < 2e-4, (i, err)
        assert max(st["count"], 1) == y["printed"]["count"]          # Darknet prints count 1 for none
        assert st["cost"] == pytest.approx(y["cost"], rel=1e-5)
        assert f"count: {y['printed']['count']}," in st["line"]


def test_stopbackward_freezes_and_cuts_gradients():
    """stopbackward=1 on layer 1: layer 0 is frozen (inference BN, never updated), layers 0-1 get no gradient,
    layer 2 does; stopbackward=N stops the backward only while the iteration is below N (GPU semantics)."""
    cfg = TINY.format(batch=2, subdivisions=1, lr=0.01).replace(
        "filters=16\nsize=3\nstride=2", "filters=16\nstopbackward={sb}\nsize=3\nstride=2")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    net = Darknet.from_cfg_text(cfg.replace("{sb}", "1"), warn=False)
    net.train()
    rm = net.layers[0].rolling_mean.clone()
    w0, w1 = net.layers[0].weights.detach().clone(), net.layers[1].weights.detach().clone()
    loss, _ = net.loss(x, BOXES)
    loss.backward()
    assert torch.equal(net.layers[0].rolling_mean, rm)                   # inference forward
    assert net.layers[0].weights.grad is None and net.layers[1].weights.grad is None
    assert net.layers[2].weights.grad.abs().sum() > 0
    assert all(p.requires_grad for p in net.parameters())
    DarknetOptimizer(net, iteration=0).step()
    assert torch.equal(net.layers[0].weights, w0)                        # frozen: not even decay
    torch.testing.assert_close(net.layers[1].weights.detach(), w1 - 0.01 / 2 * 0.0005 * 2 * w1)
    for sb, it, stopped in ((900, 899, True), (900, 900, False)):
        net = Darknet.from_cfg_text(cfg.replace("{sb}", str(sb)), warn=False)
        net.train()
        net.seen = it * 2
        loss, _ = net.loss(x, BOXES)
        loss.backward()
        assert (net.layers[0].weights.grad is None) == stopped
