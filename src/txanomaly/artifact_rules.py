"""What ``model.json`` may hold, field by field: the model file's input rules.

:func:`check_metadata` checks every field :func:`txanomaly.artifact.save` writes (types, finite
numbers, ranges, agreement between fields) and refuses anything else with a
:class:`~txanomaly.errors.ModelFileError` that names the field and the value as the file spells
it. ``save`` runs the same checks before it writes, so a model that would be refused on load is
never written.

The rules that keep a model file from switching detection off:

* no ``NaN`` or ``Infinity`` anywhere (they are not JSON; ``score > NaN`` is always false);
* ``threshold`` a finite number > 0 and, when the training summary keeps the training score
  quantiles, between their median and :data:`THRESHOLD_MAX_FACTOR` x their maximum;
* ``contamination`` in (0, 0.5]; the map shape positive integers; every detector parameter as
  :meth:`AnomalyDetector.check_params <txanomaly.detector.AnomalyDetector.check_params>` asks;
* the feature set definition valid: ops, keys and transforms as :mod:`txanomaly.features.spec`
  declares them, windows positive integers, clip pairs finite and ordered, weights finite > 0,
  directions among up/down/both and equal to the detector's ``feature_directions``.

>>> check_metadata({"format_version": 7}, "model.json")
Traceback (most recent call last):
txanomaly.errors.ModelFileError: model.json: model format version 7 is not supported ...
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import txanomaly
from txanomaly.detector import AnomalyDetector, check_threshold, parse_map_size
from txanomaly.errors import ModelFileError, TxAnomalyError
from txanomaly.features.spec import FITTED_TRANSFORMS, FeatureSet

#: The format :func:`txanomaly.artifact.save` writes. 2 added ``model_version`` (recorded, and
#: compared on load) and the optional ``signature``; version 1 files still load, their version
#: computed but not compared (nothing was recorded to compare with).
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
TENSORS_FILE = "model.safetensors"
#: A threshold above this many times the largest training score flags nothing the model has
#: seen the like of: detection switched off. A learnt threshold is at most the maximum (the
#: 1 - contamination quantile); 10 x leaves room for a fixed threshold set above every
#: training score on purpose.
THRESHOLD_MAX_FACTOR = 10.0
#: The training summary's score quantiles, in increasing order (detector.py's _quantiles).
_QUANTILES = ("p50", "p95", "p99", "max")
_REQUIRED = ("format_version", "feature_names", "map", "params", "threshold", "tensors")
_OPTIONAL = ("package_version", "feature_set", "fitted_with_feature_names", "contamination",
             "training_summary")
_FORMAT_2 = ("model_version", "signature", "threshold_source")
#: ``threshold_source``: where the threshold in force came from (``txanomaly calibrate
#: --write``): a flat object of at most this many fields, ``method`` among them.
_MAX_SOURCE_FIELDS = 20
_FEATURE_FIELDS = ("name", "op", "key", "window_ms", "transform", "clip", "weight",
                   "direction", "merchant_direction", "transform_scale")
_FEATURE_SET_FIELDS = ("name", "version", "description", "scaling", "counterparty",
                       "amount_side", "features")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CheckedMetadata:
    """What :func:`check_metadata` built on the way: the feature set and detector params."""

    feature_set: FeatureSet | None
    params: dict[str, Any]


def check_metadata(meta: Any, where: str) -> CheckedMetadata:
    """Check every field of a parsed ``model.json``; ``where`` names the file in messages.

    Returns the feature set (or None) and the detector's parameters (``map_size`` a tuple).
    """
    meta = _object(meta, "model.json", where)
    _check_format(meta, where)
    _check_no_infinity(meta, "", where)
    names = _check_names(meta["feature_names"], where)
    rows, cols = _check_map(meta["map"], len(names), where)
    _check_tensors(meta["tensors"], where)
    _require(isinstance(meta.get("package_version", ""), str), where, "package_version",
             meta.get("package_version"), "must be a string")
    _require(isinstance(meta.get("fitted_with_feature_names", False), bool), where,
             "fitted_with_feature_names", meta.get("fitted_with_feature_names"),
             "must be true or false")
    params = _check_params(meta["params"], (rows, cols), where)
    _check_threshold(meta, params, where)
    feature_set = _feature_set(meta.get("feature_set"), names, where)
    if feature_set is not None:
        declared, given = feature_set.directions, params.get("feature_directions")
        _require((list(given) if given and any(given) else None) == declared, where,
                 "params.feature_directions", given,
                 f"must agree with the feature set's directions ({_show(declared)})")
    if meta["format_version"] >= 2:
        _check_signed_fields(meta, where)
    return CheckedMetadata(feature_set, params)


def _check_format(meta: dict[str, Any], where: str) -> None:
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMATS:
        raise ModelFileError(f"{where}: model format version {_show(version)} is not "
                             f"supported (this txanomaly {txanomaly.__version__} reads "
                             f"versions {', '.join(map(str, READABLE_FORMATS))}); retrain or "
                             "use a matching txanomaly")
    required = _REQUIRED + (("model_version",) if version >= 2 else ())
    missing = [key for key in required if key not in meta]
    if missing:
        raise ModelFileError(f"{where}: missing field(s) {', '.join(missing)}")
    known = _REQUIRED + _OPTIONAL + (_FORMAT_2 if version >= 2 else ())
    unknown = sorted(set(meta) - set(known))
    if unknown:
        raise ModelFileError(f"{where}: unknown field(s) {', '.join(unknown)} in a format "
                             f"{version} model file")


def _check_no_infinity(value: Any, field: str, where: str) -> None:
    """NaN and +-Infinity anywhere: Python's json reads them, no other JSON reader does."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _refusal(where, field, value, "NaN and Infinity are not numbers a model holds")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_no_infinity(item, f"{field}.{key}" if field else str(key), where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_no_infinity(item, f"{field}[{i}]", where)


