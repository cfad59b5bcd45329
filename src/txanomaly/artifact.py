"""The model directory: ``model.safetensors`` (numbers) + ``model.json`` (everything else).

No pickle: tensors go through safetensors, the rest is plain JSON. ``model.json`` records
the format version, the package version, the feature set (full definition and names), the map
shape and training parameters, the threshold and contamination, a training summary, and the
SHA-256 of ``model.safetensors``. Both files are written atomically (temporary file + rename),
tensors first, so a reader never sees a JSON that points at half-written tensors.

:func:`load` refuses, with a :class:`~txanomaly.errors.ModelFileError` that says what is wrong:
a missing directory or file, a JSON that does not parse or lacks a field, another format
version, tensors whose hash differs (tampered or truncated), tensors whose shapes do not match
the JSON, and feature names other than the caller expects.

>>> import numpy as np, tempfile
>>> X = np.random.default_rng(0).normal(size=(60, 2))
>>> det = AnomalyDetector(map_size="3x3", epochs=2).fit(X)
>>> with tempfile.TemporaryDirectory() as d:
...     _ = save(d, det)
...     again = load(d).detector
>>> again.threshold_ == det.threshold_
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

import txanomaly
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import ModelFileError, TxAnomalyError
from txanomaly.features.spec import FeatureSet

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TENSORS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
_TENSOR_NAMES = ("som.weights", "scaler.center", "scaler.scale")


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load` returns: the fitted detector, its feature set (if saved) and metadata."""

    detector: AnomalyDetector
    feature_set: FeatureSet | None
    feature_names: list[str]
    metadata: dict[str, Any]


# --------------------------------------------------------------------------- saving
def save(path: str | Path, detector: AnomalyDetector,
         feature_set: FeatureSet | None = None) -> Path:
    """Write a fitted ``detector`` (and the ``feature_set`` it was trained on) to ``path``.

    The directory is created if needed; existing model files in it are replaced.
    """
    if not hasattr(detector, "som_"):
        raise TxAnomalyError("cannot save a detector that is not fitted; call fit first")
    names = _feature_names(detector, feature_set)
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {
        "som.weights": detector.som_.weights.detach().cpu().numpy().astype(np.float32),
        "scaler.center": np.asarray(detector.center_, dtype=np.float64),
        "scaler.scale": np.asarray(detector.scale_, dtype=np.float64),
    }
    blob = save_tensors(tensors)
    _write_atomic(directory / TENSORS_FILE, blob)
    meta = _metadata(detector, feature_set, names, hashlib.sha256(blob).hexdigest())
    _write_atomic(directory / METADATA_FILE,
                  json.dumps(meta, indent=2, sort_keys=False).encode() + b"\n")
    logger.info("saved model to %s", directory)
    return directory


def _feature_names(detector: AnomalyDetector, feature_set: FeatureSet | None) -> list[str]:
    if feature_set is not None:
        if len(feature_set.names) != detector.n_features_in_:
            raise TxAnomalyError(f"feature set {feature_set.name!r} has "
                                 f"{len(feature_set.names)} features but the detector was "
                                 f"fitted on {detector.n_features_in_}")
        return list(feature_set.names)
    if hasattr(detector, "feature_names_in_"):
        return [str(n) for n in detector.feature_names_in_]
    return [f"x{i}" for i in range(detector.n_features_in_)]


