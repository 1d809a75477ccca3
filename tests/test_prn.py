"""The PRN family (issue 5): the cfgs in cfg/, [partial_shortcut] <-> stock Darknet conversion, the paper's
numbers and the gradient of eq. 1."""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from darknet_prn.cli import main as cli_main
from darknet_prn.convert import MARKER, convert_cfg, convert_cfg_text, read_text
from darknet_prn.errors import CfgError
from darknet_prn.graph import load_network, network_from_text
from darknet_prn.model import Darknet
from darknet_prn.summary import conv_bflops, summary_dict

ROOT = Path(__file__).resolve().parents[1]
CFG_DIR = ROOT / "cfg"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
CORPUS = SHARED / "cfg-corpus"
ORACLE = SHARED / "oracle"

OUR_CFGS = sorted(CFG_DIR.glob("*.cfg"))
SMALL = 64          # input size for running the full-size cfgs


def _oracle_case():
    if not (ORACLE / "oracle_case.py").is_file():
        pytest.skip("shared/oracle not available")
    if str(ORACLE) not in sys.path:
        sys.path.insert(0, str(ORACLE))
    import oracle_case
    return oracle_case


def _quiet_net(path_or_text, width=None, height=None, text=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if text:
            return network_from_text(path_or_text, width, height, warn=False)
        return load_network(path_or_text, width, height, warn=False)


def _partial_residual_cfgs():
    """Corpus cfgs holding a partial residual: a plain [shortcut] (no weights_type, same width/height)
    whose from-layer has a different channel count than the previous layer."""
    found = []
    for f in sorted(CORPUS.glob("**/*.cfg")):
        if "shortcut" not in f.read_text(errors="replace"):
            continue
        try:
            net = _quiet_net(f)
        except Exception:           # noqa: BLE001 -- cfgs the core rejects are not ours to convert
            continue
        for l in net.layers:
            if l.type == "shortcut" and not l.p["strided"] and l.p["weights_type"] == "none" \
                    and any(net.layers[r].out_shape[0] != l.in_shape[0] for r in l.refs):
                found.append((f, net.weights_floats))
                break
    return found


PARTIAL_CORPUS = _partial_residual_cfgs() if CORPUS.is_dir() else []
# corpus cfgs run with random weights by default only when small; the rest is @slow
_HEAVY_FLOATS = 30_000_000


def _corpus_params():
    out = []
    for f, floats in PARTIAL_CORPUS:
        marks = [pytest.mark.slow] if floats > _HEAVY_FLOATS else []
        out.append(pytest.param(f, id=f.name, marks=marks))
    return out


def _randomize_small_arrays(net: Darknet, seed=0):
    """Default init already draws conv/connected weights at random; make biases and BN arrays random
    too, so that every array of the .weights file matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.dim() != 1:
                continue
            if name.endswith(("rolling_variance", "scales")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.rand(t.shape, generator=g) * 0.2 - 0.1)


def _outputs(net, x):
    with torch.no_grad():
        return net.layer_outputs(x)


def _assert_same_outputs(outs_a, outs_b, index_map, what):
    assert torch.isfinite(outs_a[-1]).all(), f"{what}: non-finite outputs, the comparison would be void"
    mapped = 0
    for i, j in index_map.items():
        if j is None:
            continue
        assert torch.equal(outs_a[i], outs_b[j]), f"{what}: layer {i} -> {j} differs"
        mapped += 1
    assert torch.equal(outs_a[-1], outs_b[-1]), f"{what}: final layer differs"
    return mapped


def _compose(m1, m2):
    return {i: (None if j is None else m2.get(j)) for i, j in m1.items()}


# ====================================================================================================
# cfg/: parse, summary, run
# ====================================================================================================
def test_our_cfgs_exist():
    names = {p.name for p in OUR_CFGS}
    for need in ("yolov3-tiny-prn.cfg", "darknet53-fprn.cfg", "yolov3-fprn.cfg", "darknet53-prn.cfg",
                 "yolov3-prn.cfg"):
        assert need in names


@pytest.mark.parametrize("cfg", OUR_CFGS, ids=lambda p: p.name)
def test_cfg_header_names_the_paper(cfg):
    head = []
    for line in cfg.read_text().splitlines():
        if line.startswith("["):
            break
        head.append(line)
    text = "\n".join(head)
    assert all(line.startswith("#") or not line.strip() for line in head)
    assert re.search(r"(Fig\.|Table) \d", text), "the header must say which figure/table it follows"
    assert "Reading" in text or "unchanged except" in text, "the header must state our reading"


@pytest.mark.parametrize("cfg", OUR_CFGS, ids=lambda p: p.name)
def test_cfg_parses_and_summarises(cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # no unused keys, no unknown activations
        net = load_network(cfg)
    d = summary_dict(net)
    assert d["layers"] and d["bflops"] > d["bflops_conv"] > 0
    assert d["weights_floats"] == net.weights_floats > d["params"] > 0
    assert any(l.type == "partial_shortcut" for l in net.layers)
    for size in (320, 416):
        assert _quiet_net(cfg, size, size).bflops > 0


@pytest.mark.parametrize("cfg", OUR_CFGS, ids=lambda p: p.name)
def test_cfg_runs(cfg):
    net = Darknet.from_cfg(cfg, width=SMALL, height=SMALL, warn=False)
    x = torch.rand(2, *net.graph.input_shape)
    with torch.no_grad():
        outs = net(x)
    assert len(outs) == len(net.output_layers)
    for i, o in zip(net.output_layers, outs):
        assert tuple(o.shape[1:]) == net.graph.layers[i].out_shape
        assert torch.isfinite(o).all()


# -- the paper's numbers --------------------------------------------------------------------------------
def _bf(name, size):
    net = _quiet_net(CFG_DIR / name, size, size)
    return net.bflops, conv_bflops(net), net


def test_fprn_has_yolov3_cost():
    """Table 2: YOLO-v3-FPRN has YOLO-v3's BFLOPs (38.973 @320, 65.864 @416, convolutions only)."""
    for size, paper in ((320, 38.973), (416, 65.864)):
        _, conv, net = _bf("yolov3-fprn.cfg", size)
        ref = _quiet_net(CORPUS / "yolov3.cfg", size, size)
        assert round(conv, 3) == paper == round(conv_bflops(ref), 3)
        assert net.weights_floats == ref.weights_floats
    d = _quiet_net(CFG_DIR / "darknet53-fprn.cfg")
    assert d.weights_floats == _quiet_net(CORPUS / "darknet53.cfg").weights_floats


def test_prn_close_to_table2():
    """Table 2: YOLO-v3-PRN 25.106 @320 / 42.429 @416 (convolutions only); ours within 0.5 %."""
    for size, paper in ((320, 25.106), (416, 42.429)):
        _, conv, _ = _bf("yolov3-prn.cfg", size)
        assert abs(conv - paper) / paper < 0.005, (size, conv, paper)


def test_tiny_prn_matches_table3():
    """Table 3: v3-tiny-PRN 3.47 BFLOPs (Darknet's printed total 3.467 @416), 4.95M parameters."""
    total, conv, net = _bf("yolov3-tiny-prn.cfg", 416)
    assert round(total, 3) == 3.467 and round(total, 2) == 3.47
    assert abs(net.weights_floats / 1e6 - 4.95) < 0.02


def test_pelee_prn_matches_table3():
    """Table 3: Pelee-PRN 2.39 BFLOPs @320, 4.04 @416, 3.16M parameters (Darknet's totals / floats)."""
    for size, paper in ((320, 2.39), (416, 4.04)):
        total, conv, net = _bf("pelee-prn.cfg", size)
        assert round(total, 2) == paper and abs(conv - paper) < 0.006
    assert round(net.weights_floats / 1e6, 2) == 3.16


def test_darknet53_prn_schedule():
    """Fig. 7c reading: inside each stage the block outputs decrease linearly to half the stage width."""
    net = _quiet_net(CFG_DIR / "darknet53-prn.cfg")
    ps = [l for l in net.layers if l.type == "partial_shortcut"]
    assert len(ps) == 23
    ends = {}
    for l in ps:
        src = net.layers[l.refs[0]].out_shape[0]
        assert l.out_shape[0] < src and l.p["channels"] == [l.out_shape[0]]
        ends[l.out_shape[1]] = l.out_shape[0]
    assert sorted(ends.values()) == [32, 64, 128, 256, 512]


# ====================================================================================================
# conversion: corpus cfgs with a partial residual and every cfg in cfg/
# ====================================================================================================
def test_partial_corpus_found():
    names = {f.name for f, _ in PARTIAL_CORPUS}
    assert {"yolov3-tiny-prn.cfg", "enet-coco.cfg"} <= names


def _roundtrip_random(text, path, size=SMALL, seed=0, tmp_path=None):
    """original vs --to explicit vs --to darknet vs both round trips; random weights written by the
    original network and loaded by each converted one; identical outputs on every mapped layer."""
    ex = convert_cfg(text, "explicit", str(path))
    dk = convert_cfg(text, "darknet", str(path))
    dk_ex = convert_cfg(dk.text, "explicit", str(path))
    ex_dk = convert_cfg(ex.text, "darknet", str(path))
    a = Darknet.from_cfg_text(text, size, size, warn=False)
    _randomize_small_arrays(a, seed)
    wpath = tmp_path / "random.weights"
    a.save_weights(wpath)
    x = torch.rand((1,) + tuple(a.graph.input_shape), generator=torch.Generator().manual_seed(seed))
    outs_a = _outputs(a, x)
    seen = {}
    for name, conv_text, imap in (("explicit", ex.text, ex.index_map), ("darknet", dk.text, dk.index_map),
                                  ("darknet->explicit", dk_ex.text, _compose(dk.index_map, dk_ex.index_map)),
                                  ("explicit->darknet", ex_dk.text, _compose(ex.index_map, ex_dk.index_map))):
        if conv_text in seen:          # same text as an earlier one: same outputs
            continue
        seen[conv_text] = name
        if conv_text == text:
            continue
        b = Darknet.from_cfg_text(conv_text, size, size, warn=False)
        b.load_weights(wpath)
        assert _assert_same_outputs(outs_a, _outputs(b, x), imap, f"{path}: {name}") > 0
    return ex, dk, dk_ex, ex_dk


@pytest.mark.parametrize("cfg", _corpus_params())
def test_corpus_partial_roundtrip(cfg, tmp_path):
    text = read_text(cfg)
    ex, dk, dk_ex, ex_dk = _roundtrip_random(text, cfg, tmp_path=tmp_path)
    # Darknet's implicit partial [shortcut]s: explicit renames exactly those headers, darknet restores the text
    assert ex.converted and not dk.converted and dk.text == text
    assert ex_dk.text == text
    assert sum(1 for l in _quiet_net(ex.text, text=True).layers if l.type == "partial_shortcut") \
        == len(ex.converted)
    changed = [(a, b) for a, b in zip(text.splitlines(), ex.text.splitlines()) if a != b]
    assert changed and all(a.strip() == "[shortcut]" and b == "[partial_shortcut]" for a, b in changed)


@pytest.mark.parametrize("cfg", [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name.startswith("yolov3-")
                                              and "tiny" not in p.name else [])
                                 for p in OUR_CFGS])
