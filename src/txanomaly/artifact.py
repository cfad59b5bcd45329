"""The model directory: ``model.safetensors`` (numbers) + ``model.json`` (everything else).

No pickle: tensors go through safetensors, the rest is plain JSON. ``model.json`` records
the format version, the package version, the feature set (full definition and names), the map
shape and training parameters, the threshold and contamination, a training summary, the
SHA-256 of ``model.safetensors``, the model's version and, when signed, its signature. Both
files are written atomically (temporary file + rename), tensors first, so a reader never sees
a JSON that points at half-written tensors.

The version covers everything that decides a verdict: :func:`manifest` is the canonical JSON
of ``model.json`` without its descriptive fields (package version, training summary) and
without the version and signature themselves; it holds the tensors' SHA-256, so it covers
the numbers too. :func:`model_version` is ``<feature set>-<first 12 hex of its SHA-256>``.
:func:`sign` adds an HMAC-SHA256 of the manifest under a key the server is given.

:func:`load` refuses, with a :class:`~txanomaly.errors.ModelFileError` that says what is wrong:
a missing directory or file, a JSON that does not parse, any field that breaks the rules of
:mod:`txanomaly.artifact_rules` (types, finite numbers, ranges), a recorded version that differs
from the recomputed one (``model.json`` edited), tensors whose hash differs (tampered or
truncated), tensors whose shapes do not match the JSON or whose values are not finite, feature
names other than the caller expects, and, given a key, a model that is unsigned or whose
signature does not verify. docs/service.md states what this protects against and what not.

>>> import numpy as np, tempfile
>>> X = np.random.default_rng(0).normal(size=(60, 2))
>>> det = AnomalyDetector(map_size="3x3", epochs=2).fit(X)
>>> with tempfile.TemporaryDirectory() as d:
...     _ = save(d, det, key=b"k" * 32)
...     again = load(d, key=b"k" * 32)
>>> again.detector.threshold_ == det.threshold_, again.version.startswith("detector-")
(True, True)
"""

from __future__ import annotations

import hashlib
import hmac
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
from txanomaly.artifact_rules import (
    FORMAT_VERSION,
    TENSORS_FILE,
    CheckedMetadata,
    check_metadata,
)
from txanomaly.detector import AnomalyDetector
from txanomaly.errors import ModelFileError, TxAnomalyError
from txanomaly.features.spec import FeatureSet

logger = logging.getLogger(__name__)

METADATA_FILE = "model.json"
_TENSOR_NAMES = ("som.weights", "scaler.center", "scaler.scale")
#: Fields of model.json outside the manifest: they describe the model and decide no verdict
#: (the package that wrote it, the training summary: two trainings that give the same
#: prototypes and threshold give the same version), or they are derived from it.
_DESCRIPTIVE = ("package_version", "training_summary", "model_version", "signature")
SIGNATURE_ALGORITHM = "hmac-sha256"

