"""Regenerates the PRN-family cfgs in cfg/ from Darknet's corpus cfgs (../shared/cfg-corpus).

Run from the repository root: ``python cfg/tools/gen_prn.py``. The cfg headers document the schedules."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from darknet_prn.cfg import read_cfg_text  # noqa: E402
from darknet_prn.convert import convert_cfg_text  # noqa: E402

CORPUS = os.path.join(ROOT, "..", "shared", "cfg-corpus") + os.sep
OUT = os.path.join(ROOT, "cfg") + os.sep
STAGES = [(64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)]

def schedule():
    """filters of backbone conv layers 1..74 (darknet53 layout) for Darknet53-PRN."""
    f = {}
    idx = 1
    for C, n in STAGES:
        f[idx] = C; idx += 1
        for j in range(n):
            o = C - (C // 2) * (j + 1) // n
            assert (C // 2) * (j + 1) % n == 0
            f[idx] = o // 2; f[idx + 1] = o; idx += 3
    return f

def sub_lines(text, repl):
    lines = text.splitlines(keepends=True)
    for ln, new in repl.items():
        lines[ln - 1] = new
    return "".join(lines)

def fprn(text):
    # every [shortcut] from=-3 of the backbone -> [partial_shortcut] sparsity=0.5
    pat = re.compile(r"\[shortcut\]\nfrom=-3\nactivation=linear\n")
    n = len(pat.findall(text))
    assert n == 23, n
    return pat.sub("[partial_shortcut]\nfrom=-3\nsparsity=0.5\nactivation=linear\n", text)

def prn(text):
    secs = read_cfg_text(text)
    f = schedule()
    repl = {}
    for i, s in enumerate(secs[1:]):
        if i in f:
            assert s.type == "convolutional"
            o = s.options["filters"]
            repl[o.line] = f"filters={f[i]}\n"
    text = sub_lines(text, repl)
    pat = re.compile(r"\[shortcut\]\nfrom=-3\nactivation=linear\n")
    assert len(pat.findall(text)) == 23
    return pat.sub("[partial_shortcut]\nfrom=-3\nactivation=linear\n", text)

COMMON = """# Paper: C.-Y. Wang, H.-Y. M. Liao, P.-Y. Chen, J.-W. Hsieh, "Enriching Variety of Layer-wise
#        Learning Information by Gradient Combination", ICCV Workshops 2019 (PRN).
# [partial_shortcut] (spec: shared/spec/partial_shortcut.md) adds the residual to the first c channels only
# (eq. 1). Stock Darknet/OpenCV form: darknet-prn convert-cfg THIS.cfg --to darknet -o OUT.cfg
#   (same .weights file: [partial_shortcut] and the [route]/[shortcut] it lowers to carry no weights).
"""

FPRN_NOTE = """# Reading: "every residual with sparsity 0.5" = every one of Darknet53's 23 residual connections
# ([shortcut] from=-3) becomes [partial_shortcut] from=-3 sparsity=0.5: the first half of the channels
# receive the residual, the other half pass through (Fig. 2 / characteristic 1, rho = 0.5). Everything
# else (layers, channels, [net]) is unchanged, so the convolutions, BFLOPs and the .weights layout are
# identical to the original (Table 2 lists YOLO-v3-FPRN with exactly YOLO-v3's BFLOPs).
"""

def sched_note():
    lines = []
    idx = 1
    for k, (C, n) in enumerate(STAGES, 1):
        outs = [C - (C // 2) * (j + 1) // n for j in range(n)]
        lines.append(f"#   stage {k}: downsample {C}, blocks (1x1/3x3) " + " ".join(f"{o//2}/{o}" for o in outs))
    return "\n".join(lines) + "\n"

PRN_NOTE = """# Reading (the paper gives no per-layer table; Fig. 7c and the text say the channels of each stage
# decrease linearly to a reduce rate gamma = 0.5, Fig. 3 "PRN-shrink", with partial residuals across
# different channel counts):
#   * a stage keeps Darknet53's downsampling conv (C filters, 3x3/2) and block count n (1, 2, 8, 8, 4);
#   * block j (j = 1..n) ends with o_j = C - (C/2)*j/n channels, so the last block of every stage has
#     C/2 = gamma*C; its 1x1 bottleneck has o_j/2 filters (Darknet53's 1:2 ratio kept);
#   * each residual is [partial_shortcut] from=-3 without channels/sparsity: c = min(C_in, C_out) = o_j,
#     i.e. the first o_j of the o_{j-1} input channels are added (Darknet's own [shortcut] rule, so the
#     stock form is a plain [shortcut]);
#   * the next stage's downsampling conv reads the C/2 channels.
""" 

TINY = """# YOLO-v3-tiny-PRN (Table 3, Fig. 8 tiny-PRN head) in explicit form.
# This is the authors' yolov3-tiny-prn.cfg (github.com/WongKinYiu/PartialResidualNetworks) with its two
# [shortcut]s whose from-layer has more channels than the previous layer (layers 22 and 25: a 128-channel
# layer + the first 128 of layer 8's 256 channels) written as [partial_shortcut]; nothing else changed.
# Reading: nothing to interpret, the authors' cfg is the reference: same layers, same .weights file,
# same outputs. Table 3: 3.47 BFLOPs, 4.95M parameters (ours: 3.467 @416, 4,939,758 floats).
"""

def header(title, *notes):
    return title + COMMON + "".join(notes) + "\n"

y3 = open(CORPUS + "yolov3.cfg").read()
d53 = open(CORPUS + "darknet53.cfg").read()
tiny = open(CORPUS + "yolov3-tiny-prn.cfg").read()
open(OUT + "yolov3-tiny-prn.cfg", "w").write(header(TINY) + convert_cfg_text(tiny, "explicit"))
open(OUT + "darknet53-fprn.cfg", "w").write(header(
    "# Darknet53-FPRN (Fig. 7b, Table 1): Darknet53 (ImageNet classifier, darknet53.cfg) with sparse residuals.\n",
    FPRN_NOTE) + fprn(d53))
open(OUT + "yolov3-fprn.cfg", "w").write(header(
    "# YOLO-v3-FPRN (Table 1/2): YOLO-v3 (yolov3.cfg) whose Darknet53 backbone is Darknet53-FPRN (Fig. 7b).\n",
    FPRN_NOTE, "# The YOLO-v3 head (layers 75-106, routes from layers 36 and 61) is unchanged.\n") + fprn(y3))
open(OUT + "darknet53-prn.cfg", "w").write(header(
    "# Darknet53-PRN (Fig. 7c, Table 1): Darknet53 (ImageNet classifier, darknet53.cfg) with shrinking stages.\n",
    PRN_NOTE, "# Channels (stage: downsample, then bottleneck/output of each block):\n", sched_note(),
    "# The layer count and every route/shortcut index are Darknet53's.\n") + prn(d53))
open(OUT + "yolov3-prn.cfg", "w").write(header(
    "# YOLO-v3-PRN (Table 1/2): Darknet53-PRN backbone (Fig. 7c) + the unchanged YOLO-v3 head (the authors\n"
    "# confirmed \"Darknet53-PRN with YOLOv3 head\", PartialResidualNetworks issue #5).\n",
    PRN_NOTE, "# Channels (stage: downsample, then bottleneck/output of each block):\n", sched_note(),
    "# Layer indices are YOLO-v3's; the head's routes read layer 61 (256 ch, was 512) and 36 (128, was 256).\n"
    "# BFLOPs (convolutions only) 25.171 @320 / 42.539 @416 vs the paper's 25.106 / 42.429 (+0.26 %):\n"
    "# the exact widths of the authors' cfg are not published; see docs/prn-models.md.\n") + prn(y3))
print("ok")

# ---------------------------------------------------------------------------------------------------
# Pelee-PRN
# ---------------------------------------------------------------------------------------------------
def pelee_prn():
    net_sec = tiny[tiny.index("[net]"):tiny.index("[convolutional]")]
    yolo_keys = "jitter=.3\nignore_thresh = .7\ntruth_thresh = 1\nrandom=1\n"
    anchors = "anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319\nclasses=80\nnum=6\n"
    L = []
    def add(s, comment=None):
        L.append((f"# {comment}\n" if comment else "") + s)
        return len(L) - 1
    def conv(f, size=1, stride=1, act="leaky", bn=1):
        s = "[convolutional]\n" + ("batch_normalize=1\n" if bn else "")
        return s + f"filters={f}\nsize={size}\nstride={stride}\npad=1\nactivation={act}\n\n"
    add(conv(32, 3, 2), "stem block: 3x3/2 32, then [1x1 16, 3x3/2 32] || maxpool 2/2, concat, 1x1 32")
    add(conv(16, 1, 1))
    add(conv(32, 3, 2))
    add("[route]\nlayers=-3\n\n")
    add("[maxpool]\nsize=2\nstride=2\n\n")
    add("[route]\nlayers=-1,-3\n\n")
    add(conv(32, 1, 1))
    c = 32
    trans = []
    for si, (n, bw) in enumerate([(3, 1), (4, 2), (8, 4), (6, 4)], 1):
        for k in range(n):
            inter = int(16 * bw / 4) * 4
            if inter > c / 2:
                inter = int(c / 8) * 4
            x = len(L) - 1
            com = (f"stage {si}: {n} two-way dense layers (growth rate 32, bottleneck width {bw}), each\n"
                   f"# [1x1 {inter}, 3x3 16] || [1x1 {inter}, 3x3 16, 3x3 16], concatenated with its input"
                   if k == 0 else None)
            add(conv(inter, 1, 1), com)
            a = add(conv(16, 3, 1))
            add("[route]\nlayers=-3\n\n")
            add(conv(inter, 1, 1))
            add(conv(16, 3, 1))
            b = add(conv(16, 3, 1))
            add(f"[route]\nlayers={x},{a},{b}\n\n")
            c += 32
        t = add(conv(c, 1, 1), f"stage {si} transition: 1x1 {c}" + (", maxpool 2/2" if si < 4 else ""))
        trans.append(t)
        if si < 4:
            add("[maxpool]\nsize=2\nstride=2\n\n")
    s16 = trans[2]
    L14 = add(conv(256, 1, 1), "######### tiny-PRN head (yolov3-tiny-prn.cfg layers 14-27) #########")
    L15 = add(conv(256, 3, 1))
    add(f"[shortcut]\nactivation=leaky\nfrom=-2\n\n")
    add(conv(255, 1, 1, "linear", bn=0))
    add("[yolo]\nmask = 3,4,5\n" + anchors + yolo_keys + "\n")
    add(f"[route]\nlayers = -4\n\n")
    add(conv(128, 1, 1))
    L21 = add("[upsample]\nstride=2\n\n")
    add(f"[partial_shortcut]\nactivation=leaky\nfrom={s16}\n\n",
        f"partial residual: the first 128 of the 512 channels of layer {s16} (stage 3 transition, stride 16)")
    add(conv(128, 3, 1))
    add(f"[shortcut]\nactivation=leaky\nfrom=-3\n\n")
    add(f"[partial_shortcut]\nactivation=leaky\nfrom={s16}\n\n")
    add(conv(255, 1, 1, "linear", bn=0))
    add("[yolo]\nmask = 1,2,3\n" + anchors + yolo_keys)
    return net_sec + "".join(L)

PELEE = """# Pelee-PRN (Table 3): the PeleeNet backbone (R. J. Wang, X. Li, C. X. Ling, "Pelee: A Real-Time Object
# Detection System on Mobile Devices", NeurIPS 2018) + the tiny-PRN head of yolov3-tiny-prn.cfg (Fig. 8).
""" 
PELEE_NOTE = """# Reading (the paper gives only the totals: 2.39 BFLOPs @320, 4.04 @416, 3.16M parameters):
#   * PeleeNet as published: stem block; 4 stages of 3/4/8/6 two-way dense layers, growth rate 32,
#     bottleneck widths 1/2/4/4 (1x1 width = int(16*width/4)*4, at most half the input channels);
#     transitions 1x1 128/256/512/704 (compression 1); the 2x2/2 pools are [maxpool] (PeleeNet uses
#     average pooling, which 2019 Darknet could not express with a stride); no classifier.
#   * the head is yolov3-tiny-prn.cfg's layers 14-27 on the 704-channel stage-4 output; its partial
#     residuals read the 512-channel stage-3 transition (stride 16) where tiny-PRN reads layer 8 (256 ch).
#   * activations: leaky everywhere (the Darknet YOLO convention; PeleeNet uses ReLU) -- a training
#     choice that changes no count.
#   With this reading the counts match the paper: 2.390 BFLOPs @320 and 4.039 @416 (Darknet's total),
#   3,158,750 floats in the .weights file (3.16M).
"""
open(OUT + "pelee-prn.cfg", "w").write(header(PELEE, PELEE_NOTE) + pelee_prn())
print("pelee ok")
