"""The report's pictures: matplotlib figures and image thumbnails as base64 data URIs.

Modest sizes and DPI on purpose: the full 23-experiment study must stay a few MB in one file.
"""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display on CI machines or cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pipeline.config import TrainConfig  # noqa: E402

DPI = 72
THUMB = 48  # longest side of a prediction thumbnail, pixels (the page scales it up)
TILE = 32   # longest side of a data-set sample tile


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def to_uri(fig, palette: bool = True) -> str:
    """A figure as a PNG data URI; plots are reduced to a 128-colour palette (about 3x smaller)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    if not palette:
        return _uri(buf.getvalue())
    img = Image.open(buf).convert("RGB").quantize(colors=128)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return _uri(out.getvalue())


def image_uri(image: np.ndarray, longest: int | None = None) -> str:
    """A (H, W, C) uint8 image as a data URI: grayscale as PNG, colour photos as JPEG (far smaller)."""
    image = np.asarray(image)
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if longest:
        img.thumbnail((longest, longest))
    buf = io.BytesIO()
    if img.mode == "L":
        img.save(buf, format="PNG", optimize=True)
        return _uri(buf.getvalue())
    img.save(buf, format="JPEG", quality=80)
    return _uri(buf.getvalue(), "image/jpeg")


def thumbnail(image: np.ndarray) -> str:
    """A test image for the prediction grid, shrunk to THUMB pixels."""
    return image_uri(image, THUMB)


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def accuracy_bars(rows: list[dict]) -> str:
    """Our top-1 per experiment beside the seed's figure where it gives one; ours on the seed's split
    (val or test, named on the row), else on test. Error bars: our interval over the runs."""
    n, any_seed = len(rows), any(r["reported"] is not None for r in rows)
    fig, ax = plt.subplots(figsize=(10, 1.2 + (0.55 if any_seed else 0.35) * n), layout="constrained")
    y, h = np.arange(n), (0.4 if any_seed else 0.6)
    ours = [r["compared"] or 0 for r in rows]
    err = [(r["spread"].half_width or 0) if r.get("spread") else 0 for r in rows]
    ax.barh(y - (0.2 if any_seed else 0), ours, height=h, color="#3a7bd5", xerr=err if any(err) else None,
            ecolor="#123", capsize=3, label="ours" + (" (on the seed's split)" if any_seed else ", test"))
    if any_seed:
        ax.barh(y + 0.2, [r["reported"] or 0 for r in rows], height=h, color="#bbbbbb", label="seed")
    for yi, r in zip(y, rows):
        if r["compared"] is None:
            ax.text(1, yi - (0.2 if any_seed else 0), r["status"], va="center", fontsize=10, color="#a00")
        else:
            _bar_label(ax, r["compared"], yi - (0.2 if any_seed else 0), f"{r['compared']:.1f}", "white")
        if r["reported"] is not None:
            _bar_label(ax, r["reported"], yi + 0.2, f"{r['reported']:.1f} {r['reported_split']}", "#222")
    ax.set_yticks(y, [_short(r["name"], 32) for r in rows], fontsize=10)
    ax.invert_yaxis()  # the order of params.yaml, top to bottom
    ax.set(xlim=(0, 100))
    ax.set_xlabel("top-1 accuracy (%)", fontsize=10)
    ax.tick_params(axis="x", labelsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=10, loc="outside upper center", ncols=2, frameon=False)   # above, never over the bars
    return to_uri(fig)


def _bar_label(ax, x: float, y: float, text: str, inside_colour: str) -> None:
    """A bar's value inside its end (the axis stops at 100), or past it when the bar is too short."""
    if x >= 15:
        ax.text(x - 1, y, text, va="center", ha="right", fontsize=10, color=inside_colour, fontweight="bold")
    else:
        ax.text(x + 1, y, text, va="center", ha="left", fontsize=10, color="#222")


def _mean_band(ax, runs: list, column: str, **style):
    """The mean over the runs of `column` per epoch, and (two runs or more) their range as a band."""
    import pandas as pd
    per_epoch = pd.concat([r[["epoch", column]] for r in runs]).groupby("epoch")[column]
    mean = per_epoch.mean()
    line, = ax.plot(mean.index, mean.to_numpy(), lw=1.6, **style)
    if len(runs) > 1:
        ax.fill_between(mean.index, per_epoch.min(), per_epoch.max(), color=line.get_color(),
                        alpha=0.18, lw=0)
    return line


def objective(config: TrainConfig | None) -> str:
    """The training objective a train loss measures, in words (None: a run without its config)."""
    if config is None:
        return "objective unknown"
    if config.loss == "multi_margin":
        return "multi-margin"
    return f"cross-entropy, smoothing {config.label_smoothing:g}" if config.label_smoothing else "cross-entropy"


def dataset_curves(runs_by_experiment: dict[str, list], objectives: dict[str, str] | None = None) -> str:
    """Train loss, val loss and val accuracy per epoch, every experiment of one data set overlaid:
    the mean over its runs, and their range as a band; one legend for the three panels, below them.
    Where the experiments train on different objectives (`objectives`: name -> objective), the
    train-loss panel says so and each legend entry names its own: a smoothed cross-entropy cannot
    fall as low as a plain one, nor is a multi-margin loss on its scale. Past ten experiments the
    colours repeat, dashed."""
    mixed = len(set((objectives or {}).values())) > 1
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
    for i, (name, runs) in enumerate(runs_by_experiment.items()):
        label = _short(name, 32) + (f" ({len(runs)} runs)" if len(runs) > 1 else "")
        label += f" [{objectives[name]}]" if mixed else ""
        ls = styles[(i // 10) % len(styles)]                     # the 11th on: tab10's colours again, dashed
        line = _mean_band(axes[0], runs, "train_loss", label=label, ls=ls)
        _mean_band(axes[1], runs, "val_loss", color=line.get_color(), ls=ls)
        _mean_band(axes[2], runs, "val_acc", color=line.get_color(), ls=ls)
    train_title = "train loss (objectives differ: see legend)" if mixed else "train loss"
    for ax, title in zip(axes, (train_title, "val loss (cross-entropy)", "val accuracy (%)")):
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("epoch", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))      # whole epochs, never 1.5
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", fontsize=13, frameon=False,
               ncols=min(len(runs_by_experiment), 3 if mixed else 4))
    return to_uri(fig)