Key = bytes | str


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load` returns: the fitted detector, its feature set (if saved), metadata,
    the version (:func:`model_version`) and whether a key verified its signature."""

    detector: AnomalyDetector
    feature_set: FeatureSet | None
    feature_names: list[str]
    metadata: dict[str, Any]
    version: str
    verified: bool = False


# --------------------------------------------------------------------------- version, signature
def manifest(meta: dict[str, Any]) -> bytes:
    """The canonical JSON of what in ``meta`` decides a verdict (sorted keys, no spaces).

    Everything but :data:`_DESCRIPTIVE`: format version, feature set and names, map, params,
    threshold, contamination and the tensors' SHA-256 (which stands for the tensors).
    """
    fields = {key: value for key, value in meta.items() if key not in _DESCRIPTIVE}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def model_version(meta: dict[str, Any]) -> str:
    """``<feature set>-<first 12 hex of sha256(manifest)>`` (``detector-...`` without one)."""
    name = meta["feature_set"]["name"] if meta.get("feature_set") else "detector"
    return f"{name}-{hashlib.sha256(manifest(meta)).hexdigest()[:12]}"


def signature(meta: dict[str, Any], key: Key) -> str:
    """HMAC-SHA256 of :func:`manifest` under ``key``, as hex."""
    return hmac.new(_key_bytes(key), manifest(meta), hashlib.sha256).hexdigest()


def read_key(path: str | Path) -> str:
    """A model key from a file: UTF-8 text, surrounding whitespace removed (so that
    ``openssl rand -hex 32 > model.key`` works). The key is text because the server is also
    given it as an environment variable (``TXANOMALY_MODEL_KEY``); it is used as UTF-8 bytes.
    """
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TxAnomalyError(f"{path}: cannot read the key file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TxAnomalyError(f"{path}: the key file is not UTF-8 text (use hex digits, e.g. "
                             "openssl rand -hex 32)") from None
    if not key:
        raise TxAnomalyError(f"{path}: the key file is empty")
    return key


def _key_bytes(key: Key) -> bytes:
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not raw:
        raise TxAnomalyError("the model signing key is empty")
    return raw


def sign(path: str | Path, key: Key) -> str:
    """Sign the model in ``path`` with ``key``; returns its version.

    The model is checked first (as :func:`load` does, without a key); a format 1 file is
    rewritten as format 2, so its version changes once. An existing signature is replaced.
    """
    directory = Path(path)
    loaded = load(directory)
    meta = _recorded({**loaded.metadata, "format_version": FORMAT_VERSION}, key)
    _write_metadata(directory, meta)
    logger.info("signed model %s (%s)", directory, meta["model_version"])
    return str(meta["model_version"])


# --------------------------------------------------------------------------- saving
def save(path: str | Path, detector: AnomalyDetector,
         feature_set: FeatureSet | None = None, key: Key | None = None) -> Path:
    """Write a fitted ``detector`` (and the ``feature_set`` it was trained on) to ``path``.

    The directory is created if needed; existing model files in it are replaced. With
    ``key``, the model is signed (:func:`sign`). A model that :func:`load` would refuse (a
    threshold out of range, say) is refused here, before anything is written.
    """
    if not hasattr(detector, "som_"):
        raise TxAnomalyError("cannot save a detector that is not fitted; call fit first")
    names = _feature_names(detector, feature_set)
    directory = Path(path)
    tensors: dict[str, np.ndarray] = {
        "som.weights": detector.som_.weights.detach().cpu().numpy().astype(np.float32),
        "scaler.center": np.asarray(detector.center_, dtype=np.float64),
        "scaler.scale": np.asarray(detector.scale_, dtype=np.float64),
        "som.active_units": np.asarray(detector.active_units_, dtype=np.uint8),
    }
    blob = save_tensors(tensors)
    meta = _recorded(_metadata(detector, feature_set, names, hashlib.sha256(blob).hexdigest()),
                     key)
    check_metadata(meta, f"{directory / METADATA_FILE}")
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(directory / TENSORS_FILE, blob)
    _write_metadata(directory, meta)
    logger.info("saved model to %s", directory)
    return directory


def set_threshold(source: str | Path, target: str | Path, threshold: float,
                  origin: dict[str, Any], key: Key | None = None) -> str:
    """Write the model of ``source`` to ``target`` (may be the same directory) with another
    threshold, recording where it came from (``threshold_source``: ``origin``, which names
    its ``method``); returns the new version.

    The model is checked first, as :func:`load` does; the new ``model.json`` is checked by
    the same rules before anything is written (a threshold out of the training scores'
    range is refused). With ``key`` the result is signed; without, it is unsigned.
    """
    src, dst = Path(source), Path(target)
    loaded = load(src)
    blob = (src / TENSORS_FILE).read_bytes()
    meta = _recorded({**loaded.metadata, "format_version": FORMAT_VERSION,
                      "threshold": float(threshold), "threshold_source": dict(origin)}, key)
    check_metadata(meta, f"{dst / METADATA_FILE}")
    dst.mkdir(parents=True, exist_ok=True)
    if dst.resolve() != src.resolve():
        _write_atomic(dst / TENSORS_FILE, blob)
    _write_metadata(dst, meta)
    logger.info("model %s: threshold %s (%s)", dst, threshold, origin.get("method"))
    return str(meta["model_version"])


def _recorded(meta: dict[str, Any], key: Key | None) -> dict[str, Any]:
    """``meta`` with its version (and, with ``key``, its signature) recorded."""
    # Through JSON and back: the version is computed from exactly what a reader will parse.
    meta = json.loads(json.dumps({k: v for k, v in meta.items()
                                  if k not in ("model_version", "signature")}, allow_nan=False))
    meta["model_version"] = model_version(meta)
    if key is not None:
        meta["signature"] = {"algorithm": SIGNATURE_ALGORITHM, "value": signature(meta, key)}
    return meta


def _write_metadata(directory: Path, meta: dict[str, Any]) -> None:
    _write_atomic(directory / METADATA_FILE,
                  json.dumps(meta, indent=2, allow_nan=False).encode() + b"\n")


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
    if isinstance(value, list | tuple | np.ndarray):  # e.g. feature_weights as an array
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
         device: str = "cpu", key: Key | None = None) -> LoadedModel:
    """Read a model directory written by :func:`save`, checking it on the way.

    ``feature_names``, when given, must equal the saved names (same names, same order).
    With ``key``, the model must be signed with it; without, a signature is not checked.
    """
    directory = Path(path)
    meta, checked = _read_metadata(directory)
    version = _check_version(directory, meta)
    verified = _check_signature(directory, meta, key)
    saved_names = meta["feature_names"]
    if feature_names is not None and list(feature_names) != saved_names:
        raise ModelFileError(_names_mismatch(directory, saved_names, list(feature_names)))
    tensors = _read_tensors(directory, meta)
    try:
        detector = AnomalyDetector(**{**checked.params, "device": device}).restore(
            tensors["som.weights"], tensors["scaler.center"], tensors["scaler.scale"],
            meta["threshold"],
            feature_names=saved_names if meta.get("fitted_with_feature_names") else None,
            training_summary=meta.get("training_summary"),
            active_units=tensors.get("som.active_units"))
    except (TypeError, ValueError, TxAnomalyError) as exc:
        raise ModelFileError(f"{directory / TENSORS_FILE}: {exc}") from None
    return LoadedModel(detector, checked.feature_set, list(saved_names), meta, version,
                       verified)


def _read_metadata(directory: Path) -> tuple[dict[str, Any], CheckedMetadata]:
    if not directory.is_dir():
        raise ModelFileError(f"{directory}: no such model directory")
    file = directory / METADATA_FILE
    if not file.is_file():
        raise ModelFileError(f"{directory}: {METADATA_FILE} is missing; not a model directory")
    try:
        meta = json.loads(file.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{file}: not valid JSON (truncated or edited?): {exc}") from None
    checked = check_metadata(meta, str(file))
    if meta.get("package_version") != txanomaly.__version__:
        logger.warning("model %s was saved by txanomaly %s, this is %s", directory,
                       meta.get("package_version"), txanomaly.__version__)
    return meta, checked


def _check_version(directory: Path, meta: dict[str, Any]) -> str:
    """The version recomputed; refused when it differs from the recorded one."""
    version = model_version(meta)
    recorded = meta.get("model_version")
    if recorded is None:  # format 1: nothing recorded to compare with
        logger.warning("model %s is format %s: its model.json records no version, so an "
                       "edit to it cannot be detected; sign it or save it again", directory,
                       meta["format_version"])
    elif recorded != version:
        raise ModelFileError(f"{directory / METADATA_FILE}: model_version {recorded!r} does "
                             f"not match its content ({version!r}): model.json was edited "
                             "or corrupted after it was saved")
    return version


def _check_signature(directory: Path, meta: dict[str, Any], key: Key | None) -> bool:
    """With ``key``: the signature must verify. Without: not checked (said at INFO)."""
    signed = "signature" in meta
    file = directory / METADATA_FILE
    if key is None:
        if signed:
            logger.info("model %s is signed; no key was given, so the signature is not "
                        "checked", directory)
        return False
    if not signed:
        raise ModelFileError(f"{file}: the model is not signed, and a model key is "
                             "configured: sign it (txanomaly model sign) with that key")
    if not hmac.compare_digest(str(meta["signature"]["value"]), signature(meta, key)):
        raise ModelFileError(f"{file}: the signature does not verify: the model was signed "
                             "with another key, or model.json or the tensors were changed")
    return True


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
    # som.active_units: optional (models saved before min_unit_share score on every unit).
    shapes = {"som.weights": (units, d), "scaler.center": (d,), "scaler.scale": (d,),
              "som.active_units": (units,)}
    for name, shape in shapes.items():
        if name in tensors and tensors[name].shape != shape:
            raise ModelFileError(f"{file}: tensor {name} has shape {tensors[name].shape}, "
                                 f"{METADATA_FILE} implies {shape}")
    return tensors


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
