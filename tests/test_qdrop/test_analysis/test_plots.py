"""Figures of qdrop.analysis.plots: labelled axes, every unit named in forward order, readable PNGs."""

import math
import sys

import matplotlib.image
import numpy as np
import pytest

from qdrop.analysis import plots

UNITS = (
    ["backbone.conv1"]
    + [f"backbone.layer{stage}.{block}" for stage in (1, 2, 3, 4) for block in (0, 1)]
    + [f"neck.lateral_convs.{i}" for i in range(3)]
    + [f"neck.fpn_convs.{i}" for i in range(3)]
)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, captured before they are written and closed; each gets the
    `drawn_extent` of everything drawn on it, in inches."""
    captured = []
    save = plots._save

    def capture(plt, figure, path):
        figure.canvas.draw()  # lay out tick labels so that tests can read them
        figure.drawn_extent = figure.get_tightbbox()
        captured.append(figure)
        save(plt, figure, path)

    monkeypatch.setattr(plots, "_save", capture)
    return captured


def _png(path) -> np.ndarray:
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01, "blank image"
    return image


def _tick_texts(labels) -> list:
    return [label.get_text() for label in labels]


def test_recon_errors_names_every_unit_in_forward_order_on_a_log_axis(tmp_path, figures):
    before = [10.0 ** (i % 5 - 3) for i in range(len(UNITS))]
    after = [value / 3 for value in before]
    path = tmp_path / "recon_errors.png"
    plots.plot_recon_errors(UNITS, before, after, str(path))
    axes = figures[0].axes[0]
    assert _tick_texts(axes.get_yticklabels()) == UNITS
    assert axes.get_ylim()[0] > axes.get_ylim()[1], "the first unit must be drawn on top"
    assert axes.get_xscale() == "log" and "output error" in axes.get_xlabel()
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "before reconstruction",
        "after reconstruction",
    ]
    lengths = sorted(patch.get_width() for patch in axes.patches)
    assert lengths == sorted(before + after)
    _png(path)


def _inside_the_image(figure) -> bool:
    extent, (width, height) = figure.drawn_extent, figure.get_size_inches()
    return extent.x0 >= 0 and extent.y0 >= 0 and extent.x1 <= width + 1e-6 and extent.y1 <= height + 1e-6


def test_nothing_is_cut_at_the_edges(tmp_path, figures):
    """Long unit names, titles, axis labels and legends all lie inside the image."""
    units = UNITS + ["roi_head.bbox_head.shared_fcs.1"]
    scores = [10.0 ** (i % 4) for i in range(len(units))]
    plots.plot_sensitivity([{"unit": u, "score": s} for u, s in zip(units, scores)], str(tmp_path / "s.png"))
    plots.plot_recon_errors(units, scores, scores, str(tmp_path / "e.png"))
    plots.plot_recon_curves({unit: [(0, 1.0), (50, 0.5)] for unit in units}, str(tmp_path / "c.png"))
    plots.plot_summary({"retinanet": {"FP": 0.5, "W2A4 QDrop (mixed)": 0.2}}, str(tmp_path / "m.png"))
    assert len(figures) == 4
    for figure in figures:
        assert _inside_the_image(figure), figure.axes[0].get_title()


def test_more_units_make_a_taller_figure(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    plots.plot_recon_errors(UNITS[:3], [1.0] * 3, [0.5] * 3, str(small))
    plots.plot_recon_errors(UNITS * 3, [1.0] * 3 * len(UNITS), [0.5] * 3 * len(UNITS), str(large))
    assert _png(large).shape[0] > 2 * _png(small).shape[0]


def test_recon_curves_one_panel_per_unit(tmp_path, figures):
    curves = {
        unit: [(step, math.exp(-step / 100) + i) for step in (0, 50, 100, 150, 199)] for i, unit in enumerate(UNITS[:6])
    }
    path = tmp_path / "recon_curves.png"
    plots.plot_recon_curves(curves, str(path))
    figure = figures[0]
    visible = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in visible] == list(curves)
    assert all(axes.get_yscale() == "log" for axes in visible)
    first_line = visible[0].get_lines()[0]
    assert list(first_line.get_xdata()) == [0, 50, 100, 150, 199]
    assert figure.get_supxlabel() == "step" and "reconstruction loss" in figure.get_supylabel()
    _png(path)


def test_sensitivity_bars_follow_the_records(tmp_path, figures):
    records = [{"unit": unit, "score": float(i % 4)} for i, unit in enumerate(UNITS)]
    path = tmp_path / "sensitivity.png"
    plots.plot_sensitivity(records, str(path), metric="bbox_mAP drop")
    axes = figures[0].axes[0]
    assert _tick_texts(axes.get_yticklabels()) == UNITS
    assert [patch.get_width() for patch in axes.patches] == [record["score"] for record in records]
    assert axes.get_xlabel().startswith("bbox_mAP drop") and axes.get_xscale() == "linear"
    _png(path)


def test_summary_groups_bars_by_column(tmp_path, figures):
    summary = {
        "retinanet": {"FP": 0.5, "W4A4 QDrop": 0.4, "W2A4 QDrop": 0.2},
        "faster_rcnn": {"FP": 0.6, "W4A4 QDrop": 0.5, "W2A4 QDrop": 0.1},
    }
    path = tmp_path / "summary.png"
    plots.plot_summary(summary, str(path))
    axes = figures[0].axes[0]
    assert _tick_texts(axes.get_xticklabels()) == ["FP", "W4A4 QDrop", "W2A4 QDrop"]
    assert axes.get_ylabel() == "bbox mAP (%)"
    heights = [round(patch.get_height(), 6) for patch in axes.patches]
    assert heights == [50.0, 40.0, 20.0, 60.0, 50.0, 10.0]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["retinanet", "faster_rcnn"]
    _png(path)


def test_summary_names_its_metric(tmp_path, figures):
    summary = {"mask_rcnn": {"FP": 0.7}, "mask_rcnn segm": {"FP": 0.45}}
    plots.plot_summary(summary, str(tmp_path / "summary.png"), metric="mAP (bbox; rows '<model> segm': mask)")
    axes = figures[0].axes[0]
    assert axes.get_ylabel() == "mAP (bbox; rows '<model> segm': mask) (%)"
    assert axes.get_title() == "mAP (bbox; rows '<model> segm': mask) on the val set"


def test_detections_below_the_threshold_are_not_drawn(tmp_path, figures):
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    detections = [
        np.array([[5, 5, 30, 30, 0.9], [10, 10, 20, 20, 0.1]], dtype=np.float32),
        np.zeros((0, 5), dtype=np.float32),
    ]
    plots.plot_detections(
        image,
        [("float", detections), ("quantized", detections[::-1])],
        ("a", "b"),
        str(tmp_path / "det.png"),
        score_thr=0.5,
    )
    left, right = figures[0].axes
    assert left.get_title().startswith("float: 1 detections") and len(left.patches) == 1
    assert right.get_title().startswith("quantized: 1 detections")
    assert [text.get_text() for text in right.texts] == ["b 0.90"]
    with pytest.raises(ValueError, match="detections for 1 classes, expected 2"):
        plots.plot_detections(image, [("float", detections[:1])], ("a", "b"), str(tmp_path / "bad.png"))


def test_mismatched_lengths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="after has 2 values for 3 units"):
        plots.plot_recon_errors(UNITS[:3], [1.0] * 3, [1.0] * 2, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="columns"):
        plots.plot_summary({"a": {"FP": 0.1}, "b": {"W2A4": 0.1}}, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install -e \.\[analysis\]"):
        plots.plot_recon_errors(UNITS[:1], [1.0], [0.5], str(tmp_path / "x.png"))
