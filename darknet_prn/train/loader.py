"""The training data pipeline: a ``torch.utils.data`` dataset of Darknet-augmented samples, a batch sampler
with Darknet's multi-scale rule, and the DataLoader that runs them in worker processes.

* Labels are read and checked in the main process before any worker starts (bad label -> one-line
  ``file:line`` error, missing label file -> no objects, counted in one summary line; ``dataset.py``).
* Every sample gets its own seed from (seed, iteration, slot), so a run is reproducible whatever the number
  of workers, and a resumed run draws what an uninterrupted one would have drawn for those iterations.
* ``random=1`` (the last head): every 10 iterations a new network size by Darknet's ``train_detector`` rule
  (:func:`random_size`); the first and the last 100 iterations use the largest.
* One batch the loader yields is one mini-batch of one process (``trainer.split_subdivisions``: the
  images of one forward); the process's share of ``subdivisions`` of them make an iteration."""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.utils.data as tud

from ..errors import DarknetError
from .augment import AugmentParams, load_sample, rand_scale


def random_size(rng, init_w: int, init_h: int, random: float, resize_step: int, iteration: int,
                max_batches: int, first: bool) -> tuple:
    """``train_detector``'s resize rule: ``round(rand_scale(coef)·size/step + 1)·step`` with coef 1.4 for
    ``random=1`` (else ``random``), back to the initial size when scaling down came out bigger, the largest
    size (``round(coef·size/step + 1)·step``) at the first resize and for the last 100 iterations."""
    coef = 1.4 if random == 1.0 else random
    val = rand_scale(rng, coef)
    step = resize_step

    def rnd(v):                       # C roundl: half away from zero
        return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))
    dim_w, dim_h = rnd(val * init_w / step + 1) * step, rnd(val * init_h / step + 1) * step
    if val < 1 and (dim_w > init_w or dim_h > init_h):
        dim_w, dim_h = init_w, init_h
    if first or iteration > max_batches - 100:
        dim_w, dim_h = rnd(coef * init_w / step + 1) * step, rnd(coef * init_h / step + 1) * step
    return max(dim_w, step), max(dim_h, step)


def size_schedule(seed: int, params: AugmentParams, start: int, max_batches: int):
    """Yields the network (w, h) of every iteration from ``start`` on (a new size every 10 iterations with
    ``random``, else the cfg's)."""
    if not params.random:
        while True:
            yield params.width, params.height
    wh = None
    it = start
    while True:
        if (it - start) % 10 == 0:
            rng = np.random.default_rng([seed, 0x5CA1E, it])
            wh = random_size(rng, params.width, params.height, params.random, params.resize_step, it,
                             max_batches, first=(it == start))
        yield wh
        it += 1


class DetectionDataset(tud.Dataset):
    """Items are ``(index, w, h, seed)`` tuples (from :class:`TrainBatchSampler`): the augmented image
    ``index`` at network size w×h with its own seed. Returns (image float32 (3, h, w), truth (max, 5)
    ``x y w h class``, error message or None)."""

    def __init__(self, image_paths: list, labels: list, params: AugmentParams):
        self.paths = list(image_paths)
        self.labels = labels
        self.params = params

    def __len__(self):
        return len(self.paths)

    def load(self, i: int):
        import cv2
        path = self.paths[i]
        img = cv2.imread(path, cv2.IMREAD_COLOR)      # Darknet: load_image_mat_cv (OpenCV, BGR -> RGB)
        if img is None:
            if not os.path.exists(path):
                raise DarknetError("image not found (listed in the train list)", path)
            raise DarknetError("cannot decode image", path)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), self.labels[i]

    def __getitem__(self, item):
        index, w, h, seed = item
        try:
            img, truth = load_sample(index, len(self.paths), self.load, self.params, np.random.default_rng(seed), w, h)
            return img, truth, None
        except DarknetError as e:        # reported by the main process as one line, not a worker traceback
            c = self.params.channels
            return np.zeros((c, h, w), np.float32), np.zeros((self.params.max_boxes, 5), np.float32), str(e)


def collate(items):
    errors = [e for _, _, e in items if e]
    if errors:
        return errors[0]
    return (torch.from_numpy(np.stack([a for a, _, _ in items])),
            torch.from_numpy(np.stack([t for _, t, _ in items])))


class TrainBatchSampler(tud.Sampler):
    """Yields the ``subdivisions`` mini-batches of ``mini`` images of one process, iteration after iteration
    from ``start``: each a list of
    ``(index, w, h, seed)``. Indices come from ``torch.utils.data.DistributedSampler`` (shuffled per epoch,
    split over ``world_size`` ranks; world_size 1 for one process)."""

    def __init__(self, n_images: int, params: AugmentParams, mini: int, subdivisions: int, max_batches: int,
                 start: int = 0, seed: int = 0, world_size: int = 1, rank: int = 0):
        self.mini = mini
        self.params, self.subdivisions, self.max_batches = params, subdivisions, max_batches
        self.start, self.seed, self.world_size, self.rank = start, seed, world_size, rank
        self.n_images = n_images
        self.index_sampler = tud.DistributedSampler(range(n_images), num_replicas=world_size, rank=rank,
                                                    shuffle=True, seed=seed, drop_last=False)

    def _indices(self):
        per_rank = len(self.index_sampler)
        skip = self.start * self.subdivisions * self.mini       # resume: where the stream would be
        epoch, offset = divmod(skip, per_rank)
        while True:
            self.index_sampler.set_epoch(epoch)
            idx = list(self.index_sampler)
            yield from idx[offset:]
            offset = 0
            epoch += 1

    def __iter__(self):
        sizes = size_schedule(self.seed, self.params, self.start, self.max_batches)
        indices = self._indices()
        it = self.start
        while it < self.max_batches:
            w, h = next(sizes)
            for sub in range(self.subdivisions):
                yield [(next(indices), w, h,
                        np.random.SeedSequence([self.seed, it, sub, self.rank, k]).generate_state(1)[0])
                       for k in range(self.mini)]
            it += 1


def _worker_init(_):
    import signal
    import cv2
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the main process's (trainer: save _last)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def read_training_set(list_path, classes: int, warn: bool = True):
    """(image paths, labels) of a train list; labels checked (``dataset.read_dataset``)."""
    from ..dataset import read_dataset, read_list
    paths = read_list(list_path)
    if not paths:
        raise DarknetError("the list of training images is empty", list_path)
    labels, _missing = read_dataset(paths, classes, warn=warn)
    return paths, labels


def make_loader(paths, labels, params: AugmentParams, mini: int, subdivisions: int, max_batches: int,
                start: int = 0, seed: int = 0, workers: int = 2, world_size: int = 1, rank: int = 0):
    """The DataLoader of one process; iterate it for ``(images, truth)`` mini-batches (a string instead is a
    one-line data error found in a worker: raise it)."""
    ds = DetectionDataset(paths, labels, params)
    sampler = TrainBatchSampler(len(paths), params, mini, subdivisions, max_batches, start, seed, world_size, rank)
    # workers come from a fork server, not a fork of this process: a forked child inherits OpenCV's and OpenMP's
    # thread pools in whatever state they were and can deadlock in its first cv2/torch call (seen: cv2 in
    # pthread_cond_destroy)
    return tud.DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                          worker_init_fn=_worker_init if workers else None,
                          multiprocessing_context="forkserver" if workers else None,
                          persistent_workers=False, prefetch_factor=4 if workers else None)


def batches(loader):
    """The loader's mini-batches, raising a data error from a worker as a :class:`DarknetError`."""
    for b in loader:
        if isinstance(b, str):
            raise DarknetError(b)
        yield b
