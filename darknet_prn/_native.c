/* Native kernels for Darknet-exact image pre-processing (optional: every function has a numpy twin that gives
 * the same bits; see stbjpeg.py and preprocess.py, which pick these when the extension was built).
 *
 *  idct_plane       stb_image's integer IDCT (stbi__idct_block) with dequantisation into short, for a whole plane
 *  upsample_rgb     stb_image's chroma up-sampling (stbi__resample) and YCbCr->RGB (stbi__YCbCr_to_RGB_row),
 *                   one output row at a time, as stb does it
 *  resize_chw       Darknet's to-float ((float)(u8/255.)) + resize_image (two-pass float32 bilinear) from uint8
 *                   HWC to float32 CHW
 *  decode_scan      Huffman decoding of one JPEG scan (ITU T.81: sequential F.2, progressive G.1.2) into
 *                   quantised coefficients -- the numpy twin of this one is libjpeg (through jpeglib)
 *  set_threads      how many threads idct_plane / upsample_rgb / resize_chw split an image over (OpenMP)
 *
 * The arithmetic is written out from the documented behaviour of those functions (spec, darknet-semantics.md
 * section 3.10, and the module docs of stbjpeg.py); integer code relies on two's-complement wrap-around
 * (built with -fwrapv), float code on IEEE float32 with no contraction into FMA (-ffp-contract=off).
 * Buffers come in through the buffer protocol and must be C-contiguous; the Python side checks shapes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSION
#endif

/* ---------------------------------------------------------------------------------------------------------- */
/* IDCT                                                                                                        */

#define F2F(x) ((int)(((x) * 4096 + 0.5)))   /* float constant times 4096 in float, + 0.5 in double */
#define FSH(x) ((x) * 4096)

#define IDCT_1D(s0, s1, s2, s3, s4, s5, s6, s7)                                                              \
    int t0, t1, t2, t3, p1, p2, p3, p4, p5, x0, x1, x2, x3;                                                  \
    p2 = s2;                                                                                                 \
    p3 = s6;                                                                                                 \
    p1 = (p2 + p3) * F2F(0.5411961f);                                                                        \
    t2 = p1 + p3 * F2F(-1.847759065f);                                                                       \
    t3 = p1 + p2 * F2F(0.765366865f);                                                                        \
    p2 = s0;                                                                                                 \
    p3 = s4;                                                                                                 \
    t0 = FSH(p2 + p3);                                                                                       \
    t1 = FSH(p2 - p3);                                                                                       \
    x0 = t0 + t3;                                                                                            \
    x3 = t0 - t3;                                                                                            \
    x1 = t1 + t2;                                                                                            \
    x2 = t1 - t2;                                                                                            \
    t0 = s7;                                                                                                 \
    t1 = s5;                                                                                                 \
    t2 = s3;                                                                                                 \
    t3 = s1;                                                                                                 \
    p3 = t0 + t2;                                                                                            \
    p4 = t1 + t3;                                                                                            \
    p1 = t0 + t3;                                                                                            \
    p2 = t1 + t2;                                                                                            \
    p5 = (p3 + p4) * F2F(1.175875602f);                                                                      \
    t0 = t0 * F2F(0.298631336f);                                                                             \
    t1 = t1 * F2F(2.053119869f);                                                                             \
    t2 = t2 * F2F(3.072711026f);                                                                             \
    t3 = t3 * F2F(1.501321110f);                                                                             \
    p1 = p5 + p1 * F2F(-0.899976223f);                                                                       \
    p2 = p5 + p2 * F2F(-2.562915447f);                                                                       \
    p3 = p3 * F2F(-1.961570560f);                                                                            \
    p4 = p4 * F2F(-0.390180644f);                                                                            \
    t3 += p1 + p4;                                                                                           \
    t2 += p2 + p3;                                                                                           \
    t1 += p2 + p4;                                                                                           \
    t0 += p1 + p3;

static inline uint8_t clamp255(int x)
{
    return (uint8_t)(x < 0 ? 0 : (x > 255 ? 255 : x));
}

/* ---------------------------------------------------------------------------------------------------------- */
/* work split over threads: fn(ctx, begin, end) over [0, n) in chunks of `chunk`, dynamically scheduled, on an
 * OpenMP team. Built with OpenMP after torch is loaded, that is torch's own libgomp (same SONAME), so the team is
 * the one torch's intra-op threads form: the workers that still spin after a torch forward take the chunks at
 * once instead of competing with a thread of ours for the core. Every kernel below writes disjoint outputs per
 * chunk, so the split never changes a result. Without OpenMP everything runs on the calling thread. */

typedef void (*RangeFn)(void *ctx, Py_ssize_t begin, Py_ssize_t end);

static int n_threads = 0;         /* set_threads(); 0: OpenMP's default (torch's intra-op thread count) */

/* `chunk`: the work handed out at a time (also the least worth a thread) */
static void run_parallel(RangeFn fn, void *ctx, Py_ssize_t n, Py_ssize_t chunk)
{
#ifdef _OPENMP
    Py_ssize_t nchunks, i;
    int threads = n_threads > 0 ? n_threads : omp_get_max_threads();
    if (chunk < 1)
        chunk = 1;
    nchunks = (n + chunk - 1) / chunk;
    if (threads > nchunks)
        threads = (int)nchunks;
    if (threads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (i = 0; i < nchunks; ++i)
            fn(ctx, i * chunk, (i + 1) * chunk < n ? (i + 1) * chunk : n);
        return;
    }
#else
    (void)chunk;
#endif
    fn(ctx, 0, n);
}

static PyObject *py_set_threads(PyObject *self, PyObject *args)
{
    int t, prev = n_threads;
    if (!PyArg_ParseTuple(args, "i", &t))
        return NULL;
    n_threads = t < 0 ? 0 : (t > 64 ? 64 : t);
    return PyLong_FromLong(prev);
}

static PyObject *py_openmp(PyObject *self, PyObject *args)
{
#ifdef _OPENMP
    return PyLong_FromLong(omp_get_max_threads());
#else
    return PyLong_FromLong(0);
#endif
}

