"""``darknet-prn train DATA CFG [WEIGHTS]``: Darknet's ``detector train`` loop (``detector.c``
``train_detector``) on one process, or data parallel under ``torchrun`` (DistributedDataParallel).

Per iteration: ``subdivisions`` mini-batches of ``batch/subdivisions`` images, gradients summed, one
Darknet update (``DarknetOptimizer``: schedule, burn_in, lr/batch, decay·batch). Resumes from the
``.weights`` header's ``seen`` (``--clear`` restarts at 0). Checkpoints in ``backup=`` of the ``.data``
file (or ``--backup``): ``<cfg>_last.weights`` every 100 iterations, ``<cfg>_N.weights`` every 1000 (every
10000 when ``max_batches`` ≥ 10000; ``saveweights=``/``savelast=`` in the ``.data`` file change them, as in
Darknet), ``_best`` on mAP with ``--map``, ``_final``; all atomic. Logs:
Darknet's per-iteration line, a tqdm bar with ETA, ``<backup>/<cfg>_log.csv``, ``chart.png`` (loss and mAP
against iterations), TensorBoard with ``--tensorboard DIR``. Ctrl-C saves ``_last`` and exits.

Scale-out rule (documented in the README): ``batch`` in the cfg stays the *global* batch (images per
update, what ``seen`` counts and the lr is divided by); each forward still sees ``batch/subdivisions``
images (BN statistics as on one process) and the ``subdivisions`` mini-batches are shared out over the N
processes (``subdivisions/N`` each; when ``subdivisions`` is not a multiple of N, every process runs all
``subdivisions`` with ``batch/subdivisions/N`` images). DDP's gradient mean is turned back into Darknet's sum,
so learning rate, ``burn_in`` and the schedule need no change: N processes compute the step one process
computes. BN running statistics are rank 0's (broadcast by DDP). No SyncBatchNorm: each forward already
sees the mini-batch one process would (and the model's batch-norm is functional, not ``nn.BatchNorm2d``)."""
from __future__ import annotations

import contextlib
import csv
import os
import signal
import sys
import threading
import time

import numpy as np
import torch

from ..errors import DarknetError
from ..fileio import atomic_write, open_input


# --- distributed -----------------------------------------------------------------------------------------

class Dist:
    """The process group under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), else one process."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as td
            backend = "nccl" if device == "cuda" else "gloo"
            if not td.is_initialized():
                td.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        import torch.distributed as td
        t = torch.tensor([value], dtype=torch.float64)
        td.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self):
        if self.enabled:
            import torch.distributed as td
            td.barrier()

    def close(self):
        if self.enabled:
            import torch.distributed as td
            if td.is_initialized():
                td.destroy_process_group()


def split_subdivisions(batch: int, subdivisions: int, world: int) -> tuple:
    """(mini-batch size, mini-batches per process per iteration) under the scale-out rule above."""
    if world > 1 and subdivisions % world == 0 and batch % subdivisions == 0:
        return batch // subdivisions, subdivisions // world
    if batch % (subdivisions * world):
        raise DarknetError(f"batch={batch} cannot be shared by subdivisions={subdivisions} × {world} processes: "
                           f"make subdivisions a multiple of {world} or batch a multiple of {subdivisions * world}")
    return batch // subdivisions // world, subdivisions


class _LossModule(torch.nn.Module):
    """The network's Darknet loss as a module, so DDP's forward/backward hooks see it."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, truth):
        loss, stats = self.net.loss(x, truth)
        return loss, float(stats.get("darknet_loss", loss.item()))


def truth_rows(truth: torch.Tensor) -> list:
    """(B, max, 5) ``x y w h class`` with zero rows after the last box -> list per image of (n, 5)."""
    out = []
    for t in truth.numpy():
        n = int(np.argmax(t[:, 0] == 0)) if (t[:, 0] == 0).any() else len(t)
        out.append(t[:n])
    return out


def train_iteration(model, opt, minibatches, world: int = 1, no_sync=None, device="cpu") -> tuple:
    """One Darknet iteration: forward+backward of each mini-batch (gradients accumulate), then the update.
    Returns (Darknet's printed loss of the iteration: the mean over mini-batches of ``train_network``'s
    value, the learning rate of the update)."""
    losses = []
    n = len(minibatches)
    for k, (x, truth) in enumerate(minibatches):
        ctx = no_sync() if (no_sync is not None and k < n - 1) else contextlib.nullcontext()
        with ctx:
            loss, shown = model(x.to(device, non_blocking=True), truth_rows(truth))
            loss.backward()
        losses.append(shown)
    if world > 1:           # DDP averaged the gradients over processes; Darknet sums over the batch
        for p in opt.net.parameters():
            if p.grad is not None:
                p.grad.mul_(world)
    rate = opt.step()
    opt.zero_grad()
    return float(np.mean(losses)), rate