def test_our_cfg_roundtrip(cfg, tmp_path):
    text = read_text(cfg)
    ex, dk, dk_ex, ex_dk = _roundtrip_random(text, cfg, tmp_path=tmp_path)
    assert ex.text == text                       # already explicit
    net = _quiet_net(dk.text, text=True)
    assert not any(l.type == "partial_shortcut" for l in net.layers)    # stock Darknet only
    assert {l.type for l in net.layers} <= {l.type for l in _quiet_net(cfg).layers} - {"partial_shortcut"} \
        | {"route", "shortcut"}
    # folding the lowering back gives the same layers as the original
    assert len(_quiet_net(dk_ex.text, text=True).layers) == len(_quiet_net(cfg).layers)
    if "sparsity" not in text:
        assert dk_ex.text == text


def test_fprn_lowering_shape():
    """sparsity=0.5 on equal channel counts -> [route] groups=2 group_id=0, [route] -1.., [shortcut]."""
    text = read_text(CFG_DIR / "darknet53-fprn.cfg")
    dk = convert_cfg(text, "darknet")
    net = _quiet_net(dk.text, text=True)
    old = _quiet_net(CFG_DIR / "darknet53-fprn.cfg")
    assert len(net.layers) == len(old.layers) + 2 * 23
    assert net.weights_floats == old.weights_floats
    for l in old.layers:
        if l.type != "partial_shortcut":
            continue
        j = dk.index_map[l.index]
        sc, back, grp = net.layers[j], net.layers[j - 1], net.layers[j - 2]
        assert sc.type == "shortcut" and sc.refs == [j - 2]
        assert back.type == "route" and back.refs == [dk.index_map[l.index - 1]]
        assert grp.type == "route" and grp.p["groups"] == 2 and grp.p["group_id"] == 0
        assert grp.refs == [dk.index_map[l.refs[0]]]
        assert grp.out_shape[0] == l.out_shape[0] // 2
    assert dk.text.count(MARKER) == 23
    # the yolov3 head's absolute routes (36, 61) are renumbered
    y = convert_cfg(read_text(CFG_DIR / "yolov3-fprn.cfg"), "darknet")
    routes = [l for l in _quiet_net(y.text, text=True).layers if l.type == "route" and len(l.refs) == 2]
    assert [r.refs[1] for r in routes] == [y.index_map[61], y.index_map[36]]


