"""Pre-processing: stb-exact JPEG decoding, Darknet's resize_image / letterbox_image, image errors."""
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from darknet_prn import native
from darknet_prn import preprocess as pre
from darknet_prn import stbjpeg
from darknet_prn.errors import DarknetError

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT / ".." / "shared" / "data"
STB_DIR = ROOT / "tests" / "data" / "stb"
F32 = np.float32

# sha256 of stbi_load(path, .., 3) (stb_image 2.x, SSE2 build) of the shared images
STB_SHA256 = {
    "dog": "7d5849a5191fcfe2c7aab17fca58bc1a517935b99654c11c45c31aac6503e2a4",
    "person": "9e1cbf4c412d141d2afd3528e3399a830832c6565b3846b883f8c02a14472e07",
    "horses": "7343642ecead8a7f5145df3c751577a49de952872a5fed28a027ae251e2013f6",
    "eagle": "1d47090e1f35946f0f9f0f1d6d3c114105ba11694ac991a1a79eb506a7e52b0e",
    "giraffe": "55f9dd8ebe43e8e56f5461c49f329c71211ad993e7ba23413d49dd8db2a6d1ae",
    "kite": "2aa7868db306240af7310077e65d4f20bc1e1847533ecf3bd9d19c2fa5b9e735",
}

NEEDS_JPEGLIB = "stb-exact JPEG decoding needs the `jpeglib` package (a dependency of darknet-prn)"


@pytest.fixture(autouse=True, params=["native", "native-3-threads", "numpy"])
def kernels(request):
    """Every test here runs with the C kernels (darknet_prn._native) on one and on three threads, and with their
    numpy twins."""
    use = request.param.startswith("native")
    if use and not native.available():
        if os.environ.get("DARKNET_PRN_REQUIRE_NATIVE") == "1":
            pytest.fail("darknet_prn._native was not built (DARKNET_PRN_REQUIRE_NATIVE=1)")
        pytest.skip("darknet_prn._native not built (no C compiler at install time)")
    prev = native.use_native(use)
    prev_threads = native.set_threads(3 if request.param == "native-3-threads" else 1)
    if request.param == "native-3-threads" and native.module().openmp() == 0:
        pytest.skip("darknet_prn._native was built without OpenMP")
    yield request.param
    native.set_threads(prev_threads)
    native.use_native(prev)


# ---------------------------------------------------------------------------------------------------------------
# JPEG decoding = stb_image


def test_exact_jpeg_available():
    assert stbjpeg.have_exact_jpeg(), NEEDS_JPEGLIB


@pytest.mark.parametrize("name", sorted(STB_SHA256))
def test_shared_images_decode_exactly_like_stb(name):
    path = SHARED_DATA / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"{path} missing")
    assert stbjpeg.have_exact_jpeg(), NEEDS_JPEGLIB
    rgb = pre.read_image(path)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert hashlib.sha256(rgb.tobytes()).hexdigest() == STB_SHA256[name]


def test_small_jpegs_all_samplings_progressive_gray_restart_match_stb():
    """4:1:1 / 4:2:0 / 4:2:2 / 4:4:0 / 4:4:4, baseline and progressive, greyscale, restart markers, 1x1,
    odd sizes (23x17): pixels identical to stb_image's."""
    assert stbjpeg.have_exact_jpeg(), NEEDS_JPEGLIB
    expected = np.load(STB_DIR / "expected.npz")
    assert len(expected.files) >= 13
    for key in expected.files:
        got = pre.read_image(STB_DIR / f"{key}.jpg")
        assert np.array_equal(got, expected[key]), key


SCAN_DIR = ROOT / "tests" / "data" / "jpeg"
SCAN_FILES = sorted(p.name for p in SCAN_DIR.glob("*.jpg"))