/* STBI__IDCT_1D over 8 lanes at once: in[r*8 + lane] -> the butterfly's outputs for each lane, before the pass's
 * bias and shift: out[r*8 + lane] for output index r (0..7). Written as a lane loop so that it vectorises. */
static inline void idct_pass(const int *in, int *out, int bias, int shift)
{
    int lane;
    for (lane = 0; lane < 8; ++lane) {
        IDCT_1D(in[lane], in[8 + lane], in[16 + lane], in[24 + lane], in[32 + lane], in[40 + lane], in[48 + lane],
                in[56 + lane])
        x0 += bias;
        x1 += bias;
        x2 += bias;
        x3 += bias;
        out[lane] = (x0 + t3) >> shift;
        out[56 + lane] = (x0 - t3) >> shift;
        out[8 + lane] = (x1 + t2) >> shift;
        out[48 + lane] = (x1 - t2) >> shift;
        out[16 + lane] = (x2 + t1) >> shift;
        out[40 + lane] = (x2 - t1) >> shift;
        out[24 + lane] = (x3 + t0) >> shift;
        out[32 + lane] = (x3 - t0) >> shift;
    }
}

/* one 8x8 block: quantised coefficients (natural order) -> pixels at out (row stride `stride`).
 * stb skips all-zero columns in the first pass (their result is the DC term * 4, which the full formula also
 * gives) and has a SIMD version with the same results; here both passes run on all lanes, vectorised. */
static inline void idct_block(const int16_t *coef, const int32_t *qt, uint8_t *out, Py_ssize_t stride)
{
    int d[64], v[64], vt[64], o[64];
    int i, j, nz = 0;
    for (i = 0; i < 64; ++i) {
        d[i] = (int16_t)(coef[i] * qt[i]);        /* stb dequantises into short */
        nz |= (i > 0) & (d[i] != 0);
    }
    if (!nz) {                                    /* DC only: a flat block (the general path gives the same) */
        /* pass 1 gives d0*4 in every row of column 0; pass 2 then x0 = d0*4*4096 + bias, all else 0 */
        uint8_t val = clamp255((d[0] * 4 * 4096 + 65536 + (128 << 17)) >> 17);
        for (i = 0; i < 8; ++i)
            memset(out + i * stride, val, 8);
        return;
    }
    idct_pass(d, v, 512, 10);                     /* columns: lane = column, v[row*8 + col] */
    for (i = 0; i < 8; ++i)                       /* rows as lanes: vt[k*8 + row] = v[row*8 + k] */
        for (j = 0; j < 8; ++j)
            vt[j * 8 + i] = v[i * 8 + j];
    idct_pass(vt, o, 65536 + (128 << 17), 17);    /* o[col*8 + row] */
    for (i = 0; i < 8; ++i)
        for (j = 0; j < 8; ++j)
            out[i * stride + j] = clamp255(o[j * 8 + i]);
}

typedef struct {
    const int16_t *coef;
    const int32_t *qt;
    uint8_t *out;
    Py_ssize_t bw;
} IdctJob;

MULTIVERSION
static void idct_rows(void *ctx, Py_ssize_t by0, Py_ssize_t by1)
{
    const IdctJob *j = (const IdctJob *)ctx;
    Py_ssize_t by, bx, stride = j->bw * 8;
    for (by = by0; by < by1; ++by)
        for (bx = 0; bx < j->bw; ++bx)
            idct_block(j->coef + (by * j->bw + bx) * 64, j->qt, j->out + by * 8 * stride + bx * 8, stride);
}

static int need(Py_buffer *b, Py_ssize_t bytes, const char *what)
{
    if (b->len < bytes) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes, need %zd", what, b->len, bytes);
        return 0;
    }
    return 1;
}

/* idct_plane(coef int16 (bh, bw, 8, 8), qt int32 (64,) natural order, out uint8 (bh*8, bw*8), bh, bw) */
static PyObject *py_idct_plane(PyObject *self, PyObject *args)
{
    Py_buffer coef, qt, out;
    Py_ssize_t bh, bw;
    PyObject *ret = NULL;
    if (!PyArg_ParseTuple(args, "y*y*w*nn", &coef, &qt, &out, &bh, &bw))
        return NULL;
    if (bh >= 0 && bw >= 0 && need(&coef, bh * bw * 128, "coef") && need(&qt, 256, "qt") &&
        need(&out, bh * bw * 64, "out")) {
        Py_BEGIN_ALLOW_THREADS
        IdctJob job = {(const int16_t *)coef.buf, (const int32_t *)qt.buf, (uint8_t *)out.buf, bw};
        run_parallel(idct_rows, &job, bh, 512 / (bw + 1) + 1);
        Py_END_ALLOW_THREADS
        Py_INCREF(Py_None);
        ret = Py_None;
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "negative block counts");
    }
    PyBuffer_Release(&coef);
    PyBuffer_Release(&qt);
    PyBuffer_Release(&out);
    return ret;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* up-sampling + colour conversion                                                                             */

typedef struct {
    const uint8_t *data;   /* the component's decoded samples */
    Py_ssize_t stride;     /* bytes per row of data */
    Py_ssize_t comp_h;     /* rows of the component (stb's img_comp[k].y) */
    int hs, vs;            /* up-sampling factors hmax/h, vmax/v */
    Py_ssize_t w_lores;    /* (width + hs - 1) / hs */
    int ystep;             /* stb's stbi__resample state */
    Py_ssize_t ypos, line0, line1;
    uint8_t *buf;          /* hs * w_lores (+ 2) bytes */
} Resample;