# ====================================================================================================
# oracle weights: the explicit yolov3-tiny-prn and the converted corpus cfgs vs Darknet itself
# ====================================================================================================
def test_tiny_prn_explicit_equals_corpus_on_oracle(tmp_path):
    oc = _oracle_case()
    case = ORACLE / "cases" / "yolov3-tiny-prn"
    m = oc.materialize(str(case), str(tmp_path))
    corpus_text = (case / "model.cfg").read_text()
    ours = Darknet.from_cfg(CFG_DIR / "yolov3-tiny-prn.cfg", width=160, height=160, warn=False)
    ref = Darknet.from_cfg_text(corpus_text, warn=False)
    # the same .weights layout, array by array
    layout = lambda n: [(l.index, a.name, a.shape) for l in n.graph.layers for a in l.arrays]  # noqa: E731
    assert layout(ours) == layout(ref)
    assert [l.out_shape for l in ours.graph.layers] == [l.out_shape for l in ref.graph.layers]
    types = [(a.type, b.type) for a, b in zip(ours.graph.layers, ref.graph.layers) if a.type != b.type]
    assert types == [("partial_shortcut", "shortcut")] * 2
    ours.load_weights(m["weights"])
    ref.load_weights(m["weights"])
    x = torch.from_numpy(np.load(m["input"]))[None]
    oa, ob = _outputs(ours, x), _outputs(ref, x)
    assert all(torch.equal(a, b) for a, b in zip(oa, ob))
    oc.assert_matches(str(case), {i: o[0] for i, o in enumerate(oa)})
    # and its stock form computes the same on the same file
    dk = convert_cfg(read_text(CFG_DIR / "yolov3-tiny-prn.cfg"), "darknet")
    c = Darknet.from_cfg_text(dk.text, 160, 160, warn=False)
    c.load_weights(m["weights"])
    assert all(torch.equal(a, b) for a, b in zip(oa, _outputs(c, x)))