def _check_names(names: Any, where: str) -> list[str]:
    names = _list(names, "feature_names", where)
    for i, name in enumerate(names):
        _require(isinstance(name, str) and name != "", where, f"feature_names[{i}]", name,
                 "must be a non-empty string")
    _require(len(names) > 0 and len(set(names)) == len(names), where, "feature_names", names,
             "must be one or more distinct names")
    return list(names)


def _check_map(value: Any, n_features: int, where: str) -> tuple[int, int]:
    shape = _object(value, "map", where)
    _require(set(shape) == {"rows", "cols", "n_features"}, where, "map", shape,
             "must hold exactly rows, cols and n_features")
    for key in ("rows", "cols", "n_features"):
        _require(_is_int(shape[key]) and shape[key] >= 1, where, f"map.{key}", shape[key],
                 "must be an integer >= 1")
    _require(shape["n_features"] == n_features, where, "map.n_features", shape["n_features"],
             f"must equal the number of feature_names ({n_features})")
    return shape["rows"], shape["cols"]


def _check_tensors(value: Any, where: str) -> None:
    tensors = _object(value, "tensors", where)
    _require(set(tensors) == {"file", "sha256"}, where, "tensors", tensors,
             "must hold exactly file and sha256")
    _require(tensors["file"] == TENSORS_FILE, where, "tensors.file", tensors["file"],
             f"must be {TENSORS_FILE!r}")
    _require(isinstance(tensors["sha256"], str) and bool(_SHA256.fullmatch(tensors["sha256"])),
             where, "tensors.sha256", tensors["sha256"], "must be 64 lowercase hex digits")


def _check_params(value: Any, shape: tuple[int, int], where: str) -> dict[str, Any]:
    """The detector's parameters as :class:`AnomalyDetector` checks them, and the map shape."""
    params = dict(_object(value, "params", where))
    unknown = sorted(set(params) - set(AnomalyDetector().get_params()))
    _require(not unknown, where, "params", unknown, "unknown detector parameter(s)")
    if isinstance(params.get("map_size"), list):
        params["map_size"] = tuple(params["map_size"])
    # Models saved before reference_width scored rows against their BMU's own prototype.
    params.setdefault("reference_width", 0.0)
    # A RandomState instance is saved as its repr: recorded, not restorable, and the seed no
    # longer matters once the prototypes are loaded.
    if not isinstance(params.get("random_state"), int | None):
        params["random_state"] = 0
    _require(isinstance(params.get("device", "cpu"), str), where, "params.device",
             params.get("device"), "must be a string")
    try:
        # The device is the loader's choice (a model trained on a GPU loads on a CPU).
        AnomalyDetector(**{**params, "device": "cpu"}).check_params()
    except (ValueError, TxAnomalyError) as exc:
        raise ModelFileError(f"{where}: params.{exc}") from None
    rows_cols = parse_map_size(params.get("map_size", (10, 10)))
    _require(rows_cols == shape, where, "params.map_size", value.get("map_size"),
             f"must agree with map ({shape[0]}x{shape[1]})")
    return params


