"""Figures of a quantization run, drawn headless with matplotlib (the `[analysis]` extra).

Every per-unit figure lists the units top to bottom in forward order, one row each, so that long qualified names
stay readable; the figure grows with the number of units.
"""

import math
from collections.abc import Mapping, Sequence

from mmdet.utils.atomic_io import atomic_open
from mmdet.utils.errors import MissingExtraError

INSTALL_HINT = "plotting needs matplotlib: pip install -e .[analysis]"
ROW_INCHES = 0.28  # height of one unit's row in the per-unit bar charts
MIN_HEIGHT_INCHES = 2.5


def pyplot():
    """matplotlib.pyplot on the headless Agg backend; ImportError naming the extra to install when missing."""
    try:
        import matplotlib
    except ImportError as error:
        raise MissingExtraError(f"drawing needs matplotlib, which is not installed: run `{INSTALL_HINT}`") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: str) -> None:
    """Write the figure as PNG (atomically: a failed redraw leaves the previous image) and free it."""
    try:
        with atomic_open(path, "wb") as f:
            figure.savefig(f, format="png", dpi=100)
    finally:
        plt.close(figure)


def _check_lengths(units: Sequence[str], **columns: Sequence[float]) -> None:
    if not units:
        raise ValueError("nothing to plot: no units given")
    for name, values in columns.items():
        if len(values) != len(units):
            raise ValueError(f"{name} has {len(values)} values for {len(units)} units")


def _label_width_inches(labels: Sequence[str]) -> float:
    return 0.075 * max(len(label) for label in labels) + 0.3  # about 7.5 pt per character at font size 9


def _unit_figure(plt, units: Sequence[str], plot_inches: float = 6.0):
    """A figure with one row per unit and room on the left for the names."""
    label_inches = _label_width_inches(units)
    height = max(MIN_HEIGHT_INCHES, ROW_INCHES * len(units) + 1.4)
    figure, axes = plt.subplots(figsize=(label_inches + plot_inches, height))
    figure.subplots_adjust(
        left=label_inches / (label_inches + plot_inches), right=0.97, top=1 - 0.9 / height, bottom=0.7 / height
    )
    axes.set_yticks(range(len(units)))
    axes.set_yticklabels(units, fontsize=9)
    axes.set_ylim(len(units) - 0.5, -0.5)  # the first unit on top
    axes.grid(axis="x", which="both", alpha=0.3)
    return figure, axes


def plot_recon_errors(units: Sequence[str], before: Sequence[float], after: Sequence[float], path: str) -> None:
    """Per unit, the output error before and after reconstruction as paired horizontal bars, log scale.

    Args:
        units: unit names in forward order.
        before: output error of each unit with round-to-nearest weights and calibrated activation ranges.
        after: output error of each unit after reconstruction.
        path: PNG file to write.
    """
    _check_lengths(units, before=before, after=after)
    plt = pyplot()
    figure, axes = _unit_figure(plt, units)
    rows = range(len(units))
    axes.barh([row - 0.2 for row in rows], before, height=0.4, label="before reconstruction", color="tab:red")
    axes.barh([row + 0.2 for row in rows], after, height=0.4, label="after reconstruction", color="tab:blue")
    positive = [value for value in list(before) + list(after) if value > 0]
    if positive:
        axes.set_xscale("log")
        axes.set_xlim(min(positive) / 2, max(positive) * 2)
    axes.set_xlabel("output error (mean over positions of the channel-summed squared error, log scale)")
    axes.set_title("Output error per reconstruction unit", pad=20)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    _save(plt, figure, path)


def plot_recon_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: str, columns: int = 4) -> None:
    """Reconstruction loss over the steps, one small panel per unit in forward order, log scale.

    Args:
        curves: unit name -> [(step, reconstruction loss), ...] as sampled during reconstruction.
        path: PNG file to write.
        columns: panels per row.
    """
    if not curves:
        raise ValueError("nothing to plot: no reconstruction curves given")
    plt = pyplot()
    columns = min(columns, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(3.4 * columns, 2.3 * rows + 0.9), squeeze=False, layout="constrained"
    )
    panels = [axes for row in grid for axes in row]
    for axes, (unit, points) in zip(panels, curves.items()):
        steps = [step for step, _ in points]
        losses = [loss for _, loss in points]
        axes.plot(steps, losses, marker=".", color="tab:blue")
        if all(loss > 0 for loss in losses):
            axes.set_yscale("log")
        axes.set_title(unit, fontsize=9)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3, which="both")
    for axes in panels[len(curves) :]:
        axes.set_visible(False)
    figure.suptitle("Reconstruction loss per unit")
    figure.supxlabel("step")
    figure.supylabel("reconstruction loss (log scale)")
    _save(plt, figure, path)