@pytest.mark.parametrize("name", [
    "yolov3-tiny-prn", "enet-coco",
    pytest.param("csresnext50-panet-spp", marks=pytest.mark.slow),
    pytest.param("yolov4-sam-mish-csp-reorg-bfm", marks=pytest.mark.slow),
])
def test_converted_corpus_on_oracle(name, tmp_path):
    oc = _oracle_case()
    case = ORACLE / "cases" / name
    if not case.is_dir():
        pytest.skip(f"no oracle case {name}")
    m = oc.materialize(str(case), str(tmp_path))
    text = (case / "model.cfg").read_text()
    ex = convert_cfg(text, "explicit", str(case / "model.cfg"))
    assert ex.converted
    x = torch.from_numpy(np.load(m["input"]))[None]
    nets = []
    for t in (text, ex.text, convert_cfg(ex.text, "darknet").text):
        net = Darknet.from_cfg_text(t, warn=False)
        net.load_weights(m["weights"])
        nets.append(_outputs(net, x))
    for outs in nets[1:]:
        assert all(torch.equal(a, b) for a, b in zip(nets[0], outs))
    oc.assert_matches(str(case), {i: o[0] for i, o in enumerate(nets[1])})


# ====================================================================================================
# conversion details: renumbering, text kept, errors, CLI
# ====================================================================================================
SYNTH = """# a comment before [net]
[net]
width=16
height=16
channels=3

[convolutional]
filters=8
size=3
pad=1
activation=leaky

[convolutional]
filters=8
size=1
activation=leaky

# the partial residual
[partial_shortcut]
from = -2   # first layer
channels=4
activation=leaky

[convolutional]
filters=8
size=1
activation=linear

[convolutional]
filters=8
size=1
share_index=3
activation=linear

[route]
layers = -1, 2, 0

[partial_shortcut]
from=2,-6
activation=linear

[convolutional]
filters=4
size=1
activation=linear

[shortcut]
from=-2
activation=linear

[shortcut]
from=0
activation=logistic
"""


