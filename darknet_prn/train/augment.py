"""Darknet's detection data augmentation (``data.c`` ``load_data_detection`` with OpenCV,
``image_opencv.cpp`` ``image_data_augmentation``, ``fill_truth_detection``, ``correct_boxes``,
``blend_truth``, ``blend_truth_mosaic``) in numpy + OpenCV, seeded by a ``numpy.random.Generator``.

One call of :func:`load_sample` makes one training image as Darknet does for one slot of its batch:
jitter crop with aspect change (out-of-image area filled with the image mean), ``resize``, ``letter_box``,
``flip``, hue/saturation/exposure in OpenCV's 8-bit HSV (``convertTo`` rounding and saturation, hue not
wrapped before ``HSV2RGB``), ``blur``, ``gaussian_noise``, ``mixup`` (two images at 0.5/0.5) and ``mosaic``
(four tiles around a random cut point, ``mosaic_bound``), then Darknet's box correction, clipping and
dropping and at most ``max`` boxes. Darknet draws all images of a slot at random; here the first image of
a slot is the dataset index asked for (so a sampler sees every image once an epoch) and the other tiles of
a mosaic/mixup are random. Darknet decides mosaic/mixup once per loading thread's chunk (50 %); here per
slot (50 %)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cfg import read_cfg
from ..dataset import train_filter
from ..errors import CfgError

DETECTION_HEADS = ("yolo", "Gaussian_yolo", "region", "detection")


def _cv2():
    import cv2
    return cv2


@dataclass
class AugmentParams:
    """The augmentation settings of a cfg: ``[net]`` keys and the last detection head's keys, with
    Darknet's defaults (``parser.c``)."""
    width: int = 416
    height: int = 416
    channels: int = 3
    classes: int = 80
    max_boxes: int = 200
    jitter: float = 0.2
    resize: float = 1.0
    random: float = 0.0
    resize_step: int = 32
    flip: int = 1
    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    mixup: int = 0          # Darknet's net->mixup: 1 mixup, 3 mosaic (cutmix is not for detectors)
    letter_box: int = 0
    mosaic_bound: int = 0
    blur: int = 0
    gaussian_noise: int = 0

    @classmethod
    def from_cfg(cls, path) -> "AugmentParams":
        return cls.from_sections(read_cfg(path), str(path))

    @classmethod
    def from_sections(cls, sections, path: str = "<cfg>") -> "AugmentParams":
        if not sections or sections[0].type not in ("net", "network"):
            raise CfgError("the first section must be [net] or [network]", path)
        net = sections[0]
        heads = [s for s in sections if s.type in DETECTION_HEADS]
        if not heads:
            raise CfgError("no detection layer ([yolo], [Gaussian_yolo], [region], [detection]): "
                           "cannot train a detector", path)
        head = heads[-1]
        mixup = net.get_int("mixup", 0)
        cutmix, mosaic = net.get_int("cutmix", 0), net.get_int("mosaic", 0)
        if mosaic and cutmix:
            mixup = 4
        elif cutmix:
            mixup = 2
        elif mosaic:
            mixup = 3
        if mixup == 2:      # Darknet: "cutmix=1 - isn't supported for Detector"
            mixup = 0
        elif mixup == 4:
            mixup = 3
        p = cls(width=net.get_int("width", 0), height=net.get_int("height", 0),
                channels=net.get_int("channels", 0) or 3, classes=head.get_int("classes", 20),
                max_boxes=head.get_int("max", 200), jitter=head.get_float("jitter", 0.2),
                resize=head.get_float("resize", 1.0), random=head.get_float("random", 0.0),
                resize_step=int(net.get_float("resize_step", 32)), flip=net.get_int("flip", 1),
                hue=net.get_float("hue", 0.0), saturation=net.get_float("saturation", 1.0),
                exposure=net.get_float("exposure", 1.0), mixup=mixup, letter_box=net.get_int("letter_box", 0),
                mosaic_bound=net.get_int("mosaic_bound", 0), blur=net.get_int("blur", 0),
                gaussian_noise=net.get_int("gaussian_noise", 0))
        if p.mixup == 3 and p.letter_box:
            raise CfgError("letter_box=1 with mosaic=1 is not supported (as in Darknet): use one of them", path)
        if p.width <= 0 or p.height <= 0:
            raise CfgError("[net] width and height must be set for training", path)
        return p


