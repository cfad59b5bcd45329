"""The report's figures stay readable where they are shown: no text under 10 px.

Regression: the component planes' titles and colour-bar labels showed at 6-8 px, because the
figure (16.5 in, 1,650 px) was shrunk into the report's 1,168 px column with 6-8 pt text.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from txanomaly import plots
from txanomaly.features import get_feature_set

#: The report's column: 1,200 px (report.py's style sheet, ``max-width``) less 1 em a side.
#: ``img{max-width:100%}`` shrinks a wider PNG, and its text with it.
REPORT_COLUMN_PX = 1168
#: The smallest text, in screen pixels, that an analyst reads without zooming.
MIN_TEXT_PX = 10.0

NAMES = get_feature_set("standard").names
RNG = np.random.default_rng(0)


def shown_text_px(fig: Figure) -> list[tuple[float, str]]:
    """Every visible text of ``fig`` with its height in px as the report shows it."""
    plots.to_png(fig)  # draw: tick labels exist once the figure is laid out
    width_px = fig.get_size_inches()[0] * plots.DPI
    shrink = min(1.0, REPORT_COLUMN_PX / width_px)
    return [(t.get_fontsize() * plots.DPI / 72 * shrink, t.get_text())
            for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


FIGURES = {
    "component planes": lambda: plots.component_planes(
        RNG.gamma(1.5, 30, size=(100, len(NAMES))), NAMES, 10, 10, [True] * len(NAMES)),
    "feature distributions": lambda: plots.feature_distributions(
        RNG.gamma(2, 3, size=(500, len(NAMES))), NAMES, RNG.random(500) < 0.05,
        ["value"] * len(NAMES)),
    "U-matrix": lambda: plots.u_matrix(RNG.random((10, 10))),
    "hit map": lambda: plots.hit_map(RNG.integers(0, 50, (10, 10)),
                                     RNG.integers(0, 5, (10, 10))),
    "projection": lambda: plots.prototype_projection(
        RNG.normal(size=(300, 5)), RNG.normal(size=(16, 5)), RNG.normal(size=(16, 5)), 4, 4),
    "score histogram": lambda: plots.score_histogram(RNG.gamma(2.0, size=500), 5.0),
    "PR curves": lambda: plots.pr_curves(
        {"som": (np.linspace(0, 1, 5), np.linspace(1, 0.1, 5))}, {"som": 0.5}, 0.05),
    "tune curves": lambda: plots.tune_curves(
        ["5x5", "10x10"], {"QE (lower is better)": [1.0, 0.5], "PR-AUC": [0.3, None]}, "10x10"),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_report_figure_text_is_readable_at_the_embedded_size(name):
    fig = FIGURES[name]()
    small = [(round(px, 1), text) for px, text in shown_text_px(fig) if px < MIN_TEXT_PX]
    assert not small, f"{name}: text under {MIN_TEXT_PX} px: {small[:5]}"


def test_component_planes_fit_the_report_column_unshrunk():
    fig = FIGURES["component planes"]()
    assert fig.get_size_inches()[0] * plots.DPI <= REPORT_COLUMN_PX
