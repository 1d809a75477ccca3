"""Darknet's detection augmentation: box correction, clipping, dropping and mosaic cuts against values
worked out by hand from data.c; OpenCV's 8-bit HSV arithmetic; seeded reproducibility."""
import numpy as np
import pytest

from darknet_prn.train import augment as A


def _lab(*rows):
    return np.array(rows, np.float32).reshape(-1, 5)


def test_correct_boxes_crop_with_aspect_change():
    # 100x100 image, pleft=10 pright=-10 ptop=20 pbot=0: swidth=100, sheight=80, sx=1, sy=0.8,
    # dx = (10/100)/1 = 0.1, dy = (20/100)/0.8 = 0.25; correct_boxes gets 1/sx = 1, 1/sy = 1.25
    out = A.correct_boxes(_lab((0, .5, .5, .2, .2), (1, .05, .5, .2, .2), (2, 1.2, .5, .2, .2), (3, 0, 0, .1, .1)),
                          0.1, 0.25, 1.0, 1.25, flip=False)
    # box 0: left .4-.1=.3, right .5; top .4*1.25-.25=.25, bottom .6*1.25-.25=.5
    np.testing.assert_allclose(out[0, 1:], [0.4, 0.375, 0.2, 0.25], atol=1e-6)
    # box 1: left -.05-.1 clipped to 0, right .15-.1=.05
    np.testing.assert_allclose(out[1, 1:], [0.025, 0.375, 0.05, 0.25], atol=1e-6)
    # box 2 wholly outside (x - w/2 > 1) and box 3 at x=y=0 are marked 999999
    assert (out[2:, 1:] == 999999).all()
    assert list(out[:, 0]) == [0, 1, 2, 3]
    flipped = A.correct_boxes(_lab((0, .5, .5, .2, .2)), 0.1, 0.25, 1.0, 1.25, flip=True)
    np.testing.assert_allclose(flipped[0, 1:], [0.6, 0.375, 0.2, 0.25], atol=1e-6)   # left 1-.5, right 1-.3


def test_fill_truth_drops_and_max_boxes():
    rng = np.random.default_rng(0)
    labels = _lab((0, .5, .5, .2, .2), (1, .3, .3, .005, .2), (2, 1.5, .5, .2, .2), (0, .7, .7, .1, .1))
    truth, min_wh = A.fill_truth(labels, rng, classes=3, max_boxes=10, flip=False, dx=0, dy=0, sx=1, sy=1,
                                 net_w=100, net_h=100)
    # the 0.5-pixel-wide box and the box outside the image are dropped; order is shuffled
    assert sorted(tuple(round(float(v), 4) for v in r) for r in truth) == [(0.5, 0.5, 0.2, 0.2, 0.0), (0.7, 0.7, 0.1, 0.1, 0.0)]
    assert min_wh == 10
    # Darknet truncates to `max` before dropping: with max=1 at most one box, maybe none
    for seed in range(8):
        t, _ = A.fill_truth(labels, np.random.default_rng(seed), 3, 1, False, 0, 0, 1, 1, 100, 100)
        assert len(t) <= 1


def test_blend_truth_mosaic_by_hand():
    # w=h=128, cut at (32, 64), tile 0 (top-left), no shifts: xb -= 96/128, yb -= 64/128
    tile = _lab((.875, .625, .25, .125, 1), (.9375, .625, .25, .125, 2), (.8125, .625, .25, .125, 3),
                (.625, .625, .25, .125, 4))
    acc = []
    A.blend_truth_mosaic(acc, tile, 200, 128, 128, 32, 64, 0, 0, 0, 0, 0, mosaic_bound=0)
    got = {int(r[4]): np.round(r[:4], 6).tolist() for r in acc}
    assert got == {1: [0.125, 0.125, 0.25, 0.125],
                   2: [0.1875, 0.125, 0.25, 0.125],        # crosses the cut: kept as is without mosaic_bound
                   3: [0.09375, 0.125, 0.1875, 0.125]}     # cut at the image's left border; box 4 vanishes
    acc = []
    A.blend_truth_mosaic(acc, tile, 200, 128, 128, 32, 64, 0, 0, 0, 0, 0, mosaic_bound=1)
    got = {int(r[4]): np.round(r[:4], 6).tolist() for r in acc}
    assert got[2] == [0.15625, 0.125, 0.1875, 0.125]       # right edge cut to the tile (x = 32)
    acc = [(0.5, 0.5, 0.1, 0.1, 0)] * 199
    A.blend_truth_mosaic(acc, tile, 200, 128, 128, 32, 64, 0, 0, 0, 0, 0, mosaic_bound=0)
    assert len(acc) == 200