# --- Darknet's random helpers (utils.c), on a numpy Generator -------------------------------------------

def rand_uniform(rng, lo: float, hi: float) -> float:
    if hi < lo:
        lo, hi = hi, lo
    return float(np.float32(rng.random() * (hi - lo) + lo))


def rand_scale(rng, s: float) -> float:
    """``rand_scale``: U(1, s) or its reciprocal, 50/50."""
    scale = rand_uniform(rng, 1, s)
    return scale if rng.integers(0, 2) else float(np.float32(1.0 / scale))


def rand_int(rng, lo: int, hi: int) -> int:
    if hi < lo:
        lo, hi = hi, lo
    return int(rng.integers(lo, hi + 1))


def _precalc(lo: float, hi: float, r: float) -> float:
    if hi < lo:
        lo, hi = hi, lo
    return r * (hi - lo) + lo


def _ctrunc(v) -> int:
    """C's float -> int conversion (towards zero)."""
    return int(v)


def _cdiv(a: int, b: int) -> int:
    """C's integer division (towards zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


# --- boxes ----------------------------------------------------------------------------------------------

def correct_boxes(labels: np.ndarray, dx: float, dy: float, sx: float, sy: float, flip: bool) -> np.ndarray:
    """``correct_boxes``: labels (n, 5) ``class x y w h`` -> the same with boxes moved by the crop
    (``left·sx − dx`` …), mirrored with ``flip``, clipped to [0, 1]. Boxes at x = y = 0 or wholly outside
    the image become 999999 (dropped later), as Darknet marks them. float32 as Darknet computes."""
    f = np.float32
    out = labels.astype(np.float32).copy()
    x, y, w, h = out[:, 1], out[:, 2], out[:, 3], out[:, 4]
    left, right = x - w / f(2), x + w / f(2)
    top, bottom = y - h / f(2), y + h / f(2)
    bad = ((x == 0) & (y == 0)) | ((x + w / f(2)) < 0) | ((y + h / f(2)) < 0) | ((x - w / f(2)) > 1) | \
          ((y - h / f(2)) > 1)
    sx, sy, dx, dy = f(sx), f(sy), f(dx), f(dy)
    left, right = left * sx - dx, right * sx - dx
    top, bottom = top * sy - dy, bottom * sy - dy
    if flip:
        left, right = f(1) - right, f(1) - left
    left, right = np.clip(left, 0, 1), np.clip(right, 0, 1)
    top, bottom = np.clip(top, 0, 1), np.clip(bottom, 0, 1)
    nx, ny = (left + right) / f(2), (top + bottom) / f(2)
    nw, nh = np.clip(right - left, 0, 1), np.clip(bottom - top, 0, 1)
    out[:, 1], out[:, 2], out[:, 3], out[:, 4] = nx, ny, nw, nh
    out[bad, 1:] = 999999
    return out


def fill_truth(labels: np.ndarray, rng, classes: int, max_boxes: int, flip: bool, dx: float, dy: float,
               sx: float, sy: float, net_w: int, net_h: int):
    """``fill_truth_detection``: shuffle, :func:`correct_boxes`, keep the first ``max_boxes``, then drop
    boxes under one network pixel and invalid ones (``dataset.train_filter``). Returns (truth (k, 5)
    ``x y w h class`` float32, min_w_h: the smallest kept side in network pixels, 0 if none). Class ids are checked when labels are
    read (out of range is an error there, not a silent drop)."""
    n = len(labels)
    if n == 0:
        return np.zeros((0, 5), np.float32), 0
    order = np.arange(n)
    for i in range(n):          # randomize_boxes: swap i with a random index
        j = int(rng.integers(0, n))
        order[i], order[j] = order[j], order[i]
    b = correct_boxes(labels[order], dx, dy, sx, sy, flip)[:max_boxes]
    b = train_filter(b[b[:, 0] < classes], net_w, net_h)
    truth = np.ascontiguousarray(b[:, [1, 2, 3, 4, 0]])
    min_w_h = 0
    for w, h in zip(b[:, 3], b[:, 4]):
        if min_w_h == 0:
            min_w_h = _ctrunc(w * net_w)
        min_w_h = min(min_w_h, _ctrunc(w * net_w), _ctrunc(h * net_h))
    return truth, min_w_h


def blend_truth_mosaic(acc: list, tile: np.ndarray, max_boxes: int, w: int, h: int, cut_x: int, cut_y: int,
                       i_mixup: int, left_shift: int, right_shift: int, top_shift: int, bot_shift: int,
                       mosaic_bound: int) -> None:
    """``blend_truth_mosaic``: moves the tile's boxes into the mosaic, cut at the tile (``mosaic_bound``)
    or at the image border, keeps those still inside; appends to ``acc`` (at most ``max_boxes`` in all)."""
    f = np.float32
    lowest_w, lowest_h = f(1) / f(w), f(1) / f(h)
    room = max_boxes - len(acc)
    for xb, yb, wb, hb, cls in tile[:max(room, 0)]:
        if i_mixup in (0, 2):
            xb = xb - f(w - cut_x - right_shift) / f(w)
        else:
            xb = xb + f(cut_x - left_shift) / f(w)
        if i_mixup in (0, 1):
            yb = yb - f(h - cut_y - bot_shift) / f(h)
        else:
            yb = yb + f(cut_y - top_shift) / f(h)
        left, right = _ctrunc((xb - wb / f(2)) * w), _ctrunc((xb + wb / f(2)) * w)
        top, bot = _ctrunc((yb - hb / f(2)) * h), _ctrunc((yb + hb / f(2)) * h)
        if mosaic_bound:
            lb, rb = (0, cut_x) if i_mixup in (0, 2) else (cut_x, w)
            tb, bb = (0, cut_y) if i_mixup in (0, 1) else (cut_y, h)
            left, right, top, bot = max(left, lb), min(right, rb), max(top, tb), min(bot, bb)
            xb, wb = f(right + left) / f(2) / f(w), f(right - left) / f(w)
            yb, hb = f(bot + top) / f(2) / f(h), f(bot - top) / f(h)
        else:
            if left < 0:
                diff = f(left) / f(w)
                xb, wb = xb - diff / f(2), wb + diff
            if right > w:
                diff = f(right - w) / f(w)
                xb, wb = xb - diff / f(2), wb - diff
            if top < 0:
                diff = f(top) / f(h)
                yb, hb = yb - diff / f(2), hb + diff
            if bot > h:
                diff = f(bot - h) / f(h)
                yb, hb = yb - diff / f(2), hb - diff
            left, right = _ctrunc((xb - wb / f(2)) * w), _ctrunc((xb + wb / f(2)) * w)
            top, bot = _ctrunc((yb - hb / f(2)) * h), _ctrunc((yb + hb / f(2)) * h)
        if (left >= 0 and right <= w and top >= 0 and bot <= h and 0 < wb < 1 and 0 < hb < 1
                and 0 < xb < 1 and 0 < yb < 1 and wb > lowest_w and hb > lowest_h):
            acc.append((xb, yb, wb, hb, cls))


# --- pixels -----------------------------------------------------------------------------------------------

def hsv_adjust(rgb: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
    """Darknet's HSV step on an 8-bit RGB image (OpenCV): ``RGB2HSV``; S·dsat, V·dexp, H + 179·dhue, each
    rounded and saturated to 0..255 (``Mat::convertTo``; hue is not wrapped: ``HSV2RGB`` wraps once);
    ``HSV2RGB``. Grey images: V·dexp only."""
    cv2 = _cv2()
    f = np.float32

    def conv(ch, alpha, beta):
        return np.clip(np.rint(ch.astype(np.float32) * f(alpha) + f(beta)), 0, 255).astype(np.uint8)

    if rgb.ndim == 2 or rgb.shape[2] == 1:
        return conv(rgb, dexp, 0)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = conv(hsv[..., 1], dsat, 0)
    hsv[..., 2] = conv(hsv[..., 2], dexp, 0)
    hsv[..., 0] = conv(hsv[..., 0], 1, 179 * dhue)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def crop_resize(img: np.ndarray, w: int, h: int, pleft: int, ptop: int, swidth: int, sheight: int) -> np.ndarray:
    """``image_data_augmentation``'s crop: the rectangle (pleft, ptop, swidth, sheight) of the image, the
    part outside it filled with the image's mean colour, stretched to w×h (bilinear)."""
    cv2 = _cv2()
    oh, ow = img.shape[:2]
    if pleft == 0 and ptop == 0 and swidth == ow and sheight == oh:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    x0, y0 = max(pleft, 0), max(ptop, 0)
    x1, y1 = min(pleft + swidth, ow), min(ptop + sheight, oh)
    mean = np.rint(img.reshape(-1, img.shape[2] if img.ndim == 3 else 1).mean(axis=0)).astype(np.uint8)
    cropped = np.empty((sheight, swidth) + img.shape[2:], np.uint8)
    cropped[...] = mean if img.ndim == 3 else mean[0]
    if x1 > x0 and y1 > y0:
        dx, dy = max(0, -pleft), max(0, -ptop)
        cropped[dy:dy + y1 - y0, dx:dx + x1 - x0] = img[y0:y1, x0:x1]
    return cv2.resize(cropped, (w, h), interpolation=cv2.INTER_LINEAR)