def test_synthetic_renumbering(tmp_path):
    dk = convert_cfg(SYNTH, "darknet", "synth.cfg")
    # layer 2 lowered: 2 new routes before it; layers 3.. shift by 2
    assert dk.index_map == {0: 0, 1: 1, 2: 4, 3: 5, 4: 6, 5: 7, 6: 8, 7: 9, 8: 10, 9: 11}
    new = dk.text
    assert "# a comment before [net]" in new and "# the partial residual" in new
    lines = new.splitlines()
    i = lines.index("[route]")
    assert lines[i - 1].startswith(MARKER)
    assert lines[i:i + 4] == ["[route]", "layers=-2", "groups=2", "group_id=0"]
    assert lines[i + 5:i + 7] == ["[route]", "layers=-2"]
    assert "from = -2   # first layer" in new          # the lowered shortcut reads the group route (-2)
    assert "share_index=5" in new                      # absolute reference renumbered
    assert "layers = -1, 4, 0" in new                  # relative kept, absolute renumbered
    assert "from=4,-8" in new                          # [partial_shortcut] 2,-6 -> [shortcut] (default c)
    assert "from=0\n" in new and "\nchannels=4" not in new
    net = _quiet_net(new, text=True)
    assert {l.type for l in net.layers} == {"convolutional", "route", "shortcut"}
    _roundtrip_random(SYNTH, "synth.cfg", size=16, tmp_path=tmp_path)
    # explicit folds the lowering back
    back = convert_cfg(new, "explicit", "synth.cfg")
    nb = _quiet_net(back.text, text=True)
    assert [l.type for l in nb.layers] == [l.type for l in _quiet_net(convert_cfg_text(SYNTH, "explicit"),
                                                                        text=True).layers]
    assert nb.layers[2].p["channels"] == [4] and MARKER not in back.text
    assert "# the partial residual\n[partial_shortcut]\nfrom = -2   # first layer\nchannels=4\n" in back.text