static const uint8_t *resample_row(Resample *r, const uint8_t *near, const uint8_t *far)
{
    Py_ssize_t i, w = r->w_lores;
    uint8_t *out = r->buf;
    if (r->hs == 1 && r->vs == 1)
        return near;
    if (r->hs == 1 && r->vs == 2) {
        for (i = 0; i < w; ++i)
            out[i] = (uint8_t)((3 * near[i] + far[i] + 2) >> 2);
        return out;
    }
    if (r->hs == 2 && r->vs == 1) {
        if (w == 1) {
            out[0] = out[1] = near[0];
            return out;
        }
        out[0] = near[0];
        out[1] = (uint8_t)((near[0] * 3 + near[1] + 2) >> 2);
        for (i = 1; i < w - 1; ++i) {
            int n = 3 * near[i] + 2;
            out[i * 2] = (uint8_t)((n + near[i - 1]) >> 2);
            out[i * 2 + 1] = (uint8_t)((n + near[i + 1]) >> 2);
        }
        out[i * 2] = (uint8_t)((near[w - 2] * 3 + near[w - 1] + 2) >> 2);
        out[i * 2 + 1] = near[w - 1];
        return out;
    }
    if (r->hs == 2 && r->vs == 2) {
        int t0, t1;
        if (w == 1) {
            out[0] = out[1] = (uint8_t)((3 * near[0] + far[0] + 2) >> 2);
            return out;
        }
        t1 = 3 * near[0] + far[0];
        out[0] = (uint8_t)((t1 + 2) >> 2);
        for (i = 1; i < w; ++i) {
            t0 = t1;
            t1 = 3 * near[i] + far[i];
            out[i * 2 - 1] = (uint8_t)((3 * t0 + t1 + 8) >> 4);
            out[i * 2] = (uint8_t)((3 * t1 + t0 + 8) >> 4);
        }
        out[w * 2 - 1] = (uint8_t)((t1 + 2) >> 2);
        return out;
    }
    for (i = 0; i < w; ++i) {                     /* generic: nearest */
        int j;
        for (j = 0; j < r->hs; ++j)
            out[i * r->hs + j] = near[i];
    }
    return out;
}

/* advance stb's per-component state by one output row */
static inline void resample_step(Resample *r)
{
    if (++r->ystep >= r->vs) {
        r->ystep = 0;
        r->line0 = r->line1;
        if (++r->ypos < r->comp_h)
            r->line1 += 1;
    }
}

/* the up-sampled row for the next output row */
static const uint8_t *next_row(Resample *r)
{
    int y_bot = r->ystep >= (r->vs >> 1);
    const uint8_t *l0 = r->data + r->line0 * r->stride, *l1 = r->data + r->line1 * r->stride;
    const uint8_t *row = resample_row(r, y_bot ? l1 : l0, y_bot ? l0 : l1);
    resample_step(r);
    return row;
}

#define FLOAT2FIXED(x) (((int)((x) * 4096.0f + 0.5f)) << 8)

static inline void ycbcr_row(uint8_t *out, const uint8_t *y, const uint8_t *pcb, const uint8_t *pcr, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; ++i) {
        int y_fixed = (y[i] << 20) + (1 << 19);
        int cr = pcr[i] - 128, cb = pcb[i] - 128;
        int r = y_fixed + cr * FLOAT2FIXED(1.40200f);
        int g = y_fixed + (cr * -FLOAT2FIXED(0.71414f)) + ((cb * -FLOAT2FIXED(0.34414f)) & (int)0xffff0000u);
        int b = y_fixed + cb * FLOAT2FIXED(1.77200f);
        out[3 * i] = clamp255(r >> 20);
        out[3 * i + 1] = clamp255(g >> 20);
        out[3 * i + 2] = clamp255(b >> 20);
    }
}

typedef struct {
    Resample rs[3];               /* the state before the first output row */
    int n, mode, failed;
    uint8_t *out;
    Py_ssize_t width;
} UpsampleJob;

MULTIVERSION
static void upsample_rows(void *ctx, Py_ssize_t j0, Py_ssize_t j1)
{
    UpsampleJob *job = (UpsampleJob *)ctx;
    Resample rs[3];
    Py_ssize_t j, i, width = job->width, per = 0;
    int k, n = job->n;
    uint8_t *bufs, *p, *o = job->out + j0 * width * 3;
    memcpy(rs, job->rs, sizeof rs);
    for (k = 0; k < n; ++k)
        per += rs[k].hs * rs[k].w_lores + 2;
    if (!(bufs = (uint8_t *)malloc((size_t)per))) {
        job->failed = 1;
        return;
    }
    for (k = 0, p = bufs; k < n; ++k) {
        rs[k].buf = p;
        p += rs[k].hs * rs[k].w_lores + 2;
        for (j = 0; j < j0; ++j)                  /* this part's starting state */
            resample_step(&rs[k]);
    }
    for (j = j0; j < j1; ++j, o += width * 3) {
        const uint8_t *c[3];
        for (k = 0; k < n; ++k)
            c[k] = next_row(&rs[k]);
        if (job->mode == 1) {
            ycbcr_row(o, c[0], c[1], c[2], width);
        } else if (job->mode == 2) {
            for (i = 0; i < width; ++i) {
                o[3 * i] = c[0][i];
                o[3 * i + 1] = c[1][i];
                o[3 * i + 2] = c[2][i];
            }
        } else {
            for (i = 0; i < width; ++i)
                o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = c[0][i];
        }
    }
    free(bufs);
}

/* upsample_rgb(out uint8 (height, width, 3), width, height, mode, planes)
 * mode 0: one component, grey -> R=G=B; 1: three components YCbCr -> RGB; 2: three components taken as RGB.
 * planes: tuple of (data uint8, comp_h, stride, hs, vs), one per component. */