@pytest.mark.parametrize("name", SCAN_FILES)
def test_scan_layouts_entropy_decode_like_libjpeg(name, kernels):
    """Non-interleaved and mixed scans, per-scan Huffman tables, restart intervals, 4:2:0 / 4:1:1 / grey,
    progressive: the quantised coefficients are libjpeg's, and the pixels are the same through every path."""
    import jpeglib
    path = SCAN_DIR / name
    data = path.read_bytes()
    hdr = stbjpeg.parse_header(data)
    comps = hdr["comps"]
    hmax, vmax = max(c[1] for c in comps), max(c[2] for c in comps)
    ref = stbjpeg._read_coefficients(jpeglib, path, comps)
    assert ref is not None
    if kernels.startswith("native"):
        got = stbjpeg._native_coefficients(data, hdr, hmax, vmax)
        assert got is not None
        for g, r in zip(got, ref):
            assert g.shape[0] >= r.shape[0] and g.shape[1] >= r.shape[1]
            assert np.array_equal(g[:r.shape[0], :r.shape[1]], r)
    rgb = pre.read_image(path)
    assert rgb.shape == (hdr["height"], hdr["width"], 3)
    prev = native.use_native(False)
    try:
        assert np.array_equal(rgb, pre.read_image(path))
    finally:
        native.use_native(prev)


FUZZ = r"""
import sys, warnings
import numpy as np
from pathlib import Path
from darknet_prn import preprocess as pre
from darknet_prn.errors import DarknetError
warnings.simplefilter("ignore")
rng = np.random.default_rng(int(sys.argv[1]))
files = [Path(p).read_bytes() for p in sys.argv[3:]]
out = Path(sys.argv[2])
counts = dict(decoded=0, error=0)
for it in range(150):
    d = bytearray(files[it % len(files)])
    kind = it % 3
    if kind == 0:
        for _ in range(rng.integers(1, 20)):
            d[rng.integers(0, len(d))] = rng.integers(0, 256)
    elif kind == 1:
        d = d[:rng.integers(1, len(d))]
    else:
        i = rng.integers(0, len(d))
        d[i:i + rng.integers(1, 50)] = rng.integers(0, 256, rng.integers(0, 60)).astype(np.uint8).tobytes()
    out.write_bytes(bytes(d))
    try:
        img = pre.read_image(out)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        counts["decoded"] += 1
    except DarknetError:
        counts["error"] += 1
print(counts)
"""


