"""The .weights codec: byte-identical round trips, header versions, transpose, and exact size errors."""
import hashlib
import struct
import warnings

import numpy as np
import pytest
import torch

from conftest import CORPUS
from darknet_prn import Darknet
from darknet_prn.errors import WeightsError
from darknet_prn.weights import WarningLoad

SMALL = """[net]
width=8
height=8
channels=3
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
[convolutional]
filters=6
size=1
flipped=1
activation=linear
[connected]
output=5
activation=linear
[connected]
output=3
batch_normalize=1
activation=leaky
"""


def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def write_file(path, header, floats):
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.asarray(floats, dtype="<f4").tobytes())


def small(arena=True):
    """The SMALL net; ``arena=False`` replaces one parameter, so that loads take the per-array path."""
    net = Darknet.from_cfg_text(SMALL, path="small.cfg")
    assert net._arena.valid()
    if not arena:
        net.layers[3].biases = torch.nn.Parameter(torch.zeros(3))
        assert not net._arena.valid()
    return net


@pytest.fixture(params=[True, False], ids=["arena", "per-array"])
def arena(request):
    """Loads through the one-read arena path and through the per-array path."""
    return request.param


def test_real_yolov3_tiny_roundtrip_sha256(real_tiny, tmp_path):
    net = Darknet.from_cfg(real_tiny["cfg"])
    h = net.load_weights(real_tiny["weights"])
    assert (h.major, h.minor, h.revision, h.seen) == (0, 2, 0, 32013312)
    net.save_weights(tmp_path / "copy.weights")
    assert sha(tmp_path / "copy.weights") == sha(real_tiny["weights"]) == \
        "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"


@pytest.mark.parametrize("header", [struct.pack("<iiiQ", 0, 2, 5, 1234), struct.pack("<iiiI", 0, 1, 0, 77),
                                    struct.pack("<iiiQ", 1, 0, 0, 5)])
def test_header_versions_roundtrip(tmp_path, header, arena):
    net = small(arena)
    n = net.graph.weights_floats
    data = np.random.default_rng(0).standard_normal(n).astype("<f4")
    write_file(tmp_path / "a.weights", header, data)
    net.load_weights(tmp_path / "a.weights")
    net.save_weights(tmp_path / "b.weights")
    assert (tmp_path / "b.weights").read_bytes() == (tmp_path / "a.weights").read_bytes()


def test_file_order_and_transposes(tmp_path, arena):
    net = small(arena)
    n = net.graph.weights_floats
    data = np.arange(n, dtype="<f4")
    # conv0: biases 4, scales 4, mean 4, var 4, weights 4*3*9; conv1 (flipped): biases 6, weights [K=4][n=6]
    write_file(tmp_path / "a.weights", struct.pack("<iiiQ", 0, 2, 5, 0), data)
    net.load_weights(tmp_path / "a.weights")
    L = net.layers
    assert L[0].biases.tolist() == [0, 1, 2, 3] and L[0].rolling_variance.tolist() == [12, 13, 14, 15]
    assert L[0].weights.flatten()[:2].tolist() == [16, 17]
    off = 16 + 108 + 6
    assert L[1].biases.tolist() == list(range(124, 130))
    assert L[1].weights[:, 0, 0, 0].tolist() == list(range(off, off + 6))     # file holds [K][n]
    # connected: biases, weights [out][in], then scales/mean/var (after the weights)
    off = 130 + 24
    assert L[2].biases.tolist() == list(range(off, off + 5))
    assert L[2].weights[0, :2].tolist() == [off + 5, off + 6]
    off3 = off + 5 + 5 * 384
    assert L[3].scales.tolist() == list(range(off3 + 3 + 15, off3 + 3 + 18))
    # a transposed header (major > 1000) stores connected weights as [in][out]
    write_file(tmp_path / "t.weights", struct.pack("<iiiQ", 1001, 2, 0, 0), data)
    net.load_weights(tmp_path / "t.weights")
    assert L[2].weights[:2, 0].tolist() == [off + 5, off + 6]
    net.save_weights(tmp_path / "t2.weights")
    assert (tmp_path / "t2.weights").read_bytes() == (tmp_path / "t.weights").read_bytes()