def _check_threshold(meta: dict[str, Any], params: dict[str, Any], where: str) -> None:
    try:
        threshold = check_threshold(meta["threshold"])
    except ValueError:
        raise _refusal(where, "threshold", meta["threshold"],
                       "must be a finite number > 0") from None
    contamination = meta.get("contamination", params.get("contamination", 0.05))
    _require(_is_number(contamination) and 0 < contamination <= 0.5, where, "contamination",
             contamination, "must be a number in (0, 0.5]")
    _require(contamination == params.get("contamination", contamination), where,
             "contamination", contamination,
             f"must equal params.contamination ({_show(params.get('contamination'))})")
    quantiles = _score_quantiles(meta.get("training_summary"), where)
    if quantiles is None:
        return
    low, high = quantiles["p50"], THRESHOLD_MAX_FACTOR * quantiles["max"]
    # A learnt threshold is the 1 - contamination quantile, contamination <= 0.5: never below
    # the median (one below it would flag most normal traffic).
    _require(threshold >= low, where, "threshold", threshold,
             f"is below the median training score ({low!r}): it would flag most normal rows")
    _require(threshold <= high, where, "threshold", threshold,
             f"is above {THRESHOLD_MAX_FACTOR:g} x the largest training score "
             f"({quantiles['max']!r}): it would flag almost nothing")


def _score_quantiles(value: Any, where: str) -> dict[str, float] | None:
    """The training summary's score quantiles (None when it keeps none: partial_fit models).

    The rest of the summary is descriptive (shown by ``GET /v1/model``): checked for types,
    never used to decide anything.
    """
    if value is None:
        return None
    summary = _object(value, "training_summary", where)
    for key in ("rows", "epochs"):
        _require(_is_int(summary.get(key, 1)) and summary.get(key, 1) >= 1, where,
                 f"training_summary.{key}", summary.get(key), "must be an integer >= 1")
    for key in ("quantization_error", "topographic_error", "seconds", "threshold"):
        _require(_is_number(summary.get(key, 0)), where, f"training_summary.{key}",
                 summary.get(key), "must be a number")
    if "score_quantiles" not in summary:
        return None
    quantiles = _object(summary["score_quantiles"], "training_summary.score_quantiles", where)
    values: list[Any] = [quantiles.get(key) for key in _QUANTILES]
    _require(set(quantiles) == set(_QUANTILES) and all(_is_number(v) for v in values)
             and values == sorted(values) and values[0] >= 0, where,
             "training_summary.score_quantiles", quantiles,
             f"must hold numbers >= 0 {' <= '.join(_QUANTILES)}")
    return {key: float(v) for key, v in zip(_QUANTILES, values, strict=True)}


def _feature_set(value: Any, names: list[str], where: str) -> FeatureSet | None:
    if value is None:
        return None
    data = _object(value, "feature_set", where)
    unknown = sorted(set(data) - set(_FEATURE_SET_FIELDS))
    _require(not unknown, where, "feature_set", unknown, "unknown field(s)")
    _require(isinstance(data.get("name"), str) and data["name"] != "", where,
             "feature_set.name", data.get("name"), "must be a non-empty string")
    _require(_is_int(data.get("version", 1)) and data.get("version", 1) >= 1, where,
             "feature_set.version", data.get("version"), "must be an integer >= 1")
    for key in ("description", "scaling", "amount_side"):
        _require(isinstance(data.get(key, ""), str), where, f"feature_set.{key}",
                 data.get(key), "must be a string")
    _require(isinstance(data.get("counterparty"), str | None), where,
             "feature_set.counterparty", data.get("counterparty"), "must be a string or null")
    features = _list(data.get("features"), "feature_set.features", where)
    for i, feature in enumerate(features):
        _check_feature(feature, f"feature_set.features[{i}]", where)
    try:
        feature_set = FeatureSet.from_dict(data)  # ops, keys, transforms, scaling
    except TxAnomalyError as exc:
        raise ModelFileError(f"{where}: feature_set: {exc}") from None
    _require(feature_set.transforms_fitted, where, "feature_set.features",
             [f.name for f in feature_set.features if f.transform_scale is None
              and f.transform in FITTED_TRANSFORMS], "transform_scale must be fitted")
    if feature_set.names != names:
        raise ModelFileError(f"{where}: feature names do not match: feature_set declares "
                             f"{feature_set.names}, feature_names holds {names}")
    return feature_set