def test_corrupt_jpegs_never_crash(tmp_path, kernels):
    """Fuzzed JPEGs (bytes changed, truncated, spliced) decode or raise DarknetError; the process never dies (the C
    kernels and libjpeg both see them). In a child process, so that a crash fails this test, not the run."""
    import subprocess
    import sys
    files = [str(SCAN_DIR / n) for n in ("optimized_rst.jpg", "noninterleaved_rst.jpg", "s420_rst.jpg",
                                         "prog420_rst.jpg", "gray_rst.jpg")]
    env = dict(os.environ, DARKNET_PRN_NATIVE="0" if kernels == "numpy" else "1")
    r = subprocess.run([sys.executable, "-c", FUZZ, "7", str(tmp_path / "fuzz.jpg"), *files], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "'decoded'" in r.stdout


def test_opencv_fallback_is_close_to_stb():
    """What users without jpeglib get (and what non-JPEG formats use): OpenCV, within a few LSB of stb."""
    import cv2
    path = STB_DIR / "420b.jpg"
    want = np.load(STB_DIR / "expected.npz")["420b"]
    bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(bgr[:, :, ::-1].astype(int) - want).max() <= 4


def test_header_parser():
    hdr = stbjpeg.parse_header((STB_DIR / "420p.jpg").read_bytes())
    assert hdr["width"] == 23 and hdr["height"] == 17 and hdr["sof"] == 0xC2 and hdr["jfif"]
    assert [(h, v) for _, h, v, _ in hdr["comps"]] == [(2, 2), (1, 1), (1, 1)]
    assert stbjpeg.parse_header(b"not a jpeg") is None
    assert stbjpeg.parse_header(b"\xff\xd8\xff\xdb\x00") is None


def test_idct_dc_only_block_is_flat():
    coef = np.zeros((1, 8, 8), np.int16)
    coef[0, 0, 0] = 10                            # DC 10 * q 8 = 80 -> 80/8 + 128 = 138
    out = stbjpeg.idct_blocks(coef, np.full((8, 8), 8, np.int32))
    assert np.all(out == 138)


@pytest.mark.parametrize("scale", [4, 64, 2048, 32767])
def test_idct_image_equals_blockwise_reference(scale):
    """idct_image (C, or float64 matrix products) = the block-wise int32 transcription of stbi__idct_block, also
    for coefficients far beyond what 8-bit images produce (short wrap on dequantisation, int32 wrap in pass 2),
    sparse blocks (stb's zero-column shortcut) and DC-only blocks."""
    rng = np.random.default_rng(scale)
    coef = rng.integers(-scale, scale + 1, (3, 5, 8, 8)).astype(np.int16)
    coef[0, :2, 1:] = 0                           # DC only
    coef[1, :, 1:, :] *= rng.random((5, 7, 8)) < 0.2    # mostly zero columns
    qt = rng.integers(1, 256, 64).astype(np.int32)
    want = stbjpeg.idct_blocks(coef.reshape(-1, 8, 8), qt.reshape(8, 8)).reshape(3, 5, 8, 8)
    got = stbjpeg.idct_image(coef, qt)
    assert np.array_equal(got, want.transpose(0, 2, 1, 3).reshape(24, 40))


def test_unicode_path(tmp_path):
    src = STB_DIR / "444b.jpg"
    dst = tmp_path / "чёрный пёс 狗.jpg"
    shutil.copy(src, dst)
    assert np.array_equal(pre.read_image(dst), pre.read_image(src))


def test_png_and_16bit_png(tmp_path):
    import cv2
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), rgb[:, :, ::-1].copy())
    assert np.array_equal(pre.read_image(tmp_path / "a.png"), rgb)
    deep = rng.integers(0, 65536, (9, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "b.png"), deep[:, :, ::-1].copy())
    assert np.array_equal(pre.read_image(tmp_path / "b.png"), (deep >> 8).astype(np.uint8))   # stb: >> 8
    gray = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert np.array_equal(pre.read_image(tmp_path / "g.png"), np.repeat(gray[:, :, None], 3, 2))


def test_image_errors_name_the_file(tmp_path):
    with pytest.raises(DarknetError, match="missing.jpg: image file not found"):
        pre.read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3)
    with pytest.raises(DarknetError, match="bad.jpg: cannot decode"):
        pre.read_image(bad)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DarknetError, match="empty.png: empty file"):
        pre.read_image(tmp_path / "empty.png")
    with pytest.raises(DarknetError, match="is a directory"):
        pre.read_image(tmp_path)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes((STB_DIR / "444b.jpg").read_bytes()[:200])
    try:
        img = pre.read_image(trunc)          # decoders may recover a truncated file (grey rows) ...
        assert img.shape == (17, 23, 3)
    except DarknetError as e:                # ... or refuse it; never anything else
        assert "trunc.jpg" in str(e)


# ---------------------------------------------------------------------------------------------------------------
# resize_image / letterbox_image


def ref_resize(im, w, h):
    """Darknet's resize_image, literally (CHW, float32 scalars)."""
    c, ih, iw = im.shape
    if iw == w and ih == h:
        return im.copy()
    resized = np.zeros((c, h, w), F32)
    part = np.zeros((c, ih, w), F32)
    w_scale = F32(iw - 1) / F32(w - 1) if w > 1 else F32(0)
    h_scale = F32(ih - 1) / F32(h - 1) if h > 1 else F32(0)
    for k in range(c):
        for r in range(ih):
            for cc in range(w):
                if cc == w - 1 or iw == 1:
                    val = im[k, r, iw - 1]
                else:
                    sx = F32(cc) * w_scale
                    ix = int(sx)
                    dx = F32(sx - F32(ix))
                    val = F32(F32(F32(1) - dx) * im[k, r, ix]) + F32(dx * im[k, r, ix + 1])
                part[k, r, cc] = val
    for k in range(c):
        for r in range(h):
            sy = F32(r) * h_scale
            iy = int(sy)
            dy = F32(sy - F32(iy))
            for cc in range(w):
                resized[k, r, cc] = F32(F32(1) - dy) * part[k, iy, cc]
            if r == h - 1 or ih == 1:
                continue
            for cc in range(w):
                resized[k, r, cc] = F32(resized[k, r, cc] + F32(dy * part[k, iy + 1, cc]))
    return resized


