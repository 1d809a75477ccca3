"""cfg syntax as Darknet reads it, and one-line errors naming file:line for bad cfgs."""
import subprocess
import sys
import warnings

import pytest

from conftest import ROOT
from darknet_prn.cfg import CfgWarning, read_cfg_text
from darknet_prn.errors import CfgError
from darknet_prn.graph import network_from_text

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"
CONV = "[convolutional]\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=leaky\n"


def net(text, **kw):
    return network_from_text(NET + text, path="m.cfg", **kw)


def test_spaces_tabs_comments_and_first_occurrence():
    secs = read_cfg_text("[ net ]\n# c\n; c\n\n width = 64\nheight=32\nwidth=128\n[conv]\nmask = 3, 4\n", "x")
    assert secs[0].name == "net" and secs[1].type == "convolutional"
    assert secs[0].get_int("width") == 64
    assert secs[1].get_ints("mask") == [3, 4]
    assert [o.key for o in secs[0].extra] == ["width"]


def test_inline_comment_number_prefix_like_atoi():
    n = net("[convolutional]\nfilters=8 #eight\nsize=3\npad=1\n")
    assert n.layers[0].out_shape == (8, 32, 32)


def test_aliases_and_network_section():
    n = network_from_text("[network]\nwidth=16\nheight=16\nchannels=3\n[conv]\nfilters=4\n[max]\nsize=2\nstride=2\n"
                          "[avg]\n[soft]\n", path="a.cfg")
    assert [l.type for l in n.layers] == ["convolutional", "maxpool", "avgpool", "softmax"]


def test_unused_key_warns_with_file_and_line():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", CfgWarning)
        net(CONV + "bogus_key=1\n")
    msgs = [str(x.message) for x in w if issubclass(x.category, CfgWarning)]
    assert msgs == ["m.cfg:11: unused field 'bogus_key = 1' in [convolutional]"]


def test_duplicate_key_first_wins_and_later_is_reported():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", CfgWarning)
        n = net("[convolutional]\nfilters=8\nfilters=16\n")
    assert n.layers[0].out_shape[0] == 8
    assert any("unused field 'filters = 16'" in str(x.message) for x in w)


def test_darknet_defaults():
    n = net("[convolutional]\n[maxpool]\n[yolo]\n".replace("[yolo]\n", ""))
    conv = n.layers[0]
    assert conv.p["filters"] == 1 and conv.p["size"] == 1 and conv.p["activation"] == "logistic"
    assert n.layers[1].p["size"] == 1 and n.layers[1].p["padding"] == 0


@pytest.mark.parametrize("text,msg", [
    ("[bogus]\n", "m.cfg:5: unknown section [bogus]"),
    ("[convolutional]\nfilters=abc\n", "m.cfg:6: [convolutional] bad number for 'filters': 'abc' is not an integer"),
    ("[convolutional]\nfilters=\n", "m.cfg:6: config line 'filters=' has no value"),
    ("[route]\n", "m.cfg:5: [route] missing required key 'layers'"),
    ("[shortcut]\nactivation=linear\n", "m.cfg:5: [shortcut] missing required key 'from'"),
    (CONV + "[route]\nlayers=-3\n", "m.cfg:12: [route] 'layers=-3' is out of range (layer 1 can use layers 0..0)"),
    (CONV + "[route]\nlayers=1\n", "m.cfg:12: [route] 'layers=1' points forward or at itself (layer 1 can use layers 0..0)"),
    (CONV + "[maxpool]\nsize=3\nstride=3\n[shortcut]\nfrom=0\n",
     "m.cfg:15: [shortcut] from layer 0 is 8x32x32 but the previous layer is 8x11x11: width/height must match"),
    (CONV + "[maxpool]\nsize=2\nstride=2\n[route]\nlayers=0,1\n",
     "m.cfg:15: [route] layers 0 (8x32x32) and 1 (8x16x16) have different width/height"),
    (CONV + "[yolo]\nclasses=80\nmask=0,1,2\nnum=3\n",
     "m.cfg:11: [yolo] the previous layer has 8 channels but 3 anchors x (classes=80 + 5) = 255 are needed (filters= of the [convolutional] before it)"),
    ("[convolutional]\nfilters=8\ngroups=3\n",
     "m.cfg:7: [convolutional] groups=3 must divide the input channels (3) and filters (8)"),
    (CONV + "[partial_shortcut]\nfrom=-1\nchannels=9\n",
     "m.cfg:13: [partial_shortcut] channels gives c=9 channels, but it must be in 1..8 (previous layer 8x32x32, from layer 0 8x32x32)"),
])
def test_errors_name_file_line_and_reason(text, msg):
    with pytest.raises(CfgError) as e:
        net(text)
    assert str(e.value) == msg


def test_first_section_must_be_net():
    with pytest.raises(CfgError, match=r"^x.cfg:1: first section must be \[net\] or \[network\], not \[convolutional\]$"):
        network_from_text("[convolutional]\nfilters=2\n", path="x.cfg")


def test_option_before_section():
    with pytest.raises(CfgError, match=r"^x.cfg:1: option 'width=3' before any section$"):
        read_cfg_text("width=3\n[net]\n", "x.cfg")


def test_cli_error_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text(NET + "[convolutional]\nfilters=x\n")
    r = subprocess.run([sys.executable, "-m", "darknet_prn", "summary", str(bad)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"darknet-prn summary: error: {bad}:6: [convolutional] bad number for 'filters': 'x' is not an integer"]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_cli_missing_and_binary_cfg(tmp_path):
    r = subprocess.run([sys.executable, "-m", "darknet_prn", "summary", str(tmp_path / "no.cfg")], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().endswith("no.cfg: cfg file not found")
    b = tmp_path / "w.cfg"
    b.write_bytes(b"\x00\x00\x00\x00\x02\x00")
    r = subprocess.run([sys.executable, "-m", "darknet_prn", "summary", str(b)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and "not a text cfg file" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_partial_shortcut_shapes_and_counts():
    n = net(CONV + "[convolutional]\nfilters=16\nsize=1\n[partial_shortcut]\nfrom=-2\n"
            "[partial_shortcut]\nfrom=-1\nsparsity=0.5\n[partial_shortcut]\nfrom=-4,-1\nchannels=4\n")
    assert n.layers[2].p["channels"] == [8] and n.layers[2].out_shape == (16, 32, 32)
    assert n.layers[3].p["channels"] == [8]
    assert n.layers[4].p["channels"] == [4, 4]
    assert n.layers[4].bflops == pytest.approx(8 * 32 * 32 / 1e9)
    assert n.layers[2].weights_floats == 0


def test_partial_shortcut_both_keys_rejected():
    with pytest.raises(CfgError, match="give at most one of 'channels' and 'sparsity'"):
        net(CONV + "[partial_shortcut]\nfrom=-1\nchannels=2\nsparsity=0.5\n")


def test_strided_shortcut_fallback_warns():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", CfgWarning)
        n = net(CONV + "[maxpool]\nsize=2\nstride=2\n[shortcut]\nfrom=0\n")
    assert n.layers[2].p["strided"]
    assert any("pjreddie's strided shortcut" in str(x.message) for x in w)
