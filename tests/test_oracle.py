"""Parity with Darknet itself: every layer of every shared oracle case within the oracle tolerance."""
import numpy as np
import pytest
import torch

import oracle_case
from conftest import materialize, oracle_cases
from darknet_prn import Darknet

CASES = oracle_cases()


def run_case(case, **kw):
    w, inp = materialize(case)
    net = Darknet.from_cfg(case / "model.cfg").eval()
    net.load_weights(w)
    x = torch.from_numpy(np.load(inp))[None]
    with torch.no_grad():
        outs = net.layer_outputs(x)
    return net, x, outs


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_layer_parity(case):
    net, x, outs = run_case(case)
    assert len(outs) == len(net.graph.layers)
    res = oracle_case.assert_matches(str(case), {i: o[0] for i, o in enumerate(outs)})
    assert res["checked"] >= len(outs) - len(res["skipped"])
    # forward() returns the network outputs Darknet reports, in order: the layer modules exactly, the
    # default eval-mode fast path (darknet_prn.fast) within the oracle tolerance
    with torch.no_grad():
        heads = net.set_backend("exact")(x)
        fast = net.set_backend("torch")(x)
    exp = oracle_case.load_expected(str(case))
    assert net.output_layers == oracle_case.output_layers(exp)
    for i, h, f in zip(net.output_layers, heads, fast):
        assert torch.equal(h, outs[i])
        assert float((f - h).abs().max()) <= oracle_case.DEFAULT_TOL * max(float(h.std()), 1e-6)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_weights_roundtrip_and_counts(case, tmp_path):
    import json
    meta = json.loads((case / "case.json").read_text())
    w, _ = materialize(case)
    net = Darknet.from_cfg(case / "model.cfg")
    assert net.graph.weights_floats == meta["weights_floats"]
    assert net.graph.running_floats == meta["running_stat_floats"]
    assert f"{net.graph.bflops:.3f}" == f"{meta['bflops_run']:.3f}"
    net.load_weights(w)
    out = tmp_path / "copy.weights"
    net.save_weights(out)
    assert out.read_bytes() == open(w, "rb").read()


def test_batch_items_are_independent():
    case = next(c for c in CASES if c.name == "yolov4-tiny")
    net, x, outs = run_case(case)
    xb = torch.cat([x, torch.rand_like(x), x])
    with torch.no_grad():
        hb = net(xb)
        h1 = net(x)
    for a, b in zip(hb, h1):
        assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[2], b[0], atol=1e-5)