@pytest.mark.parametrize("ih,iw,h,w", [(7, 9, 5, 4), (5, 5, 11, 13), (17, 23, 16, 16), (1, 6, 3, 4), (6, 1, 4, 3),
                                       (30, 20, 30, 7), (20, 30, 9, 30), (13, 13, 13, 13), (8, 8, 1, 1)])
def test_resize_image_bit_exact_vs_literal_reference(ih, iw, h, w):
    rng = np.random.default_rng(ih * 1000 + iw)
    im = rng.random((ih, iw, 3)).astype(F32)
    got = pre.resize_image(im, w, h)
    want = ref_resize(im.transpose(2, 0, 1), w, h).transpose(1, 2, 0)
    assert got.dtype == F32 and got.shape == (h, w, 3)
    assert np.array_equal(got, want)


def test_resize_last_row_quirk_is_kept():
    # the last output row only gets (1-dy)*part[iy]: with a scale that is not exact, dy != 0 there
    im = np.ones((576, 768, 3), F32)
    out = pre.resize_image(im, 416, 416)
    sy = F32(415) * (F32(575) / F32(415))
    dy = sy - F32(int(sy))
    assert np.allclose(out[-1], F32(1) - dy) and np.allclose(out[:-1], 1, atol=1e-6)


def test_to_float_matches_darknet_division():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
    f = pre.to_float(u8)
    assert np.array_equal(f[..., 0].ravel(), np.array([F32(v / 255.0) for v in range(256)], F32))
    bgr = np.zeros((1, 1, 3), np.uint8)
    bgr[0, 0] = (1, 2, 3)
    assert np.array_equal(pre.to_float(bgr, bgr=True)[0, 0], np.array([3, 2, 1], F32) / F32(255))


@pytest.mark.parametrize("w,h,want", [(768, 576, (416, 312)), (640, 424, (416, 275)), (300, 900, (138, 416)),
                                      (416, 416, (416, 416))])
def test_letterbox_geometry_and_canvas(w, h, want):
    assert pre.letterbox_size(w, h, 416, 416) == want
    rng = np.random.default_rng(1)
    im = rng.random((h, w, 3)).astype(F32)
    out = pre.letterbox_image(im, 416, 416)
    nw, nh = want
    dx, dy = (416 - nw) // 2, (416 - nh) // 2
    assert np.array_equal(out[dy:dy + nh, dx:dx + nw], pre.resize_image(im, nw, nh))
    mask = np.ones((416, 416), bool)
    mask[dy:dy + nh, dx:dx + nw] = False
    assert np.all(out[mask] == F32(0.5))


def test_prepare_layout():
    u8 = np.zeros((10, 20, 3), np.uint8)
    u8[..., 0] = 255                       # red in RGB
    x = pre.prepare(u8, 32, 16)
    assert x.shape == (3, 16, 32) and x.dtype == F32 and x.flags.c_contiguous
    assert np.all(x[0] == 1) and np.all(x[1:] == 0)
    with pytest.raises(DarknetError):
        pre.prepare(np.zeros((4, 4, 3), np.float32), 8, 8)


@pytest.mark.parametrize("ih,iw,h,w", [(576, 768, 416, 416), (17, 23, 16, 16), (5, 900, 416, 7), (1000, 3, 9, 30),
                                       (416, 416, 608, 608), (2, 2, 5, 5)])