def experiment_curves(runs: list, kept_epoch: int | None) -> str:
    """Loss and accuracy per epoch, train solid and val dashed (val loss: cross-entropy; train loss:
    the training objective): the mean over the runs, their range as a band; the kept checkpoint (of
    the experiment's own run) marked."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained")
    suffix = f" (mean of {len(runs)} runs)" if len(runs) > 1 else ""
    _mean_band(ax_loss, runs, "train_loss", label="train" + suffix)
    _mean_band(ax_loss, runs, "val_loss", ls="--", label="val")
    _mean_band(ax_acc, runs, "train_acc", label="train" + suffix)
    _mean_band(ax_acc, runs, "val_acc", ls="--", label="val")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        if kept_epoch is not None:
            ax.axvline(kept_epoch, color="#c0392b", lw=1.5, label=f"kept (epoch {kept_epoch})")
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("epoch", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))      # whole epochs, never 1.5
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=10)
    return to_uri(fig)


def per_class_bars(pairs: list[tuple[str, float]], half_widths: dict[str, float] | None = None,
                   limit: int = 30) -> str:
    """Per-class test accuracy (the runs' mean), worst first, with the interval over the runs where
    there are several; with many classes only the `limit` worst are drawn."""
    shown = pairs[:limit]
    fig, ax = plt.subplots(figsize=(6.5, 0.8 + 0.2 * len(shown)), layout="tight")
    y = np.arange(len(shown))
    acc = np.array([a for _, a in shown])
    err = [(half_widths or {}).get(c, 0.0) for c, _ in shown]
    ax.barh(y, acc, color=plt.cm.RdYlGn(acc / 100), xerr=err if any(err) else None, ecolor="#333", capsize=2)
    for yi, a in zip(y, acc):   # a 0 % class has no bar to see; its number says so
        ax.text(min(a, 88) + 1, yi, f"{a:.0f}", va="center", fontsize=6)
    ax.set_yticks(y, [_short(c, 22) for c, _ in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel="test accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    if len(pairs) > limit:
        ax.set_title(f"the {limit} worst of {len(pairs)} classes", fontsize=9)
    return to_uri(fig)


def confusion_heatmap(confusion) -> str:
    """Counts, rows true and columns predicted; colour = share of the true class (row-normalised)."""
    cm = confusion.to_numpy()
    k = len(cm)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(2.2 + 0.3 * k, 10)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="tight")
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [_short(str(c), 14) for c in confusion.index]
    ax.set_xticks(range(k), names, rotation=90 if k > 10 or max(map(len, names)) > 3 else 0, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true")
    if k <= 15:
        for t, p in zip(*np.nonzero(cm)):
            ax.text(p, t, cm[t, p], ha="center", va="center", fontsize=7,
                    color="white" if share[t, p] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
    return to_uri(fig)


def class_samples(images: np.ndarray, labels: np.ndarray, classes: list[str], per_class: int = 6,
                  seed: int = 0) -> tuple[str, bool]:
    """A montage of training images: `per_class` per class in labelled rows when there are at
    most 20 classes, else one per class in class order. Returns (uri, labelled)."""
    rng = np.random.default_rng(seed)
    labelled = len(classes) <= 20
    n = per_class if labelled else 1
    tiles = []
    for k in range(len(classes)):
        idx = np.flatnonzero(labels == k)
        idx = np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))
        row = [_tile(images[i]) for i in idx]
        row += [np.zeros_like(_tile(images[0]))] * (n - len(row))  # a class with few images
        tiles += row
    h, w, c = tiles[0].shape
    scale = max(1, int(np.ceil(32 / max(h, w))))  # thumbnails of 8x8 digits would be specks
    cols = n if labelled else min(20, len(classes))
    rows = int(np.ceil(len(tiles) / cols))
    tiles += [np.zeros((h, w, c), np.uint8)] * (rows * cols - len(tiles))
    grid = np.stack(tiles).reshape(rows, cols, h, w, c)
    grid = np.pad(grid, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), constant_values=255)
    grid = grid.transpose(0, 2, 1, 3, 4).reshape(rows * (h + 2), cols * (w + 2), c)
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    if not labelled:
        return image_uri(grid), False
    fig, ax = plt.subplots(figsize=(1.4 + grid.shape[1] / DPI, 0.3 + grid.shape[0] / DPI), layout="tight")
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks((np.arange(rows) + 0.5) * (h + 2) * scale, [_short(x, 18) for x in classes], fontsize=8)
    for s in ax.spines.values():
        s.set_visible(False)
    return to_uri(fig, palette=c == 1), True


def _tile(image: np.ndarray) -> np.ndarray:
    """A sample image at most TILE pixels on its longest side, (H, W, C) uint8."""
    image = np.asarray(image)
    if max(image.shape[:2]) <= TILE:
        return image
    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    img.thumbnail((TILE, TILE))
    return np.asarray(img).reshape(img.height, img.width, image.shape[-1])