static PyObject *py_upsample_rgb(PyObject *self, PyObject *args)
{
    Py_buffer out, views[3];
    UpsampleJob job;
    Py_ssize_t width, height;
    int mode, n, k, nviews = 0, ok = 1;
    PyObject *planes, *ret = NULL;
    if (!PyArg_ParseTuple(args, "w*nniO!", &out, &width, &height, &mode, &PyTuple_Type, &planes))
        return NULL;
    n = (int)PyTuple_GET_SIZE(planes);
    if (!((mode == 0 && n == 1) || (mode >= 1 && mode <= 2 && n == 3)) || width < 1 || height < 1) {
        PyErr_SetString(PyExc_ValueError, "upsample_rgb: bad mode, component count or size");
        ok = 0;
    }
    ok = ok && need(&out, width * height * 3, "out");
    memset(&job, 0, sizeof job);
    for (k = 0; ok && k < n; ++k) {
        Resample *r = &job.rs[k];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(planes, k), "y*nnii", &views[k], &r->comp_h, &r->stride, &r->hs,
                              &r->vs)) {
            ok = 0;
            break;
        }
        nviews++;
        r->data = (const uint8_t *)views[k].buf;
        if (r->hs < 1 || r->vs < 1 || r->comp_h < 1) {
            PyErr_SetString(PyExc_ValueError, "upsample_rgb: bad sampling factors");
            ok = 0;
            break;
        }
        r->w_lores = (width + r->hs - 1) / r->hs;
        if (r->stride < r->w_lores) {
            PyErr_SetString(PyExc_ValueError, "upsample_rgb: plane narrower than the image");
            ok = 0;
            break;
        }
        ok = need(&views[k], r->comp_h * r->stride, "plane");
        r->ystep = r->vs >> 1;
        r->ypos = r->line0 = r->line1 = 0;
    }
    if (ok) {
        job.n = n;
        job.mode = mode;
        job.out = (uint8_t *)out.buf;
        job.width = width;
        Py_BEGIN_ALLOW_THREADS
        run_parallel(upsample_rows, &job, height, 32768 / width + 8);
        Py_END_ALLOW_THREADS
        if (job.failed) {
            PyErr_NoMemory();
        } else {
            Py_INCREF(Py_None);
            ret = Py_None;
        }
    }
    for (k = 0; k < nviews; ++k)
        PyBuffer_Release(&views[k]);
    PyBuffer_Release(&out);
    return ret;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Darknet's resize_image on (float)(u8 / 255.) pixels                                                        */

typedef struct {
    const uint8_t *src;
    Py_ssize_t ih, iw, h, w;
    int ch[3];                    /* source channel of output channel k (BGR input: reversed) */
    const float *lut;
    float *out;
    const int32_t *ix;            /* horizontal taps: ix[c], dx[c] */
    const float *dx;
    float h_scale;
    int failed;
} ResizeJob;

/* one row of resize_image's horizontal pass, one plane per channel: part[k*w + c] */
static inline void resize_hrow(const ResizeJob *j, const uint8_t *src, float *part)
{
    Py_ssize_t c, w = j->w, iw = j->iw;
    const float *lut = j->lut;
    int k;
    for (k = 0; k < 3; ++k) {
        int sk = j->ch[k];
        float *pk = part + k * w;
        for (c = 0; c < w - 1; ++c) {
            Py_ssize_t i0 = j->ix[c], i1 = i0 + 1 < iw ? i0 + 1 : iw - 1;
            float a = (1.0f - j->dx[c]) * lut[src[i0 * 3 + sk]];
            float b = j->dx[c] * lut[src[i1 * 3 + sk]];
            pk[c] = a + b;
        }
        pk[w - 1] = lut[src[(iw - 1) * 3 + sk]];   /* the last column copies the edge */
    }
}

MULTIVERSION
static void resize_rows(void *ctx, Py_ssize_t r0, Py_ssize_t r1)
{
    ResizeJob *j = (ResizeJob *)ctx;
    Py_ssize_t c, r, h = j->h, w = j->w, ih = j->ih, tag[2] = {-1, -1};
    float *rows = (float *)malloc((size_t)w * 6 * sizeof(float)), *slot[2];
    int next = 0;
    if (!rows) {
        j->failed = 1;
        return;
    }
    slot[0] = rows;
    slot[1] = rows + w * 3;
    for (r = r0; r < r1; ++r) {
        float sy = (float)r * j->h_scale;
        Py_ssize_t iy = (Py_ssize_t)sy, iy1;
        float dy = sy - (float)iy, wy;
        if (iy > ih - 1) {                        /* (float)(ih-1) rounded up (ih > 2^24): the edge, dy = 0 */
            iy = ih - 1;
            dy = 0.0f;
        }
        iy1 = iy + 1 < ih ? iy + 1 : ih - 1;
        wy = 1.0f - dy;
        int last = (r == h - 1 || ih == 1), q, k;
        Py_ssize_t want[2] = {iy, iy1};
        const float *p[2] = {NULL, NULL};
        for (q = 0; q < (last ? 1 : 2); ++q) {
            if (tag[0] == want[q]) {
                p[q] = slot[0];
            } else if (tag[1] == want[q]) {
                p[q] = slot[1];
            } else {                              /* into the slot not holding the other wanted row */
                int sl = next;
                if (q == 1 && tag[sl] == want[0])
                    sl ^= 1;
                resize_hrow(j, j->src + want[q] * j->iw * 3, slot[sl]);
                tag[sl] = want[q];
                next = sl ^ 1;
                p[q] = slot[sl];
            }
        }
        for (k = 0; k < 3; ++k) {
            float *o = j->out + (k * h + r) * w;
            const float *p0 = p[0] + k * w, *p1 = last ? p0 : p[1] + k * w;
            if (last) {
                for (c = 0; c < w; ++c)
                    o[c] = wy * p0[c];
            } else {
                for (c = 0; c < w; ++c) {             /* vectorises: separate products, then the sum */
                    float v = wy * p0[c];
                    float t = dy * p1[c];
                    o[c] = v + t;
                }
            }
        }
    }
    free(rows);
}