@pytest.mark.parametrize("bgr", [False, True])
def test_prepare_equals_to_float_then_resize_image(ih, iw, h, w, bgr):
    """The fused uint8 -> CHW float resize (C or numpy strips) gives the bits of to_float + resize_image."""
    rng = np.random.default_rng(ih + iw + h + w)
    u8 = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)
    want = pre.resize_image(pre.to_float(u8, bgr=bgr), w, h).transpose(2, 0, 1)
    assert np.array_equal(pre.prepare(u8, w, h, bgr=bgr), want)
    nw, nh = pre.letterbox_size(iw, ih, w, h)
    if min(nw, nh) >= 2:
        boxed = pre.letterbox_image(pre.to_float(u8, bgr=bgr), w, h).transpose(2, 0, 1)
        assert np.array_equal(pre.prepare(u8, w, h, letterbox=True, bgr=bgr), boxed)


# sizes that broke the numpy strips (IndexError: the float32 row scale rounds down, so the last strip needs a
# row past the last output row's own): every 320x240 image, and these heights at 416
FALLBACK_REGRESSIONS = [(240, 320, 416, 416)] + [(ih, 500, 416, 416) for ih in
                                                (16, 31, 61, 62, 121, 122, 123, 240, 241, 242, 243, 244, 245, 246)]


def _sampled_sizes(n=80, seed=16):
    rng = np.random.default_rng(seed)
    nets = [416, 608, 320, 256, 640]
    out = []
    for _ in range(n):
        ih, iw = (int(v) for v in rng.integers(1, 1001, 2))
        if rng.random() < 0.5:
            h = w = int(rng.choice(nets))
        else:
            h, w = (int(v) for v in rng.integers(1, 1001, 2))
        out.append((ih, iw, h, w))
    return out


_BIG = np.random.default_rng(7).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)


def test_fallback_equals_the_c_path_for_every_size(kernels):
    """Property test over input and network sizes 1..1000 (sampled; plus the fallback's failing sizes): the
    numpy strips give the C kernel's bits (letterboxed too); without the C kernel, to_float + resize_image's."""
    if kernels != "numpy":
        pytest.skip("compares the numpy fallback with the C kernel: runs once, under the numpy parameter")
    for ih, iw, h, w in FALLBACK_REGRESSIONS + _sampled_sizes():
        u8 = _BIG[:ih, :iw]
        got = pre.prepare(u8, w, h), pre.prepare(u8, w, h, letterbox=True)
        if native.available():
            native.use_native(True)
            try:
                want = pre.prepare(u8, w, h), pre.prepare(u8, w, h, letterbox=True)
            finally:
                native.use_native(False)
        else:
            im = pre.to_float(u8)
            want = (pre.resize_image(im, w, h).transpose(2, 0, 1),
                    pre.letterbox_image(im, w, h).transpose(2, 0, 1))
        assert np.array_equal(got[0], want[0]), (ih, iw, h, w)
        assert np.array_equal(got[1], want[1]), (ih, iw, h, w, "letterbox")


def test_resize_never_reads_past_the_last_row(kernels):
    """Past 2**24 rows ``(float)(ih - 1)`` rounds up to ``ih``: the last output row's tap was row ``ih``, one
    past the array (the C kernel read it: SIGSEGV on an array ending at an unmapped page; the numpy strips
    raised IndexError). The row after the image holds 255 here, the image 0: nothing of it may leak in."""
    ih = 2 ** 24 + 4                                   # float32(ih - 1) == ih
    assert int(F32(ih - 1)) == ih
    big = np.zeros((ih + 1, 2, 3), np.uint8)           # untouched pages: no real memory
    big[ih] = 255
    out = pre.resize_u8_chw(big[:ih], 2, 2)
    assert np.array_equal(out, np.zeros((3, 2, 2), F32))
    big[ih - 1] = 51                                   # the clamped tap is the last row, weight 1 - 0
    out = pre.resize_u8_chw(big[:ih], 2, 2)
    assert np.array_equal(out[:, 1], np.full((3, 2), pre._U8_TO_FLOAT[51]))