def test_multi_source_partial_lowering(tmp_path):
    text = SYNTH.replace("[partial_shortcut]\nfrom=2,-6\nactivation=linear",
                         "[partial_shortcut]\nfrom=2,-6\nchannels=4\nactivation=linear")
    dk = convert_cfg(text, "darknet", "m.cfg")
    net = _quiet_net(dk.text, text=True)
    j = dk.index_map[6]
    assert net.layers[j].type == "shortcut" and len(net.layers[j].refs) == 2
    assert [net.layers[r].p["groups"] for r in net.layers[j].refs] == [2, 2]
    assert [net.layers[r].refs for r in net.layers[j].refs] == [[dk.index_map[2]], [dk.index_map[0]]]
    _roundtrip_random(text, "m.cfg", size=16, tmp_path=tmp_path)
    back = convert_cfg(dk.text, "explicit", "m.cfg")
    assert [l.type for l in _quiet_net(back.text, text=True).layers] == \
        [l.type for l in _quiet_net(convert_cfg_text(text, "explicit"), text=True).layers]
    assert "from=2,-6\nchannels=4\n" in back.text


def test_explicit_leaves_other_shortcuts():
    """Plain (equal channels), weighted and strided [shortcut]s stay as they are."""
    text = SYNTH.replace("[partial_shortcut]\nfrom = -2   # first layer\nchannels=4\nactivation=leaky",
                         "[shortcut]\nfrom=-2\nweights_type=per_feature\nweights_normalization=relu")
    text = text.replace("[partial_shortcut]\nfrom=2,-6", "[shortcut]\nfrom=2,-6")
    ex = convert_cfg(text, "explicit")
    # layer 6 (24-channel route + two 8-channel sources), 8 (4 channels + 8) and 9 (4 + 8) are partial
    assert ex.converted == [6, 8, 9]
    assert ex.text == text.replace("[shortcut]\nfrom=2,-6", "[partial_shortcut]\nfrom=2,-6").replace(
        "activation=linear\n\n[shortcut]\nfrom=-2", "activation=linear\n\n[partial_shortcut]\nfrom=-2").replace(
        "[shortcut]\nfrom=0", "[partial_shortcut]\nfrom=0")
    assert ex.text.count("[shortcut]") == 1        # the weighted one (layer 2)
    plain = text.replace("filters=4\nsize=1\nactivation=linear", "filters=8\nsize=1\nactivation=linear")
    assert convert_cfg(plain, "explicit").converted == [6, 8]  # layer 9: equal channel counts, a plain residual
    resnet = read_text(CORPUS / "resnet50.cfg")
    ex = convert_cfg(resnet, "explicit")
    assert len(ex.converted) == 1                 # the strided (downsampling) shortcuts are not partial


def _bad(channels_line, src_filters=8):
    return f"""[net]
width=8
height=8
channels=3

[convolutional]
filters={src_filters}
size=1
activation=leaky

[convolutional]
filters=8
size=1
activation=leaky

[partial_shortcut]
from=-2
{channels_line}
"""


@pytest.mark.parametrize("line, msg", [
    ("channels=3", r"^bad\.cfg:18: \[partial_shortcut\] channels=3 gives c=3, which does not divide the 8 channels "
                   r"of from-layer 0: no exact stock-Darknet lowering"),
    ("sparsity=0.75", r"^bad\.cfg:18: \[partial_shortcut\] sparsity=0\.75 gives c=6, which does not divide the 8 "
                      r"channels of from-layer 0"),
])
def test_lowering_errors(line, msg):
    with pytest.raises(CfgError, match=msg) as e:
        convert_cfg(_bad(line), "darknet", "bad.cfg")
    assert "\n" not in str(e.value)
    # the explicit direction has nothing to lower
    assert convert_cfg_text(_bad(line), "explicit", "bad.cfg") == _bad(line)


def test_error_on_bad_input():
    with pytest.raises(CfgError, match=r"^bad\.cfg:18: \[partial_shortcut\] channels gives c=9 channels, but it "
                                       r"must be in 1\.\.8"):
        convert_cfg(_bad("channels=9"), "darknet", "bad.cfg")
    with pytest.raises(ValueError):
        convert_cfg(_bad("channels=4"), "sideways")