# --- weights ---------------------------------------------------------------------------------------------

def load_start_weights(net, path) -> str:
    """Loads ``path``; a file shorter than the cfg (Darknet's ``partial`` prefix such as ``yolov4.conv.137``)
    loads the layers that fit. Returns a one-line summary."""
    import warnings
    from ..weights import WarningLoad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WarningLoad)
        header = net.load_weights(path, partial=True)
    total, done = len(net.graph.layers), int(getattr(net, "layers_loaded", len(net.graph.layers)))
    if done >= total:
        return f"loaded {path}: all {total} layers, seen {header.seen}"
    with_weights = sum(1 for l in net.graph.layers[:done] if l.weights_floats)
    return (f"loaded {path}: layers 0-{done - 1} of {total} ({with_weights} with weights; partial weights, "
            f"the rest keep their initial values), seen {header.seen}")


def resize_network(net, w: int, h: int) -> None:
    """Darknet's ``resize_network`` for multi-scale training: the same modules and parameters, the layer
    graph (shapes, the heads' network size) rebuilt for w×h."""
    if (net.graph.width, net.graph.height) == (w, h):
        return
    from ..graph import network_from_text
    net.graph = network_from_text(net.cfg_text, w, h, net.graph.path, warn=False)
    net.invalidate_fast_plan()


def checkpoint_names(iteration: int, max_batches: int, last_every: int = 100, save_every: int | None = None,
                     iter_save: int = 0, iter_save_last: int = 0) -> list:
    """Which of ``_N`` / ``_last`` Darknet writes after ``iteration`` (``train_detector``)."""
    save_every = save_every or (1000 if max_batches < 10000 else 10000)
    out = []
    if iteration >= iter_save + save_every or iteration % save_every == 0:
        out.append(f"_{iteration}")
    if save_every > last_every and (iteration >= iter_save_last + last_every or
                                    (iteration % last_every == 0 and iteration > 1)):
        out.append("_last")
    return out


# --- logs ------------------------------------------------------------------------------------------------

