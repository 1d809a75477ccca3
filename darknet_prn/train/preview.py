"""``darknet-prn augment DATA CFG -n 16 -o grid.jpg``: augmented training samples with their boxes, in a
grid, to check the data pipeline by eye (Darknet's ``-show_imgs``)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import DarknetError
from ..fileio import atomic_write
from .augment import AugmentParams
from .loader import DetectionDataset, read_training_set, size_schedule


def sample_grid(data_path, cfg_path, n: int = 16, seed: int = 0, iteration: int = 0, names=None) -> np.ndarray:
    """A BGR uint8 grid of ``n`` augmented samples (the cfg's size, or the multi-scale size of
    ``iteration``) with their truth boxes."""
    import cv2
    from ..dataset import DataConfig, read_list
    from ..detect import draw_detections
    data = DataConfig.read(data_path)
    params = AugmentParams.from_cfg(cfg_path)
    classes = data.classes or params.classes
    paths, labels = read_training_set(data.train, classes)
    if names is None:
        try:
            names = read_list(data.names, resolve=False)
        except DarknetError:
            names = [str(i) for i in range(classes)]
    ds = DetectionDataset(paths, labels, params)
    w, h = next(size_schedule(seed, params, iteration, iteration + 1000))
    rng = np.random.default_rng(seed)
    tiles = []
    for k in range(n):
        img, truth, err = ds[(int(rng.integers(0, len(ds))), w, h, int(rng.integers(0, 2**31)))]
        if err:
            raise DarknetError(err)
        bgr = cv2.cvtColor(np.rint(img.transpose(1, 2, 0) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        dets = [{"class_id": int(c), "name": names[int(c)] if int(c) < len(names) else str(int(c)),
                 "confidence": 1.0, "bbox": [(x - bw / 2) * w, (y - bh / 2) * h, bw * w, bh * h]}
                for x, y, bw, bh, c in truth if x > 0]
        tiles.append(draw_detections(bgr, dets, classes))
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + 4), cols * (w + 4), 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        grid[r * (h + 4) + 2:r * (h + 4) + 2 + h, c * (w + 4) + 2:c * (w + 4) + 2 + w] = t
    return grid


def add_arguments(parser):
    parser.add_argument("data", help="Darknet .data file (train= list)")
    parser.add_argument("cfg", help="the cfg whose [net]/[yolo] augmentation keys to use")
    parser.add_argument("-n", type=int, default=16, help="number of samples (default 16)")
    parser.add_argument("-o", "--out", default="augment.jpg", help="output image (default augment.jpg)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--iteration", type=int, default=0,
                        help="draw at the multi-scale size of this iteration (random=1); default the first")


def run(args) -> int:
    import cv2
    if args.n < 1:
        raise DarknetError(f"-n must be at least 1, got {args.n}")
    grid = sample_grid(args.data, args.cfg, args.n, args.seed, args.iteration)
    ext = "." + args.out.rsplit(".", 1)[-1] if "." in args.out else ".jpg"
    try:
        ok, buf = cv2.imencode(ext, grid)
    except cv2.error:
        ok = False
    if not ok:
        raise DarknetError("cannot encode an image of this type (use .jpg or .png)", args.out)
    atomic_write(args.out, lambda f: f.write(buf.tobytes()), "image")
    print(f"{args.out}: {args.n} augmented samples, {grid.shape[1]}x{grid.shape[0]}")
    return 0