/* resize_chw(src uint8 (ih, iw, 3), ih, iw, bgr, lut float32 (256,), out float32 (3, h, w), h, w) */
static PyObject *py_resize_chw(PyObject *self, PyObject *args)
{
    Py_buffer src, lut, out;
    Py_ssize_t ih, iw, h, w, c;
    int bgr, k;
    PyObject *ret = NULL;
    if (!PyArg_ParseTuple(args, "y*nnpy*w*nn", &src, &ih, &iw, &bgr, &lut, &out, &h, &w))
        return NULL;
    if (ih < 1 || iw < 1 || h < 1 || w < 1) {
        PyErr_SetString(PyExc_ValueError, "resize_chw: empty image");
    } else if (ih > INT32_MAX || iw > INT32_MAX || h > INT32_MAX || w > INT32_MAX || ih > PY_SSIZE_T_MAX / 3 / iw
               || h > PY_SSIZE_T_MAX / 12 / w) {
        PyErr_SetString(PyExc_ValueError, "resize_chw: image too large");
    } else if (need(&src, ih * iw * 3, "src") && need(&lut, 256 * 4, "lut") && need(&out, 3 * h * w * 4, "out")) {
        void *mem = malloc((size_t)w * (sizeof(int32_t) + sizeof(float)));
        if (!mem) {
            PyErr_NoMemory();
        } else {
            ResizeJob job;
            int32_t *ix = (int32_t *)mem;
            float *dx = (float *)(ix + w);
            float w_scale = w > 1 ? (float)(iw - 1) / (float)(w - 1) : 0.0f;
            for (c = 0; c < w; ++c) {             /* Darknet: float sx = c*w_scale; int ix = (int)sx; dx = sx-ix */
                float sx = (float)c * w_scale;
                ix[c] = (int32_t)sx;
                dx[c] = sx - (float)ix[c];
                if (ix[c] > iw - 1) {             /* past the last column (iw > 2^24): the edge, dx = 0 */
                    ix[c] = (int32_t)(iw - 1);
                    dx[c] = 0.0f;
                }
            }
            job.src = (const uint8_t *)src.buf;
            job.ih = ih;
            job.iw = iw;
            job.h = h;
            job.w = w;
            for (k = 0; k < 3; ++k)
                job.ch[k] = bgr ? 2 - k : k;
            job.lut = (const float *)lut.buf;
            job.out = (float *)out.buf;
            job.ix = ix;
            job.dx = dx;
            job.h_scale = h > 1 ? (float)(ih - 1) / (float)(h - 1) : 0.0f;
            job.failed = 0;
            Py_BEGIN_ALLOW_THREADS
            run_parallel(resize_rows, &job, h, 32);
            Py_END_ALLOW_THREADS
            free(mem);
            if (job.failed) {
                PyErr_NoMemory();
            } else {
                Py_INCREF(Py_None);
                ret = Py_None;
            }
        }
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&lut);
    PyBuffer_Release(&out);
    return ret;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Huffman-coded sequential scans (ITU T.81 F.2): quantised coefficients, as libjpeg or stb entropy-decode them */

#define FAST_BITS 10

typedef struct {
    uint8_t fast_len[1 << FAST_BITS];   /* code length of a FAST_BITS-bit prefix, 0: longer code (slow path) */
    uint8_t fast_val[1 << FAST_BITS];
    int32_t fast_ac[1 << FAST_BITS];    /* AC tables: code and coefficient bits together, 0 if they do not fit:
                                           value * 256 + run * 16 + total length */
    int32_t maxcode[18];                /* largest code of each length, -1 if none */
    int32_t valoff[17];                 /* index of the first value of each length minus its first code */
    uint8_t vals[256];
} Huff;

static inline int extend(int v, int s)
{
    return v < (1 << (s - 1)) ? v - (1 << s) + 1 : v;
}

/* a DHT table's 16 counts + values -> decoding tables; 0 when the counts are inconsistent */
static int huff_build(Huff *t, const uint8_t *spec, Py_ssize_t len, int is_ac)
{
    int l, i, j, n = 0, code = 0, k = 0;
    if (len < 16)
        return 0;
    for (l = 0; l < 16; ++l)
        n += spec[l];
    if (n > 256 || len < 16 + n)
        return 0;
    memcpy(t->vals, spec + 16, (size_t)n);
    memset(t->fast_len, 0, sizeof t->fast_len);
    memset(t->fast_ac, 0, sizeof t->fast_ac);
    for (l = 1; l <= 16; ++l) {
        int cnt = spec[l - 1];
        t->valoff[l] = k - code;
        for (i = 0; i < cnt; ++i, ++k, ++code) {
            if (code >= (1 << l))
                return 0;                         /* over-subscribed */
            if (l <= FAST_BITS) {
                int shift = FAST_BITS - l;
                for (j = 0; j < (1 << shift); ++j) {
                    int idx = (code << shift) | j, rs = t->vals[k], run = rs >> 4, sz = rs & 15;
                    t->fast_len[idx] = (uint8_t)l;
                    t->fast_val[idx] = (uint8_t)rs;
                    if (is_ac && sz && l + sz <= FAST_BITS) {
                        int bits = (idx >> (FAST_BITS - l - sz)) & ((1 << sz) - 1);
                        t->fast_ac[idx] = extend(bits, sz) * 256 + run * 16 + l + sz;
                    }
                }
            }
        }
        t->maxcode[l] = cnt ? code - 1 : -1;
        code <<= 1;
    }
    t->maxcode[17] = 0x7fffffff;
    return 1;
}

typedef struct {
    const uint8_t *data;
    Py_ssize_t len, pos;
    uint64_t acc;                 /* bits, most significant first */
    int nbits;
    int marker;                   /* a marker stopped the input (0: none yet) */
} Bits;

/* at least 57 bits in the buffer; past a marker or the end of the data, zeros (as libjpeg and stb do) */
static inline void bits_fill(Bits *b)
{
    if (!b->marker && b->pos + 8 <= b->len) {    /* fast path: the next bytes hold no 0xFF */
        int nbytes = (63 - b->nbits) >> 3;
        uint64_t w, x, t;
        memcpy(&w, b->data + b->pos, 8);
        x = ~w;                                   /* a 0xFF byte is a zero byte of x */
        t = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
        if (nbytes > 0 && !(t & ((1ULL << (nbytes * 8)) - 1))) {
            uint64_t be = __builtin_bswap64(w) >> (64 - nbytes * 8);
            b->acc |= be << (64 - b->nbits - nbytes * 8);
            b->nbits += nbytes * 8;
            b->pos += nbytes;
            if (b->nbits > 56)
                return;
        }
    }
    while (b->nbits <= 56) {
        unsigned v = 0;
        if (!b->marker && b->pos < b->len) {
            v = b->data[b->pos];
            if (v == 0xFF) {
                unsigned nx = b->pos + 1 < b->len ? b->data[b->pos + 1] : 0xD9;
                if (nx == 0x00) {
                    b->pos += 2;
                } else {
                    b->marker = (int)nx;          /* leave pos at the marker */
                    v = 0;
                }
            } else {
                b->pos += 1;
            }
        }
        b->acc |= (uint64_t)v << (56 - b->nbits);
        b->nbits += 8;
    }
}

static inline void bits_skip(Bits *b, int n)
{
    b->acc <<= n;
    b->nbits -= n;
}

/* one Huffman symbol; needs >= 16 bits in the buffer; -1: no such code */
static inline int huff_decode(Bits *b, const Huff *t)
{
    unsigned peek = (unsigned)(b->acc >> (64 - FAST_BITS));
    int l = t->fast_len[peek], code;
    if (l) {
        bits_skip(b, l);
        return t->fast_val[peek];
    }
    for (l = FAST_BITS + 1; l <= 16; ++l) {
        code = (int)(b->acc >> (64 - l));
        if (code <= t->maxcode[l]) {
            bits_skip(b, l);
            return t->vals[t->valoff[l] + code];
        }
    }
    return -1;
}

/* the next Huffman symbol, refilling first: a symbol and its value bits (<= 32) are then in the buffer */
static inline int next_symbol(Bits *b, const Huff *t)
{
    if (b->nbits < 32)
        bits_fill(b);
    return huff_decode(b, t);
}

/* s raw bits, sign-extended; needs >= s bits in the buffer */
static inline int receive_extend(Bits *b, int s)
{
    int v;
    if (s == 0)
        return 0;
    v = (int)(b->acc >> (64 - s));
    bits_skip(b, s);
    return extend(v, s);
}

static const uint8_t ZIGZAG[80] = {
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
    54, 47, 55, 62, 63,
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63};   /* guards: a run past 63 is caught below */

/* one block: 0 ok, -1 corrupt. Each symbol is at most 16 code bits + 16 value bits: one fill per symbol. */
static inline int decode_block(Bits *b, const Huff *dc, const Huff *ac, int *pred, int16_t *blk)
{
    int s, k;
    memset(blk, 0, 64 * sizeof(int16_t));
    s = next_symbol(b, dc);
    if (s < 0 || s > 16)
        return -1;
    *pred += receive_extend(b, s);
    blk[0] = (int16_t)*pred;
    for (k = 1; k < 64;) {
        int rs, f;
        if (b->nbits < 32)
            bits_fill(b);
        f = ac->fast_ac[b->acc >> (64 - FAST_BITS)];
        if (f) {                                  /* code + value in one look-up */
            k += (f >> 4) & 15;
            bits_skip(b, f & 15);
            blk[ZIGZAG[k]] = (int16_t)(f >> 8);
            ++k;
            continue;
        }
        rs = huff_decode(b, ac);
        if (rs < 0)
            return -1;
        s = rs & 15;
        if (s == 0) {
            if (rs != 0xF0)
                break;                            /* end of block */
            k += 16;
            continue;
        }
        k += rs >> 4;
        blk[ZIGZAG[k]] = (int16_t)receive_extend(b, s);
        ++k;
    }
    return k > 64 ? -1 : 0;
}

/* progressive scans (T.81 G.1.2): the block accumulates over scans; no clearing here */

static inline int get_bit(Bits *b)
{
    int v;
    if (b->nbits < 1)
        bits_fill(b);
    v = (int)(b->acc >> 63);
    bits_skip(b, 1);
    return v;
}

static inline int get_bits(Bits *b, int n)
{
    int v;
    if (n == 0)
        return 0;
    if (b->nbits < n)
        bits_fill(b);
    v = (int)(b->acc >> (64 - n));
    bits_skip(b, n);
    return v;
}

/* DC, first scan: the predicted difference, shifted up by Al */
static inline int decode_dc_first(Bits *b, const Huff *dc, int *pred, int al, int16_t *blk)
{
    int s;
    s = next_symbol(b, dc);
    if (s < 0 || s > 16)
        return -1;
    *pred += receive_extend(b, s);
    blk[0] = (int16_t)(*pred * (1 << al));
    return 0;
}

/* AC, first scan of a band: coefficients ss..se shifted up by al; *eobrun counts the blocks of an EOB run */
static inline int decode_ac_first(Bits *b, const Huff *ac, int ss, int se, int al, int *eobrun, int16_t *blk)
{
    int k;
    if (*eobrun > 0) {
        --*eobrun;
        return 0;
    }
    for (k = ss; k <= se; ++k) {
        int rs, r, s;
        rs = next_symbol(b, ac);
        if (rs < 0)
            return -1;
        r = rs >> 4;
        s = rs & 15;
        if (s) {
            k += r;
            if (k > se)
                return -1;
            blk[ZIGZAG[k]] = (int16_t)(receive_extend(b, s) * (1 << al));
        } else if (r == 15) {
            k += 15;                              /* sixteen zeros (with the loop's step) */
        } else {
            *eobrun = (1 << r) - 1;               /* this block ends the band, and so do the next ones */
            if (r)
                *eobrun += get_bits(b, r);
            break;
        }
    }
    return 0;
}

/* a correction bit for an already non-zero coefficient: adds one more bit of magnitude at position al */
static inline void refine(Bits *b, int16_t *c, int p1)
{
    if (get_bit(b) && (*c & p1) == 0)
        *c = (int16_t)(*c >= 0 ? *c + p1 : *c - p1);
}

/* AC, refining scan: new coefficients of magnitude 1 << al, correction bits for the non-zero ones */
static inline int decode_ac_refine(Bits *b, const Huff *ac, int ss, int se, int al, int *eobrun, int16_t *blk)
{
    int k = ss, p1 = 1 << al;
    if (*eobrun == 0) {
        for (; k <= se; ++k) {
            int rs, r, s = 0;
            rs = next_symbol(b, ac);
            if (rs < 0)
                return -1;
            r = rs >> 4;
            if (rs & 15) {
                if ((rs & 15) != 1)
                    return -1;                    /* a new coefficient is always +-1 << al */
                s = get_bit(b) ? p1 : -p1;
            } else if (r != 15) {
                *eobrun = 1 << r;
                if (r)
                    *eobrun += get_bits(b, r);
                break;                            /* the rest of the band: correction bits only, below */
            }
            /* skip r zero coefficients (refining the non-zero ones on the way), land on the next zero one */
            for (; k <= se; ++k) {
                int16_t *c = &blk[ZIGZAG[k]];
                if (*c != 0)
                    refine(b, c, p1);
                else if (--r < 0)
                    break;
            }
            if (s) {
                if (k > se)
                    return -1;
                blk[ZIGZAG[k]] = (int16_t)s;
            }
        }
    }
    if (*eobrun > 0) {
        for (; k <= se; ++k) {
            int16_t *c = &blk[ZIGZAG[k]];
            if (*c != 0)
                refine(b, c, p1);
        }
        --*eobrun;
    }
    return 0;
}

typedef struct {
    Py_buffer coef;               /* int16 (rows_of_blocks, bw, 8, 8) */
    Py_ssize_t bw, bh;            /* blocks per row / rows in the buffer */
    int h, v;                     /* sampling factors */
    Py_ssize_t nbx, nby;          /* blocks coded in a non-interleaved scan */
    Huff dc, ac;
    int pred;
} ScanComp;

/* one block of the scan: 0 ok, -1 corrupt. The bit reader is copied into a local so that the compiler keeps it
 * in registers (through the caller's pointer it was stored back after every symbol: ~25 % slower). */
static inline int scan_block(Bits *b, ScanComp *c, int16_t *blk, int ss, int se, int ah, int al, int progressive,
                             int *eobrun)
{
    Bits bl = *b;
    int r, pred = c->pred, eob = *eobrun;
    if (!progressive) {
        r = decode_block(&bl, &c->dc, &c->ac, &pred, blk);
    } else if (ss == 0) {
        if (ah == 0) {
            r = decode_dc_first(&bl, &c->dc, &pred, al, blk);
        } else {
            if (get_bit(&bl))
                blk[0] = (int16_t)(blk[0] | (1 << al));
            r = 0;
        }
    } else {
        r = ah == 0 ? decode_ac_first(&bl, &c->ac, ss, se, al, &eob, blk)
                    : decode_ac_refine(&bl, &c->ac, ss, se, al, &eob, blk);
    }
    *b = bl;
    c->pred = pred;
    *eobrun = eob;
    return r;
}

/* decode_scan(data, pos, restart_interval, mcus_x, mcus_y, progressive, ss, se, ah, al, comps) -> position of the
 * marker after the scan, or -1 when the entropy-coded data is corrupt. comps: one (coef, bw, bh, h, v, nbx, nby,
 * dc_spec, ac_spec) per scan component (a spec may be empty when the scan does not use it); a scan of one
 * component codes nbx x nby blocks in raster order, one of several components mcus_x x mcus_y MCUs of h x v
 * blocks each. Sequential scans write whole blocks; progressive ones add their band / bits to what is there. */
static PyObject *py_decode_scan(PyObject *self, PyObject *args)
{
    Py_buffer data;
    Py_ssize_t pos, mx, my, nmcu, m;
    int ri, n, k, nviews = 0, ok = 1, err = 0, progressive, ss, se, ah, al, eobrun = 0;
    PyObject *comps, *ret = NULL;
    ScanComp *sc = NULL;
    Bits b;
    if (!PyArg_ParseTuple(args, "y*ninniiiiiO!", &data, &pos, &ri, &mx, &my, &progressive, &ss, &se, &ah, &al,
                          &PyTuple_Type, &comps))
        return NULL;
    n = (int)PyTuple_GET_SIZE(comps);
    if (n < 1 || n > 4 || pos < 0 || pos > data.len || mx < 1 || my < 1 || ri < 0 || ss < 0 || se > 63 ||
        ss > se || ah < 0 || ah > 13 || al < 0 || al > 13 || (progressive && ss > 0 && n != 1) ||
        (progressive && ss == 0 && se != 0) || (!progressive && (ss != 0 || se != 63 || ah || al))) {
        PyErr_SetString(PyExc_ValueError, "decode_scan: bad arguments");
        ok = 0;
    }
    if (ok && !(sc = (ScanComp *)calloc((size_t)n, sizeof(ScanComp)))) {
        PyErr_NoMemory();
        ok = 0;
    }
    for (k = 0; ok && k < n; ++k) {
        ScanComp *c = &sc[k];
        Py_buffer dcs, acs;
        int need_dc = !progressive || (ss == 0 && ah == 0), need_ac = !progressive || ss > 0;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(comps, k), "w*nniinny*y*", &c->coef, &c->bw, &c->bh, &c->h, &c->v,
                              &c->nbx, &c->nby, &dcs, &acs)) {
            ok = 0;
            break;
        }
        nviews++;
        if ((need_dc && !huff_build(&c->dc, (const uint8_t *)dcs.buf, dcs.len, 0)) ||
            (need_ac && !huff_build(&c->ac, (const uint8_t *)acs.buf, acs.len, 1))) {
            PyErr_SetString(PyExc_ValueError, "decode_scan: bad Huffman table");
            ok = 0;
        }
        PyBuffer_Release(&dcs);
        PyBuffer_Release(&acs);
        if (ok && (c->h < 1 || c->v < 1 || c->bw < 1 || c->bh < 1 ||
                   (n == 1 ? (c->nbx > c->bw || c->nby > c->bh)
                           : (mx * c->h > c->bw || my * c->v > c->bh)))) {
            PyErr_SetString(PyExc_ValueError, "decode_scan: coefficient buffer smaller than the scan");
            ok = 0;
        }
        ok = ok && need(&c->coef, c->bw * c->bh * 128, "coef");
    }
    if (ok) {
        b.data = (const uint8_t *)data.buf;
        b.len = data.len;
        b.pos = pos;
        b.acc = 0;
        b.nbits = 0;
        b.marker = 0;
        nmcu = n == 1 ? sc[0].nbx * sc[0].nby : mx * my;
        Py_BEGIN_ALLOW_THREADS
        for (m = 0; m < nmcu && !err; ++m) {
            if (ri && m && m % ri == 0) {         /* restart: byte-align, expect RSTn, reset the predictors */
                int want = 0xD0 + (int)((m / ri - 1) & 7);
                b.acc = 0;
                b.nbits = 0;
                if (!b.marker) {                  /* the marker was not reached yet: it must be next */
                    if (b.pos + 1 < b.len && b.data[b.pos] == 0xFF)
                        b.marker = b.data[b.pos + 1];
                }
                if (b.marker != want) {
                    err = 1;
                    break;
                }
                b.pos += 2;
                b.marker = 0;
                eobrun = 0;
                for (k = 0; k < n; ++k)
                    sc[k].pred = 0;
            }
            if (n == 1) {
                ScanComp *c = &sc[0];
                Py_ssize_t by = m / c->nbx, bx = m % c->nbx;
                err = scan_block(&b, c, (int16_t *)c->coef.buf + (by * c->bw + bx) * 64, ss, se, ah, al,
                                 progressive, &eobrun);
            } else {
                Py_ssize_t mby = m / mx, mbx = m % mx;
                for (k = 0; k < n && !err; ++k) {
                    ScanComp *c = &sc[k];
                    int x, y;
                    for (y = 0; y < c->v && !err; ++y)
                        for (x = 0; x < c->h && !err; ++x) {
                            Py_ssize_t by = mby * c->v + y, bx = mbx * c->h + x;
                            err = scan_block(&b, c, (int16_t *)c->coef.buf + (by * c->bw + bx) * 64, ss, se, ah,
                                             al, progressive, &eobrun);
                        }
                }
            }
        }
        Py_END_ALLOW_THREADS
        if (err) {
            ret = PyLong_FromSsize_t(-1);
        } else {
            /* the next marker: skip what is left of the entropy-coded data (stuffed 0xFF00 and RSTn included) */
            Py_ssize_t p = b.marker ? b.pos : b.pos - b.nbits / 8;
            const uint8_t *d = (const uint8_t *)data.buf;
            if (p < pos)
                p = pos;
            while (p + 1 < data.len && !(d[p] == 0xFF && d[p + 1] != 0x00 && !(d[p + 1] >= 0xD0 && d[p + 1] <= 0xD7)))
                ++p;
            ret = PyLong_FromSsize_t(p + 1 < data.len ? p : data.len);
        }
    }
    for (k = 0; k < nviews; ++k)
        PyBuffer_Release(&sc[k].coef);
    free(sc);
    PyBuffer_Release(&data);
    return ret;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Darknet's mish, x * tanh(softplus(x)) with softplus(x) = x above 20 (activations.c, MISH_THRESHOLD), in place:
 * tanh(log(1 + e^x)) = n / (n + 2) with n = e^x (e^x + 2), one exp and one division per value. The exp is a
 * branch-free polynomial (Cephes' expf: 2^k * p(r), |rel err| < 2e-7) so that the loop vectorises: an AVX-512
 * clone (masked selects) picked at load time where the CPU has it, the plain loop elsewhere. Within 2e-6 of
 * Darknet's float64 value; torch's F.mish takes ~4 ns per value on one Zen 4 core, this ~0.7 ns (2.77 M values:
 * 11.1 -> 1.9 ms), and the plan runs it on every mish convolution's output (yolov4: 72 layers). */
static inline float exp_poly(float x)
{
    float k, r, p;
    union { float f; int32_t i; } u;
    x = x > -87.0f ? x : -87.0f;              /* callers clamp above (mish: 20) */
    k = x * 1.44269504088896341f;
    k = (k + 12582912.0f) - 12582912.0f;      /* round to nearest (|k| < 2^22): 1.5 * 2^23 */
    r = x - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    u.i = ((int32_t)k + 127) << 23;
    return p * u.f;
}

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
__attribute__((target_clones("avx512f", "default")))
#endif
static void mish_span(float *x, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; ++i) {
        float v = x[i], e = exp_poly(v < 20.0f ? v : 20.0f), q = e * (e + 2.0f), m = v * q / (q + 2.0f);
        x[i] = v > 20.0f ? v : m;
    }
}