def draw_chart(path, rows, max_batches: int, title: str) -> None:
    """``chart.png``: avg loss (and mAP on a second axis) against iterations, as Darknet's chart."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    its = [r["iteration"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    ax.plot(its, [r["avg_loss"] for r in rows], color="tab:blue", lw=1, label="avg loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("avg loss", color="tab:blue")
    ax.set_xlim(0, max_batches)
    ax.grid(alpha=0.3)
    maps = [(r["iteration"], r["map"]) for r in rows if r.get("map") not in (None, "")]
    if maps:
        ax2 = ax.twinx()
        ax2.plot([m[0] for m in maps], [100 * float(m[1]) for m in maps], "o-", color="tab:red", label="mAP@0.5")
        ax2.set_ylabel("mAP@0.5 %", color="tab:red")
        ax2.set_ylim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()), "chart")


class Logger:
    FIELDS = ("iteration", "loss", "avg_loss", "rate", "seconds", "load_seconds", "images", "width", "height", "map")

    def __init__(self, backup: str, base: str, tensorboard: str | None, resume: bool):
        self.csv_path = os.path.join(backup, f"{base}_log.csv")
        self.chart_path = os.path.join(backup, "chart.png")
        self.rows = []
        if resume and os.path.exists(self.csv_path):
            with open(self.csv_path, newline="") as f:
                for r in csv.DictReader(f):
                    row = {k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
                    for k in ("iteration", "images", "width", "height"):
                        row[k] = int(row[k]) if row.get(k) is not None else None
                    self.rows.append(row)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise DarknetError("--tensorboard needs tensorboard: pip install 'darknet-prn[train]'") from None
            self.tb = SummaryWriter(tensorboard)

    def add(self, row: dict):
        self.rows.append(row)
        if self.tb is not None:
            for k in ("loss", "avg_loss", "rate"):
                self.tb.add_scalar(f"train/{k}", row[k], row["iteration"])
            if row.get("map") is not None:
                self.tb.add_scalar("val/mAP@0.5", row["map"], row["iteration"])

    def flush(self, max_batches: int, title: str):
        def write(f):
            import io
            s = io.StringIO()
            w = csv.DictWriter(s, fieldnames=self.FIELDS)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in self.FIELDS})
            f.write(s.getvalue().encode())
        atomic_write(self.csv_path, write, "log")
        draw_chart(self.chart_path, self.rows, max_batches, title)
        if self.tb is not None:
            self.tb.flush()


# --- mAP -------------------------------------------------------------------------------------------------

def map_of(net, data_path, cfg_path, tmp_weights, device) -> float:
    """mAP@0.5 of the training network on the ``valid=`` list, as ``train -map`` computes it: the weights
    written to ``tmp_weights`` and scored by ``darknet_prn.evaluation`` (Darknet's ``detector map``)."""
    from ..evaluation import evaluate
    net.save_weights(tmp_weights)
    return float(evaluate(data_path, cfg_path, tmp_weights, device=device, progress=False).map)


# --- the command -----------------------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("data", help="Darknet .data file (classes, train, valid, names, backup)")
    parser.add_argument("cfg", help="network cfg ([net] batch, subdivisions, max_batches, schedule, augmentation)")
    parser.add_argument("weights", nargs="?", help="starting .weights: a checkpoint (resumes at its `seen`) or "
                                                  "a partial prefix such as yolov4.conv.137")
    parser.add_argument("--map", action="store_true", help="compute mAP@0.5 on valid= as Darknet's -map; keep _best")
    parser.add_argument("--clear", action="store_true", help="restart the iteration counter (seen = 0)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes (default 2; 0 = in process)")
    parser.add_argument("--max-batches", type=int, help="override [net] max_batches")
    parser.add_argument("--backup", help="checkpoint folder (default: backup= of the .data file)")
    parser.add_argument("--seed", type=int, default=0, help="data order and augmentation seed (default 0)")
    parser.add_argument("--map-every", type=int, help="iterations between mAP runs (Darknet: max(100, 1 epoch))")
    parser.add_argument("--tensorboard", metavar="DIR", help="also log to TensorBoard in DIR")
    parser.add_argument("--quiet", action="store_true", help="no per-iteration lines (progress bar only)")


def run(args) -> int:
    from ..dataset import DataConfig
    from ..model import Darknet
    from . import DarknetOptimizer
    from .augment import AugmentParams
    from .loader import batches, make_loader, read_training_set

    dev = args.device
    if dev != "cpu" and not dev.startswith("cuda"):
        raise DarknetError(f"--device {dev}: use cpu or cuda")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise DarknetError("--device cuda: no CUDA device is available")
    dist = Dist("cuda" if dev.startswith("cuda") else "cpu")
    if dist.enabled and dev == "cuda":
        dev = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(dist.local_rank)
    say = print if dist.main else (lambda *a, **k: None)
    try:
        data = DataConfig.read(args.data)
        params = AugmentParams.from_cfg(args.cfg)
        classes = data.classes or params.classes
        if data.classes is not None and data.classes != params.classes:
            raise DarknetError(f"classes={data.classes} but the cfg's last head has classes={params.classes}",
                               args.data, data.line("classes"))
        net = Darknet.from_cfg(args.cfg)
        if args.weights:
            say(load_start_weights(net, args.weights))
        if args.clear:
            net.seen = 0
        net.to(dev)
        net.train()
        opt = DarknetOptimizer(net, **({"max_batches": args.max_batches} if args.max_batches else {}))
        max_batches = int(opt.max_batches or 0)
        if max_batches <= 0:
            raise DarknetError("[net] max_batches is not set (or use --max-batches N)", args.cfg)
        batch, subdivisions = opt.batch, _subdivisions(net)
        start = opt.iteration
        base = os.path.splitext(os.path.basename(args.cfg))[0]
        backup = args.backup or data.backup
        if dist.main:
            try:
                os.makedirs(backup, exist_ok=True)
            except OSError as e:
                raise DarknetError(f"cannot create the backup folder: {e.strerror or e}", backup) from None
        if start >= max_batches:
            say(f"{args.weights}: seen={net.seen} is iteration {start} >= max_batches={max_batches}: nothing to "
                f"train (Darknet's 'training ends immediately'); pass --clear to start the counter at 0")
            return 0
        paths, labels = read_training_set(data.train, classes, warn=dist.main)
        valid = data.valid if args.map else None
        mini, local_subs = split_subdivisions(batch, subdivisions, dist.world)
        loader = make_loader(paths, labels, params, mini, local_subs, max_batches, start, args.seed, args.workers,
                             dist.world, dist.rank)
        model = _LossModule(net)
        no_sync = None
        if dist.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dist.local_rank] if dev.startswith("cuda") else None)
            no_sync = model.no_sync
        logger = Logger(backup, base, args.tensorboard if dist.main else None, resume=start > 0) if dist.main else None
        say(f"{base}: {len(paths)} training images, batch {batch} = {subdivisions} × {batch // subdivisions}"
            f"{f' over {dist.world} processes' if dist.enabled else ''}, iterations {start} -> {max_batches}, "
            f"learning rate {opt.schedule.learning_rate:g}, device {dev}")
        return _loop(args, net, opt, model, no_sync, loader, batches, dist, say, logger, data, valid, classes,
                     base, backup, start, max_batches, local_subs, dev)
    finally:
        dist.close()


def _subdivisions(net) -> int:
    from .optim import net_section
    return net_section(net).get_int("subdivisions", 1)


