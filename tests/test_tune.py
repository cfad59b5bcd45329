"""Map-size search: the rule, and cases where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from txanomaly import evaluate as ev
from txanomaly import tune as tu
from txanomaly.errors import TxAnomalyError
from txanomaly.features.spec import Feature, FeatureSet

PLAIN = FeatureSet("plain", (Feature("hour_sin", "hour_sin"), Feature("hour_cos", "hour_cos")))
CORNERS = np.array([[-8.0, -3.0], [-8.0, 3.0], [8.0, -3.0], [8.0, 3.0]])
# Unscaled, so that the principal axes (x: spread 8, y: spread 3) line the PCA-initialised
# grid up with the clusters: a batch SOM started across them can stay stuck in between.
FAST = {"epochs": 10, "random_state": 0, "sigma_end": 0.2, "scaling": "none"}


def _four_blobs(n: int = 1_600, anomalies: float = 0.0, seed: int = 0) -> ev.Prepared:
    """Four tight clusters at the corners of a square; anomalies sit at its centre."""
    rng = np.random.default_rng(seed)
    X = CORNERS[rng.integers(0, 4, n)] + rng.normal(scale=0.2, size=(n, 2))
    y = (rng.random(n) < anomalies).astype(np.int8)
    X[y == 1] = rng.normal(scale=0.2, size=(int(y.sum()), 2))
    return ev.Prepared(PLAIN, X, y, np.full(n, None, dtype=object), np.arange(n).astype(str),
                       ev.time_ordered_split(np.arange(n), 0.5))


def test_without_labels_the_map_matching_the_four_clusters_wins_on_silhouette():
    # A 2x2 map puts one unit on each cluster (silhouette near 1); larger maps split clusters
    # across units, which lowers the silhouette of the BMU clusters.
    result = tu.tune(_four_blobs(), ["5x5", "2x2", "4x4"], labelled=False, detector_params=FAST)
    sil = {c.map_size: c.silhouette for c in result.candidates}
    assert sil["2x2"] > 0.9 > max(sil["4x4"], sil["5x5"])
    assert result.recommendation.map_size == "2x2"
    assert result.recommendation.metric == "silhouette"
    assert "2x2: silhouette" in result.recommendation.reason
    assert all(c.pr_auc is None for c in result.candidates)


def test_with_labels_the_map_that_separates_the_centre_wins_on_pr_auc():
    # Anomalies sit at the centre of the square. A 1x1 map's single prototype is the mean, i.e.
    # the centre: the anomalies get the lowest scores. A 2x2 map's prototypes sit on the
    # clusters: the anomalies are the farthest rows. A 4x4 map spends units between the
    # clusters, near the centre, and the anomalies land close to them, when every unit scores
    # (min_unit_share=0; by default those sparse units do not score, see the next test).
    data = _four_blobs(anomalies=0.03)
    result = tu.tune(data, ["1x1", "2x2", "4x4"], labelled=True,
                     detector_params={**FAST, "min_unit_share": 0.0})
    pr = {c.map_size: c.pr_auc for c in result.candidates}
    assert pr["2x2"] > 0.9 and max(pr["1x1"], pr["4x4"]) < 0.2
    assert result.recommendation.map_size == "2x2"
    assert result.recommendation.metric == "pr_auc"
    assert "next best 4x4" in result.recommendation.reason


def test_scoring_units_keep_the_centre_anomalies_out_of_the_4x4_map():
    # The units between the clusters hold few rows, so by default they do not score: the
    # anomalies at the centre are measured against the clusters' units and stand out.
    data = _four_blobs(anomalies=0.03)
    result = tu.tune(data, ["4x4"], labelled=True, detector_params=FAST)
    assert result.candidates[0].pr_auc > 0.9


def test_near_ties_go_to_the_smaller_map():
    rows = [tu.Candidate("10x10", 10, 10, 1.0, 0.0, 0.5, 0.8, 0.300, 0.3),
            tu.Candidate("5x5", 5, 5, 1.2, 0.0, 0.5, 0.8, 0.297, 0.3),
            tu.Candidate("20x20", 20, 20, 0.8, 0.0, 0.5, 0.8, 0.200, 0.2)]
    pick = tu.recommend(rows)
    assert pick.map_size == "5x5"
    assert "10x10 within 0.005 of the best" in pick.reason


def test_a_clear_winner_is_not_a_tie():
    rows = [tu.Candidate("5x5", 5, 5, 1.2, 0.0, 0.2), tu.Candidate("10x10", 10, 10, 1.0, 0.0, 0.3)]
    assert tu.recommend(rows).map_size == "10x10"


def test_nan_silhouettes_cannot_win():
    rows = [tu.Candidate("1x1", 1, 1, 1.0, 0.0, float("nan")),
            tu.Candidate("3x3", 3, 3, 1.0, 0.0, 0.1)]
    assert tu.recommend(rows).map_size == "3x3"
    with pytest.raises(TxAnomalyError, match="no candidate has a finite silhouette"):
        tu.recommend(rows[:1])


@pytest.mark.parametrize("text", ["", "10", "10x", "axb", "0x3"])
def test_parse_maps_rejects_bad_sizes(text):
    with pytest.raises(TxAnomalyError):
        tu.parse_maps(text)


def test_parse_maps_drops_repeats_and_normalises():
    assert tu.parse_maps(" 10x10,5X5,10x10 ") == ["10x10", "5x5"]


def test_tune_result_to_dict_is_json_ready():
    result = tu.tune(_four_blobs(400), ["1x1", "2x2"], labelled=False, detector_params=FAST)
    data = result.to_dict()
    assert [c["map_size"] for c in data["candidates"]] == ["1x1", "2x2"]
    assert data["candidates"][0]["silhouette"] is None  # one unit: no clusters to compare
    assert data["recommendation"]["map_size"] == "2x2"