def test_hsv_arithmetic_saturates_hue():
    import cv2
    def rgb_of(h, s, v):
        return cv2.cvtColor(np.array([[[h, s, v]]], np.uint8), cv2.COLOR_HSV2RGB)
    px = rgb_of(5, 255, 255)
    # H + 179*(-0.1) = -12.9 saturates to 0 (no wrap to 167)
    np.testing.assert_array_equal(A.hsv_adjust(px, -0.1, 1, 1), rgb_of(0, 255, 255))
    # H 170 + 17.9 = 187.9 -> 188, HSV2RGB wraps it to 8
    np.testing.assert_array_equal(A.hsv_adjust(rgb_of(170, 255, 255), 0.1, 1, 1), rgb_of(8, 255, 255))
    # S * 0.5 rounds half to even (255*.5 = 127.5 -> 128), V * 1.5 saturates at 255
    h, s, v = cv2.cvtColor(A.hsv_adjust(rgb_of(60, 255, 200), 0, 0.5, 1.5), cv2.COLOR_RGB2HSV)[0, 0]
    assert abs(int(s) - 128) <= 1 and v == 255


def test_crop_resize_fills_with_mean():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, :5] = 200                        # mean 100
    out = A.crop_resize(img, 20, 10, -10, 0, 20, 10)   # 10 px of padding on the left, scale 1
    assert (out[:, :10] == 100).all() and (out[:, 10:15] == 200).all() and (out[:, 15:] == 0).all()


def _loader(n=6, size=64, seed=0):
    from darknet_prn.train.synthetic import make_image
    import cv2
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        img, labels = make_image(rng, size, 3)
        items.append((cv2.cvtColor(img, cv2.COLOR_BGR2RGB), _lab(*labels)))
    return lambda i: items[i]


@pytest.mark.parametrize("mixup,letter_box,blur", [(0, 0, 0), (1, 1, 0), (3, 0, 1), (3, 0, 5)])
def test_load_sample_seeded_and_valid(mixup, letter_box, blur):
    p = A.AugmentParams(width=96, height=64, classes=3, max_boxes=20, jitter=0.3, hue=0.1, saturation=1.5,
                        exposure=1.5, mixup=mixup, letter_box=letter_box, blur=blur, gaussian_noise=0)
    load = _loader()
    for seed in range(6):
        a = A.load_sample(seed % 6, 6, load, p, np.random.default_rng(seed))
        b = A.load_sample(seed % 6, 6, load, p, np.random.default_rng(seed))
        assert a[0].shape == (3, 64, 96) and a[0].dtype == np.float32 and a[1].shape == (20, 5)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        t = a[1][a[1][:, 0] > 0]
        assert ((t[:, :4] > 0) & (t[:, :4] <= 1)).all() and set(t[:, 4]) <= {0, 1, 2}
        assert 0 <= a[0].min() and a[0].max() <= 1


def test_params_from_cfg():
    p = A.AugmentParams.from_cfg("cfg/yolov3-tiny-prn.cfg")
    assert (p.width, p.height, p.classes, p.max_boxes, p.flip) == (416, 416, 80, 200, 1)
    assert p.saturation == 1.5 and p.exposure == 1.5 and p.hue == 0.1 and p.random == 1
