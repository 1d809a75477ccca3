"""The training loop's rules (multi-scale size, checkpoint cadence, scale-out split) and, where the training
step and the dataset module are present, `darknet-prn train` end to end: checkpoints, resume, logs, DDP."""
import os
import subprocess
import sys

import numpy as np
import pytest

from darknet_prn.errors import DarknetError
from darknet_prn.train.trainer import checkpoint_names, split_subdivisions

TINY = os.path.join(os.path.dirname(__file__), "data", "tiny-train.cfg")


class _Rng:
    """rand_scale(rng, s) draws rng.random() then rng.integers(0, 2)."""
    def __init__(self, u, keep):
        self.u, self.keep = u, keep

    def random(self):
        return self.u

    def integers(self, lo, hi):
        return self.keep


def test_random_size_rule():
    from darknet_prn.train.loader import random_size
    # val = 1 (u = 0): round(416/32 + 1)*32 = 448 (Darknet's "+1")
    assert random_size(_Rng(0.0, 1), 416, 416, 1, 32, 50, 1000, first=False) == (448, 448)
    # val = 1/1.4: round(0.714*13 + 1) = 10 -> 320
    assert random_size(_Rng(1.0, 0), 416, 416, 1, 32, 50, 1000, first=False) == (320, 320)
    # val = 1.4: round(19.2) = 19 -> 608, also the first resize and the last 100 iterations
    assert random_size(_Rng(1.0, 1), 416, 416, 1, 32, 50, 1000, first=False) == (608, 608)
    assert random_size(_Rng(1.0, 0), 416, 416, 1, 32, 50, 1000, first=True) == (608, 608)
    assert random_size(_Rng(1.0, 0), 416, 416, 1, 32, 901, 1000, first=False) == (608, 608)
    # random=1.2 is the coefficient itself; scaling down that rounds up to more than the size -> the size
    assert random_size(_Rng(0.0, 0), 416, 416, 1.2, 32, 50, 1000, first=False) == (448, 448)


def test_checkpoint_cadence():
    assert checkpoint_names(100, 5000) == ["_last"]
    assert checkpoint_names(1000, 5000, iter_save=0, iter_save_last=900) == ["_1000", "_last"]
    assert checkpoint_names(1000, 20000, iter_save_last=900) == ["_last"]      # _N every 10000 past 10000
    assert checkpoint_names(10000, 20000, iter_save_last=9900) == ["_10000", "_last"]
    assert checkpoint_names(150, 5000, iter_save_last=100) == []
    assert checkpoint_names(1, 5000) == []


def test_split_subdivisions():
    assert split_subdivisions(64, 8, 1) == (8, 8)
    assert split_subdivisions(64, 8, 2) == (8, 4)       # same forward size as one process, half the forwards
    assert split_subdivisions(64, 1, 2) == (32, 1)
    with pytest.raises(DarknetError, match="cannot be shared"):
        split_subdivisions(10, 3, 2)


def _have_training():
    try:
        from darknet_prn.train import DarknetOptimizer  # noqa: F401
        import darknet_prn.dataset  # noqa: F401
    except ImportError:
        return False
    return True


needs_training = pytest.mark.skipif(not _have_training(), reason="needs the training step and darknet_prn.dataset")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from darknet_prn.train.synthetic import generate
    root = tmp_path_factory.mktemp("tiny")
    data = generate(root, n=16, classes=3, size=64, seed=1)
    with open(data, "a") as f:
        f.write("saveweights = 4\nsavelast = 2\n")
    return root, data


def _train(*args, env=None):
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "darknet_prn", "train", *args], capture_output=True, text=True,
                          env=e, timeout=300)