def _check_feature(value: Any, field: str, where: str) -> None:
    """One feature's types and ranges (FeatureSet.from_dict checks ops, keys, transforms)."""
    feature = _object(value, field, where)
    unknown = sorted(set(feature) - set(_FEATURE_FIELDS))
    _require(not unknown, where, field, unknown, "unknown field(s)")
    for key in ("name", "op"):
        _require(isinstance(feature.get(key), str) and feature[key] != "", where,
                 f"{field}.{key}", feature.get(key), "must be a non-empty string")
    for key in ("key", "transform", "direction", "merchant_direction"):
        _require(isinstance(feature.get(key, ""), str | None), where, f"{field}.{key}",
                 feature.get(key), "must be a string or null")
    window = feature.get("window_ms")
    _require(window is None or (_is_int(window) and window >= 1), where, f"{field}.window_ms",
             window, "must be an integer >= 1 (milliseconds) or null")
    clip = feature.get("clip")
    _require(clip is None or (isinstance(clip, list) and len(clip) == 2
                              and all(_is_number(c) for c in clip) and clip[0] < clip[1]),
             where, f"{field}.clip", clip, "must be [low, high] with low < high, or null")
    weight = feature.get("weight", 1.0)
    _require(_is_number(weight) and weight > 0, where, f"{field}.weight", weight,
             "must be a number > 0")
    scale = feature.get("transform_scale")
    _require(scale is None or (_is_number(scale) and scale > 0), where,
             f"{field}.transform_scale", scale, "must be a number > 0 or null")


def _check_signed_fields(meta: dict[str, Any], where: str) -> None:
    _require(isinstance(meta["model_version"], str), where, "model_version",
             meta["model_version"], "must be a string")
    if "threshold_source" in meta:
        _check_threshold_source(meta["threshold_source"], where)
    if "signature" not in meta:
        return
    signature = _object(meta["signature"], "signature", where)
    _require(signature.get("algorithm") == "hmac-sha256" and set(signature) == {
        "algorithm", "value"}, where, "signature", signature,
        'must be {"algorithm": "hmac-sha256", "value": ...}')
    value = signature["value"]
    _require(isinstance(value, str) and bool(_SHA256.fullmatch(value)), where,
             "signature.value", value, "must be 64 lowercase hex digits")


def _check_threshold_source(value: Any, where: str) -> None:
    source = _object(value, "threshold_source", where)
    _require(isinstance(source.get("method"), str) and len(source) <= _MAX_SOURCE_FIELDS,
             where, "threshold_source", source,
             f"must name its method and hold at most {_MAX_SOURCE_FIELDS} fields")
    for key, item in source.items():
        _require(item is None or isinstance(item, str | bool) or _is_number(item), where,
                 f"threshold_source.{key}", item, "must be a string, number, boolean or null")


# --------------------------------------------------------------------------- small checks
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or a finite float (never a bool: JSON ``true`` is not 1 here)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _object(value: Any, field: str, where: str) -> dict[str, Any]:
    _require(isinstance(value, dict), where, field, value, "must be a JSON object")
    return dict(value)


def _list(value: Any, field: str, where: str) -> list[Any]:
    _require(isinstance(value, list) and len(value) > 0, where, field, value,
             "must be a non-empty list")
    return list(value)


def _require(ok: bool, where: str, field: str, value: Any, rule: str) -> None:
    if not ok:
        raise _refusal(where, field, value, rule)


def _refusal(where: str, field: str, value: Any, rule: str) -> ModelFileError:
    return ModelFileError(f"{where}: {field} = {_show(value)}: {rule}")


def _show(value: Any, limit: int = 80) -> str:
    """``value`` as the file spells it (``NaN``, ``true``, ``null``), cut at ``limit``."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["FORMAT_VERSION", "READABLE_FORMATS", "THRESHOLD_MAX_FACTOR", "CheckedMetadata",
           "check_metadata"]