def image_augmentation(img, w, h, pleft, ptop, swidth, sheight, flip, dhue, dsat, dexp, gaussian_noise,
                       blur, truth, rng) -> np.ndarray:
    """``image_data_augmentation`` on an 8-bit RGB image -> 8-bit RGB h×w."""
    cv2 = _cv2()
    sized = crop_resize(img, w, h, pleft, ptop, swidth, sheight)
    if flip:
        sized = cv2.flip(sized, 1)
    if dsat != 1 or dexp != 1 or dhue != 0:
        sized = hsv_adjust(sized, dhue, dsat, dexp)
    if blur:
        if blur == 1:
            dst = cv2.GaussianBlur(sized, (17, 17), 0)
            for x, y, bw, bh, _ in truth:       # blur=1: the background only, objects stay sharp
                left, top = _ctrunc((x - bw / 2.0) * w), _ctrunc((y - bh / 2.0) * h)
                x0, y0 = max(left, 0), max(top, 0)
                x1, y1 = min(left + _ctrunc(bw * w), w), min(top + _ctrunc(bh * h), h)
                if x1 > x0 and y1 > y0:
                    dst[y0:y1, x0:x1] = sized[y0:y1, x0:x1]
        else:
            k = (blur // 2) * 2 + 1
            dst = cv2.GaussianBlur(sized, (k, k), 0)
        sized = dst
    if gaussian_noise:
        g = min(max(gaussian_noise, 0), 127)
        # cv::randn into an 8-bit Mat: negative noise saturates to 0
        noise = np.clip(np.rint(rng.normal(0, g, sized.shape)), 0, 255).astype(np.uint8)
        sized = cv2.add(sized, noise)
    return sized


# --- one training slot ------------------------------------------------------------------------------------

def load_sample(index: int, n_images: int, load, p: AugmentParams, rng, w: int | None = None,
                h: int | None = None):
    """One augmented training image and its truth, as Darknet fills one slot of its batch.

    ``load(i) -> (rgb uint8 (H, W, 3), labels (n, 5) class x y w h)`` reads dataset item i. Returns
    (image float32 (3, h, w) in [0, 1], truth float32 (max_boxes, 5) ``x y w h class``, zero rows after
    the last box, as Darknet's ``d.y``)."""
    w = w or p.width
    h = h or p.height
    use_mixup = p.mixup
    if rng.integers(0, 2) == 0:
        use_mixup = 0
    if use_mixup == 3:
        cut_x = rand_int(rng, _ctrunc(w * 0.2), _ctrunc(w * (1 - 0.2)))
        cut_y = rand_int(rng, _ctrunc(h * 0.2), _ctrunc(h * (1 - 0.2)))
        out = np.zeros((h, w, 3), np.uint8)
    acc, blended = [], None
    for i_mixup in range(use_mixup + 1):
        idx = index if i_mixup == 0 else int(rng.integers(0, n_images))
        img, labels = load(idx)
        oh, ow = img.shape[:2]
        dw, dh = _ctrunc(ow * p.jitter), _ctrunc(oh * p.jitter)
        resize_down = resize_up = p.resize
        if resize_down > 1.0:
            resize_down = 1 / resize_down
        min_rdw, min_rdh = _ctrunc(ow * (1 - (1 / resize_down)) / 2), _ctrunc(oh * (1 - (1 / resize_down)) / 2)
        if resize_up < 1.0:
            resize_up = 1 / resize_up
        max_rdw, max_rdh = _ctrunc(ow * (1 - (1 / resize_up)) / 2), _ctrunc(oh * (1 - (1 / resize_up)) / 2)
        resize_r1, resize_r2 = rng.random(), rng.random()
        r1, r2, r3, r4 = rng.random(4)
        flip = int(rng.integers(0, 2)) if p.flip else 0
        dhue = rand_uniform(rng, -p.hue, p.hue)
        dsat = rand_scale(rng, p.saturation)
        dexp = rand_scale(rng, p.exposure)
        blur = 0
        if p.blur:
            t = rand_int(rng, 0, 2)
            blur = 0 if t == 0 else (1 if t == 1 else p.blur)
        noise = p.gaussian_noise if (p.gaussian_noise and rand_int(rng, 0, 1) == 1) else 0

        pleft = _ctrunc(_precalc(-dw, dw, r1))
        pright = _ctrunc(_precalc(-dw, dw, r2))
        ptop = _ctrunc(_precalc(-dh, dh, r3))
        pbot = _ctrunc(_precalc(-dh, dh, r4))
        if p.resize < 1:
            lo_w, hi_w, lo_h, hi_h = min_rdw, 0, min_rdh, 0
        else:
            lo_w, hi_w, lo_h, hi_h = min_rdw, max_rdw, min_rdh, max_rdh
        pleft += _ctrunc(_precalc(lo_w, hi_w, resize_r1))
        pright += _ctrunc(_precalc(lo_w, hi_w, resize_r2))
        ptop += _ctrunc(_precalc(lo_h, hi_h, resize_r1))
        pbot += _ctrunc(_precalc(lo_h, hi_h, resize_r2))
        if p.letter_box:
            img_ar, net_ar = np.float32(ow) / np.float32(oh), np.float32(w) / np.float32(h)
            if img_ar / net_ar > 1:
                delta_h = (ow / net_ar - oh) / 2
                ptop, pbot = _ctrunc(ptop - delta_h), _ctrunc(pbot - delta_h)
            else:
                delta_w = (oh * net_ar - ow) / 2
                pleft, pright = _ctrunc(pleft - delta_w), _ctrunc(pright - delta_w)
        if use_mixup == 3 and rng.integers(0, 2) == 0:      # move every 2nd tile into its corner
            if flip:
                if i_mixup == 0: pleft, pright, pbot, ptop = pleft + pright, 0, pbot + ptop, 0   # noqa: E701
                if i_mixup == 1: pright, pleft, pbot, ptop = pright + pleft, 0, pbot + ptop, 0   # noqa: E701
                if i_mixup == 2: pleft, pright, ptop, pbot = pleft + pright, 0, ptop + pbot, 0   # noqa: E701
                if i_mixup == 3: pright, pleft, ptop, pbot = pright + pleft, 0, ptop + pbot, 0   # noqa: E701
            else:
                if i_mixup == 0: pright, pleft, pbot, ptop = pright + pleft, 0, pbot + ptop, 0   # noqa: E701
                if i_mixup == 1: pleft, pright, pbot, ptop = pleft + pright, 0, pbot + ptop, 0   # noqa: E701
                if i_mixup == 2: pright, pleft, ptop, pbot = pright + pleft, 0, ptop + pbot, 0   # noqa: E701
                if i_mixup == 3: pleft, pright, ptop, pbot = pleft + pright, 0, ptop + pbot, 0   # noqa: E701
        swidth, sheight = ow - pleft - pright, oh - ptop - pbot
        if swidth <= 0 or sheight <= 0 or ow - pleft <= 0 or oh - ptop <= 0:
            swidth, sheight, pleft, ptop = ow, oh, 0, 0      # Darknet: "invalid resize", reset
        sx, sy = np.float32(swidth) / np.float32(ow), np.float32(sheight) / np.float32(oh)
        dx = np.float32(np.float32(pleft) / np.float32(ow)) / sx
        dy = np.float32(np.float32(ptop) / np.float32(oh)) / sy
        truth, min_w_h = fill_truth(labels, rng, p.classes, p.max_boxes, bool(flip), float(dx), float(dy),
                                    float(np.float32(1.0 / sx)), float(np.float32(1.0 / sy)), w, h)
        if blur > 1 and min_w_h // 8 < blur:
            blur = min_w_h // 8     # no strong blur when an object is small
        ai = image_augmentation(img, w, h, pleft, ptop, swidth, sheight, flip, dhue, dsat, dexp, noise, blur,
                                truth, rng)
        if use_mixup == 0 or (use_mixup == 1 and i_mixup == 0):
            blended = ai.astype(np.float32) / 255
            acc = [tuple(r) for r in truth]
        elif use_mixup == 1:
            blended = 0.5 * (ai.astype(np.float32) / 255) + 0.5 * blended
            acc.extend(tuple(r) for r in truth[:max(p.max_boxes - len(acc), 0)])
        else:
            if flip:
                pleft, pright = pright, pleft
            left_shift = min(cut_x, max(0, _cdiv(-pleft * w, ow)))
            top_shift = min(cut_y, max(0, _cdiv(-ptop * h, oh)))
            right_shift = min(w - cut_x, max(0, _cdiv(-pright * w, ow)))
            bot_shift = min(h - cut_y, max(0, _cdiv(-pbot * h, oh)))
            if i_mixup == 0:
                out[:cut_y, :cut_x] = ai[h - cut_y - bot_shift:h - bot_shift,
                                         w - cut_x - right_shift:w - right_shift]
            elif i_mixup == 1:
                out[:cut_y, cut_x:] = ai[h - cut_y - bot_shift:h - bot_shift, left_shift:left_shift + w - cut_x]
            elif i_mixup == 2:
                out[cut_y:, :cut_x] = ai[top_shift:top_shift + h - cut_y, w - cut_x - right_shift:w - right_shift]
            else:
                out[cut_y:, cut_x:] = ai[top_shift:top_shift + h - cut_y, left_shift:left_shift + w - cut_x]
            blend_truth_mosaic(acc, truth, p.max_boxes, w, h, cut_x, cut_y, i_mixup, left_shift, right_shift,
                               top_shift, bot_shift, p.mosaic_bound)
    if use_mixup == 3:
        blended = out.astype(np.float32) / 255
    t = np.zeros((p.max_boxes, 5), np.float32)
    if acc:
        t[:len(acc)] = np.array(acc[:p.max_boxes], np.float32)
    return np.ascontiguousarray(blended.transpose(2, 0, 1)), t