static void mish_range(void *ctx, Py_ssize_t b, Py_ssize_t e)
{
    mish_span((float *)ctx + b, e - b);
}

/* mish_inplace(float32 buffer): Darknet's mish on every value, in place, split over the OpenMP team */
static PyObject *py_mish_inplace(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "w*", &buf))
        return NULL;
    if (buf.len % 4) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "mish_inplace: not a float32 buffer");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    run_parallel(mish_range, buf.buf, buf.len / 4, 1 << 15);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"idct_plane", py_idct_plane, METH_VARARGS, "stb_image's dequantisation + IDCT of a whole plane."},
    {"upsample_rgb", py_upsample_rgb, METH_VARARGS, "stb_image's up-sampling and colour conversion."},
    {"decode_scan", py_decode_scan, METH_VARARGS, "Entropy-decode one Huffman-coded scan (sequential or progressive)."},
    {"set_threads", py_set_threads, METH_VARARGS,
     "Threads for the kernels (0: OpenMP's default); returns the previous setting."},
    {"openmp", py_openmp, METH_NOARGS, "OpenMP's default thread count, 0 when built without OpenMP."},
    {"mish_inplace", py_mish_inplace, METH_VARARGS, "Darknet's mish in place on a float32 buffer."},
    {"resize_chw", py_resize_chw, METH_VARARGS, "Darknet's to-float + resize_image, uint8 HWC -> float32 CHW."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&moduledef);
}