@pytest.mark.slow
@needs_training
def test_train_checkpoints_resume_and_logs(tiny_data, tmp_path):
    root, data = tiny_data
    bk = tmp_path / "bk"
    r = _train(data, TINY, "--workers", "0", "--max-batches", "4", "--backup", str(bk), "--map", "--map-every", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("mean_average_precision (mAP@0.50) = ") == 2 and "New best mAP!" in r.stdout
    lines = [l for l in r.stdout.splitlines() if "avg loss" in l]
    assert [l.split(":")[0].strip() for l in lines] == ["1", "2", "3", "4"]
    assert "rate" in lines[0] and "seconds" in lines[0] and "4 images" in lines[0]
    names = sorted(os.listdir(bk))
    assert {"tiny-train_last.weights", "tiny-train_4.weights", "tiny-train_final.weights", "chart.png",
            "tiny-train_log.csv", "tiny-train_best.weights"} <= set(names)
    assert not [n for n in names if n.endswith(".part") or n.startswith(".")]
    # the header counts seen images: resume continues the schedule at iteration 4
    from darknet_prn import Darknet
    net = Darknet.from_cfg(TINY)
    net.load_weights(bk / "tiny-train_final.weights")
    assert net.seen == 16
    r = _train(data, TINY, str(bk / "tiny-train_final.weights"), "--workers", "0", "--backup", str(bk))
    assert r.returncode == 0, r.stderr
    its = [l.split(":")[0].strip() for l in r.stdout.splitlines() if "avg loss" in l]
    assert its == ["5", "6"]
    # seen beyond max_batches: a clear message, nothing trained; --clear restarts at 0
    r = _train(data, TINY, str(bk / "tiny-train_final.weights"), "--workers", "0", "--backup", str(bk))
    assert r.returncode == 0 and "nothing to train" in r.stdout and "--clear" in r.stdout
    rows = open(bk / "tiny-train_log.csv").read().splitlines()
    assert rows[0].startswith("iteration,loss,avg_loss") and len(rows) == 1 + 6
    assert rows[2].split(",")[-1] != "" and rows[1].split(",")[-1] == ""      # mAP at iteration 2
    # the trained .weights load in OpenCV 4's Darknet importer with the same head inputs as ours
    cv2 = pytest.importorskip("cv2")
    if hasattr(cv2.dnn, "readNetFromDarknet") and int(cv2.__version__.split(".")[0]) < 5:
        import torch
        final = str(bk / "tiny-train_final.weights")
        net = Darknet.from_cfg(TINY).eval()
        net.load_weights(final)
        x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
        with torch.no_grad():
            outs = [o.numpy() for o in net.layer_outputs(torch.from_numpy(x))]
        cv = cv2.dnn.readNetFromDarknet(TINY, final)
        cv.setInput(x)
        (ref,) = cv.forward([f"conv_{net.output_layers[0] - 1}"])
        assert np.abs(ref - outs[net.output_layers[0] - 1]).max() / ref.std() < 2e-3


@needs_training
def test_bad_label_is_one_line(tiny_data, tmp_path, capsys):
    from darknet_prn.cli import main
    root, data = tiny_data
    lab = sorted((root / "labels").iterdir())[0]
    text = lab.read_text()
    try:
        lab.write_text(text + "7 0.5 0.5 0.1 0.1\n")
        assert main(["train", data, TINY, "--workers", "1", "--max-batches", "1", "--backup", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{lab}:" in err and "class id 7" in err
        assert not list(tmp_path.iterdir())          # nothing written
    finally:
        lab.write_text(text)


@pytest.mark.slow
def test_loader_reproducible_across_workers(tiny_data):
    import torch
    from darknet_prn.dataset import DataConfig
    from darknet_prn.train.augment import AugmentParams
    from darknet_prn.train.loader import batches, make_loader, read_training_set
    root, data = tiny_data
    d = DataConfig.read(data)
    p = AugmentParams.from_cfg(TINY)
    paths, labels = read_training_set(d.train, 3)
    got = []
    for workers in (0, 2):
        it = batches(make_loader(paths, labels, p, 2, 2, 3, start=1, seed=5, workers=workers))
        got.append([next(it) for _ in range(4)])
    for (xa, ta), (xb, tb) in zip(*got):
        assert xa.shape == (2, 3, 64, 64) and ta.shape == (2, 200, 5)
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
    # an undecodable image in a worker process: one DarknetError line in the main process
    bad = root / "JPEGImages" / "zz-bad.jpg"
    bad.write_bytes(b"not a jpeg")
    try:
        with pytest.raises(DarknetError, match="zz-bad.jpg: cannot decode image"):
            next(batches(make_loader([str(bad)], [np.zeros((0, 5), np.float32)], p, 1, 1, 1, workers=1)))
    finally:
        bad.unlink()


def _ddp_worker(rank, world, port, init_weights, out, k):
    import torch
    import torch.distributed as td
    from darknet_prn import Darknet
    from darknet_prn.train import DarknetOptimizer
    from darknet_prn.train.trainer import _LossModule, split_subdivisions, train_iteration
    torch.set_num_threads(1)
    if world > 1:
        td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    net = Darknet.from_cfg(TINY)
    net.load_weights(init_weights)
    net.train()
    opt = DarknetOptimizer(net)
    mini, subs = split_subdivisions(opt.batch, 2, world)
    model = _LossModule(net)
    no_sync = None
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
        no_sync = model.no_sync
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 64, 64, generator=g)
    truth = torch.zeros(4, 200, 5)
    truth[:, 0] = torch.tensor([0.3, 0.4, 0.2, 0.25, 1.0])
    truth[:, 1] = torch.tensor([0.7, 0.6, 0.3, 0.2, 2.0])
    truth[1:3, 1, 4] = 0.0
    # global mini-batches 0 and 1; rank r runs mini-batch r (the loader's DistributedSampler split)
    minis = [(x[2 * j:2 * j + 2], truth[2 * j:2 * j + 2]) for j in range(2)]
    mine = minis if world == 1 else [minis[rank]]
    for _ in range(k):
        train_iteration(model, opt, mine, world, no_sync)
    if rank == 0:
        torch.save({n: p.detach().clone() for n, p in net.named_parameters()}, out)
    if world > 1:
        td.destroy_process_group()


@needs_training
def test_ddp_two_processes_equal_one(tmp_path):
    import socket
    import torch
    import torch.multiprocessing as mp
    from darknet_prn import Darknet
    torch.manual_seed(0)
    init = tmp_path / "init.weights"
    Darknet.from_cfg(TINY).save_weights(init)
    _ddp_worker(0, 1, 0, str(init), str(tmp_path / "one.pt"), 3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(init), str(tmp_path / "two.pt"), 3), nprocs=2, join=True)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    net0 = Darknet.from_cfg(TINY)
    net0.load_weights(init)
    start = {n: p.detach() for n, p in net0.named_parameters()}
    assert one.keys() == two.keys()
    for n in one:
        moved = (one[n] - two[n]).abs().max().item()
        scale = one[n].abs().max().item() + 1e-12
        assert moved <= 1e-5 * scale + 1e-7, (n, moved, scale)
    assert all(not torch.equal(one[n], start[n]) for n in one)       # every parameter was trained


@pytest.mark.slow
@needs_training
def test_ctrl_c_saves_last(tiny_data, tmp_path):
    import signal
    import time
    root, data = tiny_data
    bk = tmp_path / "bk"
    p = subprocess.Popen([sys.executable, "-m", "darknet_prn", "train", data, TINY, "--workers", "1",
                          "--max-batches", "100000", "--backup", str(bk)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while time.time() < deadline:
        line = p.stdout.readline()
        if " 3: " in line:
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Saving weights to" in out and (bk / "tiny-train_last.weights").exists()
    assert "Traceback" not in err
    from darknet_prn import Darknet
    net = Darknet.from_cfg(TINY)
    net.load_weights(bk / "tiny-train_last.weights")
    assert net.seen % 4 == 0 and net.seen >= 12


def test_data_errors_are_one_line(tiny_data, tmp_path):
    from darknet_prn.dataset import DataConfig
    from darknet_prn.train.augment import AugmentParams
    from darknet_prn.train.loader import batches, make_loader, read_training_set
    root, data = tiny_data
    d = DataConfig.read(data)
    paths = open(d.train).read().split()
    lab = root / "labels" / (os.path.basename(paths[0])[:-4] + ".txt")
    text = lab.read_text()
    try:
        lab.write_text(text + "7 0.5 0.5 0.1 0.1\n")
        with pytest.raises(DarknetError, match=rf"{lab}:{len(text.splitlines()) + 1}: class id 7 out of range"):
            read_training_set(d.train, 3)
    finally:
        lab.write_text(text)
    # an image that cannot be decoded: the loader (worker or not) reports it as one DarknetError line
    bad = tmp_path / "JPEGImages" / "bad.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    lst = tmp_path / "list.txt"
    lst.write_text(f"{bad}\n")
    p, l = read_training_set(str(lst), 3, warn=False)
    with pytest.raises(DarknetError, match="bad.jpg: cannot decode image"):
        next(batches(make_loader(p, l, AugmentParams.from_cfg(TINY), 1, 1, 1, workers=0)))


def test_augment_cli(tiny_data, tmp_path, capsys):
    from darknet_prn.cli import main
    root, data = tiny_data
    out = tmp_path / "grid.png"
    assert main(["augment", data, TINY, "-n", "4", "-o", str(out)]) == 0
    import cv2
    img = cv2.imread(str(out))
    assert img.shape == (2 * 68, 2 * 68, 3)      # 2x2 tiles of 64 px + 4 px borders
    assert main(["augment", data, TINY, "-n", "4", "-o", str(tmp_path / "g.xyz")]) == 2
    assert "cannot encode" in capsys.readouterr().err


def test_size_schedule_blocks_of_ten():
    from darknet_prn.train.augment import AugmentParams
    from darknet_prn.train.loader import size_schedule
    p = AugmentParams.from_cfg("cfg/yolov3-tiny-prn.cfg")
    g = size_schedule(0, p, 0, 1000)
    s = [next(g) for _ in range(1000)]
    assert s[0] == (608, 608) and all(wh == (608, 608) for wh in s[910:])        # first and last 100: largest
    assert all(s[i] == s[i - i % 10] for i in range(1000))                         # a new size every 10
    assert {w for w, _ in s} <= set(range(320, 609, 32)) and len({w for w, _ in s}) > 5
    # a resumed run draws the sizes of an uninterrupted one (except its first block, the largest)
    g2 = size_schedule(0, p, 500, 1000)
    assert [next(g2) for _ in range(100)][10:] == s[510:600]
    p.random = 0
    assert next(size_schedule(0, p, 0, 1000)) == (416, 416)


@pytest.mark.slow
def test_logger_csv_chart_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from darknet_prn.train.trainer import Logger
    log = Logger(str(tmp_path), "m", str(tmp_path / "tb"), resume=False)
    for i in range(1, 4):
        log.add({"iteration": i, "loss": 10.0 / i, "avg_loss": 10.0 / i, "rate": 1e-3, "seconds": 0.1,
                 "load_seconds": 0.0, "images": 4 * i, "width": 64, "height": 64, "map": 0.5 if i == 3 else None})
    log.flush(10, "m")
    rows = (tmp_path / "m_log.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[3].endswith(",0.5") and rows[1].endswith(",")
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    again = Logger(str(tmp_path), "m", None, resume=True)
    assert [r["iteration"] for r in again.rows] == [1, 2, 3] and again.rows[2]["map"] == 0.5