def _save(net, dist, path, say):
    if dist.main:
        net.save_weights(path)
        say(f"Saving weights to {path}")


def _loop(args, net, opt, model, no_sync, loader, batches, dist, say, logger, data, valid, classes, base, backup,
          start, max_batches, local_subs, dev):
    from tqdm import tqdm
    stream = batches(loader)
    avg_loss = -1.0
    best_map = -1.0
    last_map = None
    iter_save = iter_save_last = iter_map = start
    map_every = args.map_every or max(100, len(loader.dataset) // opt.batch)
    # Darknet's .data options saveweights= (default 1000, 10000 from max_batches 10000) and savelast= (100)
    save_every = data.get_int("saveweights", 1000 if max_batches < 10000 else 10000)
    save_last = data.get_int("savelast", 100)
    bar = tqdm(total=max_batches, initial=start, unit="it", disable=not dist.main or not sys.stderr.isatty(),
               dynamic_ncols=True)
    # Ctrl-C: the iteration under way finishes, _last is written, exit (a second Ctrl-C stops at once);
    # the loader's workers ignore SIGINT (loader._worker_init)
    stop = []

    def on_sigint(signum, frame):
        stop.append(signum)
        if len(stop) > 1:
            raise KeyboardInterrupt
        say("\nCtrl-C: finishing this iteration, then saving _last (Ctrl-C again to stop now)")
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    interrupted = False
    iteration = start
    try:
        while iteration < max_batches and not stop:
            t0 = time.time()
            try:
                minis = [next(stream) for _ in range(local_subs)]
            except RuntimeError:
                if stop:
                    break
                raise
            load_s = time.time() - t0
            w, h = minis[0][0].shape[3], minis[0][0].shape[2]
            resize_network(net, w, h)
            t1 = time.time()
            loss, rate = train_iteration(model, opt, minis, dist.world, no_sync, dev)
            loss = dist.mean(loss)
            secs = time.time() - t1
            iteration = opt.iteration
            if avg_loss < 0 or avg_loss != avg_loss:
                avg_loss = loss
            avg_loss = avg_loss * 0.9 + loss * 0.1
            bar.update(1)
            hours = (max_batches - iteration) * (secs + load_s) / 3600
            if not args.quiet:
                line = (f" {iteration}: {loss:f}, {avg_loss:f} avg loss, {rate:f} rate, {secs:f} seconds, "
                        f"{iteration * opt.batch} images, {hours:f} hours left")
                if bar.disable:
                    say(line)
                else:
                    bar.write(line)
            row = {"iteration": iteration, "loss": loss, "avg_loss": avg_loss, "rate": rate, "seconds": secs,
                   "load_seconds": load_s, "images": iteration * opt.batch, "width": w, "height": h, "map": None}
            if valid and (iteration >= max(iter_map + map_every, _burn_in(opt)) or iteration == max_batches):
                iter_map = iteration
                resize_network(net, *_init_size(net, args))
                if dist.main:
                    tmp = os.path.join(backup, f".{base}_map.weights")
                    last_map = map_of(net, args.data, args.cfg, tmp, dev)
                    row["map"] = last_map
                    say(f"\n mean_average_precision (mAP@0.50) = {last_map:f}")
                    if last_map >= best_map:
                        best_map = last_map
                        say("New best mAP!")
                        best = os.path.join(backup, f"{base}_best.weights")
                        os.replace(tmp, best)             # the weights just scored, atomically
                        say(f"Saving weights to {best}")
                    else:
                        os.remove(tmp)
                dist.barrier()
            if logger is not None:
                logger.add(row)
            names = checkpoint_names(iteration, max_batches, save_last, save_every, iter_save, iter_save_last)
            for suffix in names:
                if suffix == "_last":
                    iter_save_last = iteration
                else:
                    iter_save = iteration
                _save(net, dist, os.path.join(backup, f"{base}{suffix}.weights"), say)
            if names and logger is not None:
                logger.flush(max_batches, base)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    if interrupted or stop:
        _save(net, dist, os.path.join(backup, f"{base}_last.weights"), say)
        if logger is not None:
            logger.flush(max_batches, base)
        say(f"interrupted at iteration {opt.iteration}: resume with the _last weights")
        return 130
    _save(net, dist, os.path.join(backup, f"{base}_final.weights"), say)
    if logger is not None:
        logger.flush(max_batches, base)
    say("If you want to train from the beginning, then use flag in the end of training command: --clear")
    return 0


def _burn_in(opt) -> int:
    return int(opt.schedule.burn_in or 0)


def _init_size(net, args):
    from ..cfg import read_cfg_text
    s = read_cfg_text(net.cfg_text, args.cfg)[0]
    return s.get_int("width", net.graph.width), s.get_int("height", net.graph.height)
