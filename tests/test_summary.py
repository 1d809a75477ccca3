"""Summary totals equal what Darknet prints for its whole cfg corpus (darknet_summary.tsv)."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import CORPUS, ROOT
from darknet_prn.graph import load_network
from darknet_prn.summary import summary_dict

ROWS = list(csv.DictReader(open(CORPUS / "darknet_summary.tsv"), delimiter="\t"))
PARSED = [r for r in ROWS if r["darknet_parses"] == "yes"]
FAILED = [r for r in ROWS if r["darknet_parses"] != "yes"]


def test_corpus_is_complete():
    assert len(ROWS) == 95 and len(FAILED) == 9


@pytest.mark.parametrize("row", PARSED, ids=lambda r: r["cfg"])
def test_totals_equal_darknet(row):
    net = load_network(CORPUS / row["cfg"])
    assert f"{net.bflops:.3f}" == row["bflops_printed"]
    assert net.bflops == pytest.approx(float(row["bflops"]), abs=2e-6)
    assert net.weights_floats == int(row["weights_floats"])
    assert net.running_floats == int(row["running_stat_floats"])
    assert len(net.layers) == int(row["layers"])
    assert (net.width, net.height) == (int(row["native_width"]), int(row["native_height"]))


# what we report for the cfgs Darknet itself cannot parse (RNN family: SIGFPE; ResNets: strided shortcut)
EXPECTED_FAILED = {
    "resnet50.cfg": (10.007, 22825896), "resnet101.cfg": (19.709, 41870248), "resnet152.cfg": (29.412, 57559976),
    "resnext152-32x4d.cfg": (28.238, 56730920), "rnn.cfg": (0.0, 8950016), "rnn.train.cfg": (0.0, 8950016),
    "gru.cfg": (0.0, 16851200), "lstm.train.cfg": (0.0, 22380800), "crnn.train.cfg": (0.017, 9015808),
}


@pytest.mark.parametrize("row", FAILED, ids=lambda r: r["cfg"])
def test_cfgs_darknet_rejects_still_summarise(row):
    net = load_network(CORPUS / row["cfg"])
    bf, floats = EXPECTED_FAILED[row["cfg"]]
    assert f"{net.bflops:.3f}" == f"{bf:.3f}" and net.weights_floats == floats


def test_resnet50_is_sensible():
    # torchvision's ResNet-50 has 25.6M parameters and ~4.1 GMACs at 224 (8.2 BFLOPs); Darknet's cfg has
    # a 256 input and BN running statistics in its float count
    net = load_network(CORPUS / "resnet50.cfg")
    assert 22e6 < net.params < 26.5e6
    assert 8 < net.bflops < 12
    assert net.layers[-1].type in ("softmax", "cost")


def test_width_height_override():
    a = load_network(CORPUS / "yolov3-tiny.cfg", width=320, height=320)
    assert a.input_shape == (3, 320, 320)
    assert a.layers[16].out_shape == (255, 10, 10)
    assert f"{a.bflops:.3f}" == "3.296"


def test_cli_summary_json_and_table():
    cfg = str(CORPUS / "yolov3-tiny-prn.cfg")
    out = subprocess.run([sys.executable, "-m", "darknet_prn", "summary", cfg, "--json"], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    d = json.loads(out)
    assert d["bflops"] == pytest.approx(3.466961, abs=1e-6)
    assert d["weights_floats"] == 4939758 and d["params"] == 4939758 - 4576
    assert len(d["layers"]) == 28 and d["layers"][13]["type"] == "shortcut" and d["layers"][13]["from"] == [10]
    assert d["layers"][0]["output"] == [16, 416, 416]
    table = subprocess.run([sys.executable, "-m", "darknet_prn", "summary", cfg, "--width", "320", "--height", "320"],
                           capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "Total BFLOPS 2.051" in table and " 320 x 320 x    3" in table


def test_summary_dict_matches_network():
    net = load_network(CORPUS / "yolov4-tiny.cfg")
    d = summary_dict(net)
    assert sum(l["weights_floats"] for l in d["layers"]) == d["weights_floats"] == 6062814
    assert d["outputs"] == [30, 37]