def plot_sensitivity(records: Sequence[Mapping], path: str, metric: str = "output_error") -> None:
    """Damage done by quantizing each unit alone, as horizontal bars in forward order.

    Args:
        records: [{"unit": name, "score": value}, ...] in forward order.
        path: PNG file to write.
        metric: what the score measures, for the axis label.
    """
    units = [record["unit"] for record in records]
    scores = [record["score"] for record in records]
    _check_lengths(units, scores=scores)
    plt = pyplot()
    figure, axes = _unit_figure(plt, units)
    axes.barh(range(len(units)), scores, height=0.7, color="tab:orange")
    positive = [score for score in scores if score > 0]
    log_scale = bool(positive) and max(positive) / min(positive) > 100 and len(positive) == len(scores)
    if log_scale:
        axes.set_xscale("log")
    axes.set_xlabel(f"{metric} with only this unit quantized{' (log scale)' if log_scale else ''}")
    axes.set_title("Sensitivity per reconstruction unit (higher: more damage)")
    _save(plt, figure, path)


def plot_summary(summary: Mapping[str, Mapping[str, float]], path: str, metric: str = "bbox mAP") -> None:
    """mAP of every column for every row as grouped bars (one group per column, one bar per row).

    Args:
        summary: row name (a model, or a model's metric) -> {column name: mAP in [0, 1]}; every row has the same
            columns.
        path: PNG file to write.
        metric: what the values are, for the axis and the title.
    """
    if not summary:
        raise ValueError("nothing to plot: no models in the summary")
    models = list(summary)
    columns = list(summary[models[0]])
    for model in models[1:]:
        if list(summary[model]) != columns:
            raise ValueError(f"model {model} has columns {list(summary[model])}, expected {columns}")
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(max(6.0, 1.0 + 0.5 * len(columns) * (len(models) + 1)), 4.5))
    width = 0.8 / len(models)
    for index, model in enumerate(models):
        offsets = [column + (index - (len(models) - 1) / 2) * width for column in range(len(columns))]
        values = [100 * summary[model][column] for column in columns]
        bars = axes.bar(offsets, values, width=width, label=model)
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    axes.set_xticks(range(len(columns)))
    axes.set_xticklabels(columns, rotation=30, ha="right", fontsize=9)
    axes.set_ylabel(f"{metric} (%)")
    axes.set_xlabel("setting")
    axes.set_title(f"{metric} on the val set")
    axes.margins(y=0.12)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    _save(plt, figure, path)


def plot_detections(
    image_rgb, panels: Sequence[tuple[str, Sequence]], classes: Sequence[str], path: str, score_thr: float = 0.3
) -> None:
    """The same image once per panel with that panel's detections drawn on it, side by side.

    Args:
        image_rgb: the image, uint8 array (H, W, 3) in RGB order.
        panels: (title, detections) per panel; detections as mmdetection returns them for one image: per class
            a float array (k, 5) of x1, y1, x2, y2, score in image pixels.
        classes: class names, one per entry of each panel's detections.
        path: PNG file to write.
        score_thr: detections scoring below it are not drawn.
    """
    if not panels:
        raise ValueError("nothing to plot: no panels given")
    plt = pyplot()
    height, width = image_rgb.shape[:2]
    panel_inches = 5.0
    figure, grid = plt.subplots(
        1,
        len(panels),
        squeeze=False,
        layout="constrained",
        figsize=(panel_inches * len(panels), panel_inches * height / width + 0.6),
    )
    colours = plt.get_cmap("tab10")
    for axes, (title, detections) in zip(grid[0], panels):
        if len(detections) != len(classes):
            raise ValueError(
                f"panel {title!r} has detections for {len(detections)} classes, expected "
                f"{len(classes)} ({', '.join(classes)})"
            )
        axes.imshow(image_rgb)
        shown = 0
        for label, boxes in enumerate(detections):
            for x1, y1, x2, y2, score in boxes:
                if score < score_thr:
                    continue
                colour = colours(label % 10)
                axes.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
                # the label sits inside the box's top edge, right-aligned near the image's right side
                near_right = x1 > 0.7 * width
                axes.text(
                    x2 if near_right else x1,
                    y1,
                    f"{classes[label]} {score:.2f}",
                    fontsize=7,
                    color="white",
                    va="top",
                    ha="right" if near_right else "left",
                    clip_on=True,
                    bbox=dict(facecolor=colour, alpha=0.8, pad=1, edgecolor="none"),
                )
                shown += 1
        axes.set_title(f"{title}: {shown} detections with score >= {score_thr:g}", fontsize=10)
        axes.set_xlabel("x (pixels)")
        axes.set_ylabel("y (pixels)")
        axes.set_xlim(0, width)
        axes.set_ylim(height, 0)
    _save(plt, figure, path)