def test_arena_views_are_the_parameters(tmp_path):
    """The arrays are views of one tensor in file order: one read fills them, a write to any of them bumps one
    version counter, and a moved/cast or re-assigned model falls back to the per-array path."""
    net = small()
    arena = net._arena
    n = net.graph.weights_floats
    assert arena.flat.numel() == n
    data = np.random.default_rng(3).standard_normal(n).astype("<f4")
    write_file(tmp_path / "a.weights", struct.pack("<iiiQ", 0, 2, 5, 0), data)
    net.load_weights(tmp_path / "a.weights")
    ref = small(arena=False)
    ref.load_weights(tmp_path / "a.weights")
    for (k, a), (_, b) in zip(net.state_dict().items(), ref.state_dict().items()):
        if k != "layers.3.biases":
            assert torch.equal(a, b), k
    assert torch.equal(net.layers[3].biases, ref.layers[3].biases)
    v = arena.fingerprint()
    with torch.no_grad():
        net.layers[1].biases.add_(1)
    assert arena.fingerprint() != v
    net.double()
    assert not arena.valid()
    net.load_weights(tmp_path / "a.weights")
    assert net.layers[0].weights.dtype == torch.float64
    assert torch.equal(net.layers[0].weights.float(), ref.layers[0].weights)


def test_too_short_names_counts_and_layer(tmp_path):
    net = small()
    n = net.graph.weights_floats
    write_file(tmp_path / "s.weights", struct.pack("<iiiQ", 0, 2, 5, 0), np.zeros(100, "<f4"))
    with pytest.raises(WeightsError) as e:
        net.load_weights(tmp_path / "s.weights")
    assert str(e.value) == (f"{tmp_path / 's.weights'}: too short: the cfg needs {n:,} floats, the file has 100; "
                            "it runs out at layer 0 [convolutional] (small.cfg:5), array 'weights' (84 of 108 floats "
                            "present); pass partial=True / --partial to load what fits")


def test_too_long_is_an_error(tmp_path):
    net = small()
    n = net.graph.weights_floats
    write_file(tmp_path / "l.weights", struct.pack("<iiiQ", 0, 2, 5, 0), np.zeros(n + 3, "<f4"))
    with pytest.raises(WeightsError, match=rf"too long: the cfg needs {n:,} floats, the file has {n + 3:,} "):
        net.load_weights(tmp_path / "l.weights")


def test_partial_load_warns_and_loads_what_fits(tmp_path):
    net = small()
    write_file(tmp_path / "s.weights", struct.pack("<iiiQ", 0, 2, 5, 0), np.arange(20, dtype="<f4"))
    before = net.layers[1].biases.detach().clone()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        net.load_weights(tmp_path / "s.weights", partial=True)
    assert any(issubclass(x.category, WarningLoad) and "loaded what fits" in str(x.message) for x in w)
    assert net.layers[0].biases.tolist() == [0, 1, 2, 3]
    assert net.layers[0].weights.flatten()[:4].tolist() == [16, 17, 18, 19]
    assert torch.equal(net.layers[1].biases, before)


def test_bad_files(tmp_path):
    net = small()
    with pytest.raises(WeightsError, match=r"no\.weights: weights file not found$"):
        net.load_weights(tmp_path / "no.weights")
    (tmp_path / "tiny.weights").write_bytes(b"\x00\x01")
    with pytest.raises(WeightsError, match=r"too short for a \.weights header \(2 bytes\)"):
        net.load_weights(tmp_path / "tiny.weights")


def test_unwritable_path_leaves_nothing(tmp_path):
    net = small()
    with pytest.raises(WeightsError, match="cannot write weights"):
        net.save_weights(tmp_path / "missing_dir" / "x.weights")
    assert not (tmp_path / "missing_dir").exists()


def test_state_dict_checkpoint(tmp_path):
    net = Darknet.from_cfg(CORPUS / "yolov3-tiny-prn.cfg", width=64, height=64).eval()
    net.save_weights(tmp_path / "r.weights")
    net.save_checkpoint(tmp_path / "ck.pt")
    back = Darknet.load_checkpoint(tmp_path / "ck.pt").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(net(x), back(x)):
            assert torch.equal(a, b)
    back.save_weights(tmp_path / "r2.weights")
    assert (tmp_path / "r2.weights").read_bytes() == (tmp_path / "r.weights").read_bytes()
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(Exception, match="not a darknet-prn checkpoint"):
        Darknet.load_checkpoint(tmp_path / "junk.pt")


def test_recurrent_layers_load_and_save(tmp_path):
    for name in ("rnn.cfg", "gru.cfg", "lstm.train.cfg", "crnn.train.cfg"):
        net = Darknet.from_cfg(CORPUS / name)
        n = net.graph.weights_floats
        data = np.random.default_rng(1).standard_normal(n).astype("<f4")
        write_file(tmp_path / "r.weights", struct.pack("<iiiQ", 0, 2, 5, 0), data)
        net.load_weights(tmp_path / "r.weights")
        net.save_weights(tmp_path / "r2.weights")
        assert (tmp_path / "r2.weights").read_bytes() == (tmp_path / "r.weights").read_bytes(), name
