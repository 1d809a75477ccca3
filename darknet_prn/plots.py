"""``map --plot DIR``: precision-recall curves per class, an AP bar chart and a confusion matrix (matplotlib,
optional: ``pip install 'darknet-prn[eval]'``)."""
from __future__ import annotations

import os

import numpy as np

from .errors import DarknetError
from .fileio import atomic_write
from .metrics import confusion_matrix

HINT = "pip install 'darknet-prn[eval]'"


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise DarknetError(f"--plot needs matplotlib: {HINT}") from None
    matplotlib.use("Agg")
    return matplotlib


def _save(fig, path):
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, lambda f: f.write(buf.getvalue()), "plot")


def write_plots(collected, result, out_dir) -> list:
    """Write ``pr_curves.png``, ``ap_per_class.png`` and ``confusion_matrix.png`` to ``out_dir``; returns paths.
    The curves and bars show the classes with labels; the matrix those with labels or detections above
    ``--thresh``."""
    require_matplotlib()
    import matplotlib.pyplot as plt
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise DarknetError(f"--plot: cannot create the folder: {e.strerror or e}", out_dir) from None
    active = [c for c in result.classes if c.truths]
    files = []
    tag = f"mAP@{result.iou_thresh:.2f} = {result.map * 100:.2f} % " + \
          (f"({result.points} points)" if result.points else "(area under the curve)")

    # precision-recall curves
    n = max(1, len(active))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for ax, c in zip(axes.ravel(), active):
        ax.set_visible(True)
        if c.detections:
            env = np.maximum.accumulate(c.precision[::-1])[::-1]
            ax.plot(c.recall, c.precision, color="0.6", lw=1, label="precision")
            ax.step(c.recall, env, where="post", color="C0", lw=1.6, label="envelope")
        ax.set_title(f"{c.name}: AP {c.ap * 100:.1f} % ({c.truths} labels)", fontsize=9)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Precision-recall per class, {tag}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.9 * rows)))
    p = os.path.join(out_dir, "pr_curves.png")
    _save(fig, p)
    plt.close(fig)
    files.append(p)

    # AP bar chart
    order = sorted(active, key=lambda c: c.ap)
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.28 * max(1, len(order))))
    ax.barh([f"{c.name} ({c.truths})" for c in order], [c.ap * 100 for c in order], color="C0")
    for k, c in enumerate(order):
        ax.text(c.ap * 100 + 1, k, f"{c.ap * 100:.1f}", va="center", fontsize=8)
    ax.set_xlim(0, 110)
    ax.set_xlabel("AP (%)")
    ax.set_title(f"AP per class (labels in brackets); {tag}\nthe {len(result.classes) - len(order)} classes "
                 f"without labels count as 0 in the mean over all {len(result.classes)}", fontsize=9)
    fig.tight_layout()
    p = os.path.join(out_dir, "ap_per_class.png")
    _save(fig, p)
    plt.close(fig)
    files.append(p)

    # confusion matrix at --thresh
    C = collected.classes
    m = confusion_matrix(((im.boxes, im.dense(C), im.truths) for im in collected.images), C, result.thresh,
                         result.iou_thresh)
    shown = [c for c in result.classes if m[c.class_id].sum() or m[:, c.class_id].sum()]
    idx = [c.class_id for c in shown] + [C]
    labels = [c.name for c in shown] + ["background"]
    sub = m[np.ix_(idx, idx)]
    fig, ax = plt.subplots(figsize=(1.6 + 0.45 * len(idx), 1.2 + 0.45 * len(idx)))
    ax.imshow(sub, cmap="Blues")
    for i in range(len(idx)):
        for j in range(len(idx)):
            if sub[i, j]:
                ax.text(j, i, str(sub[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if sub[i, j] > sub.max() / 2 else "black")
    ax.set_xticks(range(len(idx)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(idx)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix at conf > {result.thresh:.2f}, IoU > {result.iou_thresh:.2f}", fontsize=9)
    fig.tight_layout()
    p = os.path.join(out_dir, "confusion_matrix.png")
    _save(fig, p)
    plt.close(fig)
    files.append(p)
    return files