def test_cli(tmp_path, capsys):
    src = tmp_path / "in.cfg"
    src.write_text(_bad("channels=4"))
    out = tmp_path / "out.cfg"
    assert cli_main(["convert-cfg", str(src), "-o", str(out), "--to", "darknet"]) == 0
    assert "groups=2" in out.read_text()
    assert {l.type for l in _quiet_net(out.read_text(), text=True).layers} == {"convolutional", "route", "shortcut"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.cfg", "out.cfg"]     # no temp file left
    assert cli_main(["convert-cfg", str(out), "-o", str(out), "--to", "explicit"]) == 0   # in place
    assert out.read_text() == src.read_text()
    capsys.readouterr()
    assert cli_main(["convert-cfg", str(src), "--to", "explicit"]) == 0               # stdout
    assert capsys.readouterr().out == src.read_text()
    bad = tmp_path / "bad.cfg"
    bad.write_text(_bad("channels=3"))
    dst = tmp_path / "never.cfg"
    assert cli_main(["convert-cfg", str(bad), "-o", str(dst), "--to", "darknet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("darknet-prn convert-cfg: error: ") and f"{bad}:18:" in err and "\n" not in err
    assert not dst.exists()
    assert cli_main(["convert-cfg", str(tmp_path / "missing.cfg"), "--to", "darknet"]) == 2
    assert "cfg file not found" in capsys.readouterr().err


def test_text_kept_byte_for_byte():
    text = read_text(CORPUS / "yolov3-tiny-prn.cfg").replace("\n", "\r\n")
    ex = convert_cfg_text(text, "explicit")
    assert ex.count("\r\n") == text.count("\r\n") and ex.replace("[partial_shortcut]", "[shortcut]") == text
    assert convert_cfg_text(ex, "darknet") == text


# ====================================================================================================
# training: eq. 1's gradient
# ====================================================================================================
GRAD = """[net]
width=5
height=4
channels=3

[convolutional]
filters=6
size=3
pad=1
activation=linear

[convolutional]
filters=6
size=1
activation=linear

[partial_shortcut]
from=-2
channels=2
activation=linear
"""


@pytest.mark.parametrize("variant", ["channels", "shrink"])
def test_partial_shortcut_gradient_eq1(variant):
    """x_l = [H(x_{l-1})[0:c] + x_{l-k}[0:c], H(x_{l-1})[c:C]]: dL/dx_{l-k} gets the gradient of both
    paths (H and the shortcut) on the first c channels and of the H path only on the others."""
    text = GRAD if variant == "channels" else GRAD.replace("filters=6\nsize=1", "filters=2\nsize=1") \
        .replace("channels=2\n", "")
    torch.manual_seed(0)
    net = Darknet.from_cfg_text(text, warn=False)
    x = torch.rand(2, 3, 4, 5)
    outs = net.layer_outputs(x)
    for o in outs:
        o.retain_grad()
    src, h, y = outs
    C = h.shape[1]
    c = 2
    # eq. 1 by hand
    ref = torch.cat([h[:, :c] + src[:, :c], h[:, c:]], 1)
    assert torch.equal(y, ref)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    # the output gradient reaches H(x_{l-1}) on all its channels (one path)
    assert torch.equal(h.grad, g)
    # x_{l-k}: H path (through layer 1's conv) + the residual path on channels < c
    s = src.detach().requires_grad_()
    h2 = net.layers[1](s, {})
    (h_path,) = torch.autograd.grad(h2, s, grad_outputs=g)
    expect = h_path.clone()
    expect[:, :c] += g[:, :c]
    assert torch.allclose(src.grad, expect, atol=1e-6, rtol=0)
    assert not torch.allclose(src.grad[:, :c], h_path[:, :c])          # the residual channels got more
    assert torch.equal(src.grad[:, c:], h_path[:, c:])                  # the others only the H path
    assert src.shape[1] == 6 and C == (6 if variant == "channels" else 2)
    # and the parameters of both layers get gradients
    for m in (net.layers[0], net.layers[1]):
        assert m.weights.grad is not None and m.weights.grad.abs().sum() > 0