def _metadata(detector: AnomalyDetector, feature_set: FeatureSet | None, names: list[str],
              sha256: str) -> dict[str, Any]:
    params = detector.get_params()
    return {
        "format_version": FORMAT_VERSION,
        "package_version": txanomaly.__version__,
        "feature_set": feature_set.to_dict() if feature_set is not None else None,
        "feature_names": names,
        # sklearn's feature_names_in_: set only when the detector was fitted on a DataFrame.
        "fitted_with_feature_names": hasattr(detector, "feature_names_in_"),
        "map": {"rows": detector.som_.rows, "cols": detector.som_.cols,
                "n_features": len(names)},
        "params": _jsonable(params),
        "threshold": float(detector.threshold_),
        "contamination": detector.contamination,
        "training_summary": _jsonable(getattr(detector, "training_summary_", {})),
        "tensors": {"file": TENSORS_FILE, "sha256": sha256},
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # e.g. a RandomState instance: recorded, not restorable


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- loading
def load(path: str | Path, feature_names: list[str] | None = None,
         device: str = "cpu") -> LoadedModel:
    """Read a model directory written by :func:`save`, checking it on the way.

    ``feature_names``, when given, must equal the saved names (same names, same order).
    """
    directory = Path(path)
    meta = _read_metadata(directory)
    saved_names = meta["feature_names"]
    if feature_names is not None and list(feature_names) != saved_names:
        raise ModelFileError(_names_mismatch(directory, saved_names, list(feature_names)))
    tensors = _read_tensors(directory, meta)
    feature_set = _feature_set(directory, meta)
    params = dict(meta["params"])
    if isinstance(params.get("map_size"), list):
        params["map_size"] = tuple(params["map_size"])
    if not isinstance(params.get("random_state"), int | None):
        params["random_state"] = 0
    params["device"] = device
    try:
        detector = AnomalyDetector(**params).restore(
            tensors["som.weights"], tensors["scaler.center"], tensors["scaler.scale"],
            meta["threshold"],
            feature_names=saved_names if meta.get("fitted_with_feature_names") else None,
            training_summary=meta.get("training_summary"))
    except (TypeError, ValueError, TxAnomalyError) as exc:
        raise ModelFileError(f"{directory}: the saved model does not fit together: {exc}"
                             ) from None
    return LoadedModel(detector, feature_set, list(saved_names), meta)


_REQUIRED = ("format_version", "feature_names", "map", "params", "threshold", "tensors")


def _read_metadata(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: no such model directory")
    file = directory / METADATA_FILE
    if not file.is_file():
        raise ModelFileError(f"{directory}: {METADATA_FILE} is missing; not a model directory")
    try:
        meta = json.loads(file.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{file}: not valid JSON (truncated or edited?): {exc}") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{file}: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{file}: model format version {version!r} is not supported "
                             f"(this txanomaly {txanomaly.__version__} reads version "
                             f"{FORMAT_VERSION}); retrain or use a matching txanomaly")
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise ModelFileError(f"{file}: missing field(s) {', '.join(missing)}")
    if meta.get("package_version") != txanomaly.__version__:
        logger.warning("model %s was saved by txanomaly %s, this is %s", directory,
                       meta.get("package_version"), txanomaly.__version__)
    return meta


def _read_tensors(directory: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    file = directory / TENSORS_FILE
    if not file.is_file():
        raise ModelFileError(f"{directory}: {TENSORS_FILE} is missing")
    blob = file.read_bytes()
    expected = str(meta["tensors"].get("sha256", ""))
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise ModelFileError(f"{file}: SHA-256 {actual[:12]}... does not match the "
                             f"{expected[:12]}... recorded in {METADATA_FILE}: the file was "
                             f"modified or truncated ({len(blob)} bytes)")
    try:
        tensors = load_tensors(blob)
    except SafetensorError as exc:
        raise ModelFileError(f"{file}: unreadable tensors: {exc}") from None
    missing = [name for name in _TENSOR_NAMES if name not in tensors]
    if missing:
        raise ModelFileError(f"{file}: missing tensor(s) {', '.join(missing)}")
    d = len(meta["feature_names"])
    units = int(meta["map"]["rows"]) * int(meta["map"]["cols"])
    shapes = {"som.weights": (units, d), "scaler.center": (d,), "scaler.scale": (d,)}
    for name, shape in shapes.items():
        if tensors[name].shape != shape:
            raise ModelFileError(f"{file}: tensor {name} has shape {tensors[name].shape}, "
                                 f"{METADATA_FILE} implies {shape}")
    return tensors


def _feature_set(directory: Path, meta: dict[str, Any]) -> FeatureSet | None:
    data = meta.get("feature_set")
    if data is None:
        return None
    try:
        feature_set = FeatureSet.from_dict(data)
    except TxAnomalyError as exc:
        raise ModelFileError(f"{directory}: {exc}") from None
    if feature_set.names != meta["feature_names"]:
        raise ModelFileError(_names_mismatch(directory, meta["feature_names"],
                                             feature_set.names))
    return feature_set


def _names_mismatch(directory: Path, saved: list[str], wanted: list[str]) -> str:
    extra = [n for n in wanted if n not in saved]
    missing = [n for n in saved if n not in wanted]
    detail = []
    if missing:
        detail.append(f"missing {missing}")
    if extra:
        detail.append(f"unexpected {extra}")
    if not detail:
        detail.append("same names in another order")
    return (f"{directory}: feature names do not match the model's ({len(saved)} saved, "
            f"{len(wanted)} given): {'; '.join(detail)}")
