"""Feature sets declared in a file (JSON or TOML), checked with errors that name the line.

A file declares what :class:`~txanomaly.features.spec.FeatureSet` holds: a ``name``, an
optional ``description``, ``version`` and ``scaling``, and a list of ``features``, each with
the fields of :class:`~txanomaly.features.spec.Feature` (``name``, ``op``, ``key``,
``window_ms``, ``transform``, ``clip``, ``weight``, and whatever fields ``Feature`` gains:
the allowed fields are read from the dataclass, so a new field works in files at once).
A window may be written readably, ``window = "1h"`` (see :func:`parse_window`), instead of
``window_ms``; no window means all history so far. docs/features.md ("Your own feature set in
a file") shows a complete file in both formats.

The values are checked by ``Feature`` and ``FeatureSet`` themselves (one rule, whatever the
source); this module checks the shape (known fields, types, no duplicates) and puts the file,
the line and the field in front of every error:

    features.toml:14: feature 'origin_count_1h': field 'windw': unknown field; did you
    mean 'window'?

>>> fs = parse_feature_set('''
... name = "mine"
... [[features]]
... name = "origin_count_1h"
... op = "count"
... key = "origin"
... window = "1h"
... transform = "log1p"
... ''', "toml")
>>> fs.features[0].window_ms
3600000
>>> parse_feature_set(dump_feature_set(fs, "json"), "json") == fs
True
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import json
import re
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Literal

from txanomaly.errors import TxAnomalyError
from txanomaly.features.spec import FEATURE_SETS, Feature, FeatureSet, get_feature_set

#: The file formats, by suffix.
FORMATS = {".json": "json", ".toml": "toml"}
Format = Literal["json", "toml"]

#: ``window``: a whole number and a unit (no space needed): ms, s, m (minutes), h, d.
_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_WINDOW = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
#: The set-level fields a file may hold (``features`` besides); ``extra`` is not stored.
_SET_SKIP = frozenset({"features", "extra"})


class FeatureSetFileError(TxAnomalyError):
    """A feature-set file is invalid; ``line`` and ``field`` say where (either may be None)."""

    def __init__(self, path: str, line: int | None, message: str, *,
                 feature: str | None = None, field: str | None = None,
                 column: int | None = None) -> None:
        self.path, self.line, self.column = path, line, column
        self.feature, self.field = feature, field
        where = path + (f":{line}" if line is not None else "") + (
            f":{column}" if column is not None else "")
        parts = [where]
        if feature is not None:
            parts.append(f"feature {feature}")
        if field is not None:
            parts.append(f"field {field!r}")
        super().__init__(": ".join([*parts, message]))


# --------------------------------------------------------------------------- windows
def parse_window(text: str) -> int:
    """A readable window in milliseconds: ``"15m"``, ``"1h"``, ``"24h"``, ``"30d"``, ``"500ms"``.

    >>> parse_window("24h"), parse_window("15m"), parse_window("90s")
    (86400000, 900000, 90000)
    """
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"window {text!r} is not a number and a unit (ms, s, m, h, d), "
                         "e.g. '15m', '1h', '30d'")
    return int(match[1]) * _UNITS_MS[match[2]]


def format_window(ms: int) -> str:
    """The shortest exact readable form of ``ms`` (the inverse of :func:`parse_window`).

    >>> format_window(86_400_000), format_window(3_600_000 * 36), format_window(1500)
    ('1d', '36h', '1500ms')
    """
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


# --------------------------------------------------------------------------- loading
def load_feature_set(path: str | Path) -> FeatureSet:
    """Read a feature set from a ``.json`` or ``.toml`` file (format by suffix)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TxAnomalyError(f"{path}: a feature-set file must end in .json or .toml")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not an error
    except FileNotFoundError:
        raise TxAnomalyError(f"{path}: no such feature-set file") from None
    except UnicodeDecodeError as exc:
        raise TxAnomalyError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return parse_feature_set(text, typing.cast(Format, fmt), str(path))


def parse_feature_set(text: str, fmt: Format, source: str = "<string>") -> FeatureSet:
    """Read a feature set from ``text`` in ``fmt`` (``json`` or ``toml``); ``source`` names
    the file in errors."""
    if fmt == "json":
        data, lines = _read_json(text, source)
    elif fmt == "toml":
        data, lines = _read_toml(text, source)
    else:
        raise TxAnomalyError(f"unknown feature-set format {fmt!r}; expected json or toml")
    return _Builder(source, lines).build(data)


def resolve_feature_set(name_or_path: str | Path | FeatureSet) -> FeatureSet:
    """A built-in feature set by name (``seed``, ``standard``), or one read from a file.

    A name wins over a file of the same name in the working directory; anything that ends
    in ``.json``/``.toml`` or names a path (contains a ``/``) is read as a file.
    """
    if isinstance(name_or_path, FeatureSet):
        return name_or_path
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text in FEATURE_SETS:
        return get_feature_set(text)
    path = Path(name_or_path)
    if path.suffix.lower() in FORMATS or isinstance(name_or_path, Path) or "/" in text \
            or "\\" in text or path.is_file():
        return load_feature_set(path)
    raise TxAnomalyError(f"unknown feature set {text!r}; expected one of "
                         f"{', '.join(FEATURE_SETS)} or a .json or .toml file")


# --------------------------------------------------------------------------- line maps
@dataclass
class _Lines:
    """Where things are in the file: the line of each set-level field, of each feature and of
    each field of each feature (None where unknown)."""

    top: dict[str, int]
    features: list[int | None]
    feature_fields: list[dict[str, int]]
    features_line: int | None = None

    def feature(self, i: int) -> int | None:
        return self.features[i] if i < len(self.features) else self.features_line

    def field(self, i: int, name: str) -> int | None:
        fields = self.feature_fields[i] if i < len(self.feature_fields) else {}
        return fields.get(name, self.feature(i))


def _line_of(starts: list[int], pos: int) -> int:
    return bisect.bisect_right(starts, pos)


def _read_json(text: str, source: str) -> tuple[Any, _Lines]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FeatureSetFileError(source, exc.lineno, f"not valid JSON: {exc.msg}",
                                  column=exc.colno) from None
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    tree = _JsonPositions(text).value(_skip(text, 0))[0]
    lines = _Lines({}, [], [])
    if isinstance(tree, _JsonObject):
        if tree.duplicate is not None:
            key, pos = tree.duplicate
            raise FeatureSetFileError(source, _line_of(starts, pos), "given twice", field=key)
        lines.top = {k: _line_of(starts, pos) for k, (pos, _) in tree.members.items()}
        feats = tree.members.get("features")
        if feats is not None:
            lines.features_line = _line_of(starts, feats[0])
            items = feats[1].items if isinstance(feats[1], _JsonArray) else []
            for item in items:
                lines.features.append(_line_of(starts, item.pos))
                fields: dict[str, int] = {}
                if isinstance(item, _JsonObject):
                    if item.duplicate is not None:
                        key, pos = item.duplicate
                        i = len(lines.features) - 1
                        name = _label(data["features"][i], i)
                        raise FeatureSetFileError(source, _line_of(starts, pos), "given twice",
                                                  feature=name, field=key)
                    fields = {k: _line_of(starts, pos) for k, (pos, _) in item.members.items()}
                lines.feature_fields.append(fields)
    return data, lines


def _label(item: Any, i: int) -> str:
    """How errors name feature ``i`` (``item``): its name when it has one, else ``#i+1``."""
    name = item.get("name") if isinstance(item, dict) else None
    return repr(name) if isinstance(name, str) else f"#{i + 1}"


@dataclass
class _JsonNode:
    pos: int


@dataclass
class _JsonObject(_JsonNode):
    members: dict[str, tuple[int, _JsonNode]]
    duplicate: tuple[str, int] | None = None


@dataclass
class _JsonArray(_JsonNode):
    items: list[_JsonNode]


_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


class _JsonPositions:
    """Where each object, array and key of an already-validated JSON text starts: the JSON
    module reports positions only for errors, so valid text is walked once more."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.decoder = json.JSONDecoder()

    def value(self, pos: int) -> tuple[_JsonNode, int]:
        char = self.text[pos]
        if char == "{":
            return self._object(pos)
        if char == "[":
            return self._array(pos)
        _, end = self.decoder.raw_decode(self.text, pos)  # a string, number, literal
        return _JsonNode(pos), end

    def _object(self, start: int) -> tuple[_JsonNode, int]:
        node = _JsonObject(start, {})
        pos = _skip(self.text, start + 1)
        if self.text[pos] == "}":
            return node, pos + 1
        while True:
            key_pos = pos
            key, pos = json.decoder.scanstring(self.text, pos + 1)  # type: ignore[attr-defined]
            pos = _skip(self.text, _skip(self.text, pos) + 1)  # past ':'
            child, pos = self.value(pos)
            if key in node.members and node.duplicate is None:
                node.duplicate = (key, key_pos)
            node.members[key] = (key_pos, child)
            pos = _skip(self.text, pos)
            if self.text[pos] == "}":
                return node, pos + 1
            pos = _skip(self.text, pos + 1)  # past ','

    def _array(self, start: int) -> tuple[_JsonNode, int]:
        node = _JsonArray(start, [])
        pos = _skip(self.text, start + 1)
        if self.text[pos] == "]":
            return node, pos + 1
        while True:
            child, pos = self.value(pos)
            node.items.append(child)
            pos = _skip(self.text, pos)
            if self.text[pos] == "]":
                return node, pos + 1
            pos = _skip(self.text, pos + 1)


_TOML_LINE_COL = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_HEADER = re.compile(r"^\s*\[\[\s*(?:features|\"features\"|'features')\s*\]\]\s*(#.*)?$")
_TOML_TABLE = re.compile(r"^\s*\[")
_TOML_KEY = re.compile(r"""^\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=""")


def _read_toml(text: str, source: str) -> tuple[Any, _Lines]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_LINE_COL.search(message)
        line = int(match[1]) if match else None
        column = int(match[2]) if match else None
        message = _TOML_LINE_COL.sub("", message).strip()
        raise FeatureSetFileError(source, line, f"not valid TOML: {message}",
                                  column=column) from None
    return data, _toml_lines(text)


def _toml_lines(text: str) -> _Lines:
    """A line scan: the ``[[features]]`` headers and the ``key =`` lines under each.

    Lines inside multi-line strings are skipped; a key is looked for only at the start of
    a line, so a value that spans lines (an array) cannot be taken for a key.
    """
    lines = _Lines({}, [], [])
    table: dict[str, int] | None = lines.top
    in_string: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if _TOML_HEADER.match(line):
            lines.features.append(number)
            lines.feature_fields.append({})
            table = lines.feature_fields[-1]
        elif _TOML_TABLE.match(line):
            table = None  # another table: not ours
        else:
            key = _TOML_KEY.match(line)
            if key is not None and table is not None:
                name = next(g for g in key.groups() if g is not None)
                table.setdefault(name, number)
                if table is lines.top and name == "features":
                    lines.features_line = number
        for quote in ('"""', "'''"):
            if in_string is None and line.count(quote) % 2 == 1:
                in_string = quote
    return lines


# --------------------------------------------------------------------------- checking
def _feature_fields() -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(Feature) if f.init}


def _set_fields() -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(FeatureSet)
            if f.init and f.name not in _SET_SKIP}


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is MISSING and field.default_factory is MISSING


def _describe(hint: Any) -> str:
    """A type hint in words, for errors."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_describe(args[0]).split(' ', 1)[-1]}s"
        return "a list"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(True, value as the field holds it)`` when ``value`` fits ``hint``, else
    ``(False, None)``. Hints it does not know pass as they are (``Feature`` checks them)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, None
    if origin is Literal:
        return (value in args), value
    if hint is type(None):
        return value is None, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return False, None
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return False, None
            item_hints = list(args)
        else:
            item_hints = [args[0] if args else Any] * len(value)
        out = []
        for item, item_hint in zip(value, item_hints, strict=True):
            ok, converted = _convert(item, item_hint)
            if not ok:
                return False, None
            out.append(converted)
        return True, (tuple(out) if origin is tuple else out)
    return True, value


def _literals(hint: Any) -> list[str]:
    """The strings a ``Literal`` in ``hint`` allows (for a did-you-mean)."""
    if typing.get_origin(hint) is Literal:
        return [a for a in typing.get_args(hint) if isinstance(a, str)]
    return [s for arg in typing.get_args(hint) for s in _literals(arg)]


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Builder:
    """Checks the parsed data against ``Feature``/``FeatureSet`` and builds the set."""

    def __init__(self, source: str, lines: _Lines) -> None:
        self.source, self.lines = source, lines

    def fail(self, line: int | None, message: str, *, feature: str | None = None,
             field: str | None = None) -> FeatureSetFileError:
        return FeatureSetFileError(self.source, line, message, feature=feature, field=field)

    def build(self, data: Any) -> FeatureSet:
        if not isinstance(data, dict):
            raise self.fail(1, "the file must hold a table (an object) with a name and features")
        fields = _set_fields()
        hints = typing.get_type_hints(FeatureSet)
        allowed = [*fields, "features"]
        top: dict[str, Any] = {}
        for key, value in data.items():
            line = self.lines.top.get(key, 1)
            if key not in allowed:
                raise self.fail(line, "unknown field" + _suggest(key, allowed), field=key)
            if key == "features":
                continue
            ok, converted = _convert(value, hints[key])
            if not ok:
                raise self.fail(line, f"expected {_describe(hints[key])}, got "
                                      f"{_kind(value)}", field=key)
            top[key] = converted
        for name, spec in fields.items():
            if _required(spec) and name not in top:
                raise self.fail(1, "missing (every feature set needs one)", field=name)
        feats = data.get("features")
        line = self.lines.features_line or 1
        if feats is None:
            raise self.fail(line, "missing: declare at least one feature ([[features]] in "
                                  "TOML, \"features\": [...] in JSON)", field="features")
        if not isinstance(feats, list):
            raise self.fail(line, f"expected a list of features, got {_kind(feats)}",
                            field="features")
        if not feats:
            raise self.fail(line, "empty: declare at least one feature", field="features")
        features = [self.feature(i, item) for i, item in enumerate(feats)]
        seen: dict[str, int] = {}
        for i, feature in enumerate(features):
            if feature.name in seen:
                first = self.lines.feature(seen[feature.name])
                raise self.fail(self.lines.field(i, "name"), "the same name as feature "
                                f"#{seen[feature.name] + 1}" + (
                                    f" (line {first})" if first else "") +
                                "; every feature needs its own name",
                                feature=repr(feature.name), field="name")
            seen[feature.name] = i
        document = {**top, "features": [dataclasses.asdict(f) for f in features]}
        try:
            result = FeatureSet.from_dict(document)
        except TxAnomalyError as exc:
            field, message = _field_in(str(exc), list(fields), f"feature set {top.get('name')!r}: ")
            if field is not None and isinstance(top.get(field), str):
                message += _suggest_value(top[field], message)
            raise self.fail(self.lines.top.get(field or "", 1), message, field=field) from None
        if result.features != tuple(features):  # FeatureSet.from_dict is the model file's
            raise self.fail(None, "does not read back as declared (a field from_dict drops?)")
        return result

    def feature(self, i: int, item: Any) -> Feature:
        label = _label(item, i)
        line = self.lines.feature(i)
        if not isinstance(item, dict):
            raise self.fail(line, f"expected a table (an object) of fields, got {_kind(item)}",
                            feature=label)
        fields = _feature_fields()
        hints = typing.get_type_hints(Feature)
        allowed = [*fields, *(["window"] if "window_ms" in fields else [])]
        kwargs: dict[str, Any] = {}
        for key, value in item.items():
            where = self.lines.field(i, key)
            if key not in allowed:
                raise self.fail(where, "unknown field" + _suggest(key, allowed),
                                feature=label, field=key)
            if key == "window":
                if "window_ms" in item:
                    raise self.fail(where, "give window or window_ms, not both",
                                    feature=label, field=key)
                kwargs["window_ms"] = self.window(value, where, label)
                continue
            ok, converted = _convert(value, hints[key])
            if not ok:
                hint = f"expected {_describe(hints[key])}, got {_kind(value)}"
                if isinstance(value, str):
                    hint += _suggest(value, _literals(hints[key]))
                raise self.fail(where, hint, feature=label, field=key)
            kwargs[key] = converted
        for name, spec in fields.items():
            if _required(spec) and name not in kwargs:
                raise self.fail(line, "missing (every feature needs one)", feature=label,
                                field=name)
        try:
            return Feature(**kwargs)
        except (TxAnomalyError, TypeError, ValueError) as exc:
            field, message = _field_in(str(exc), list(fields),
                                       f"feature {kwargs.get('name')!r}: ")
            if field == "window_ms" and "window" in item:
                field = "window"
            if field is not None and isinstance(item.get(field), str):
                message += _suggest_value(item[field], message)
            where = self.lines.field(i, field) if field is not None else line
            raise self.fail(where, message, feature=label, field=field) from None

    def window(self, value: Any, line: int | None, label: str) -> int | None:
        if value is None:  # JSON's null: all history, as when there is no window
            return None
        if not isinstance(value, str):
            raise self.fail(line, f"expected a string such as '1h', '24h', '30d' or 'all', "
                                  f"got {_kind(value)}", feature=label, field="window")
        if value.strip().lower() == "all":
            return None
        try:
            return parse_window(value)
        except ValueError as exc:
            raise self.fail(line, str(exc), feature=label, field="window") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    name = {str: "a string", int: "an integer", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    return f"{value!r} ({name})" if not isinstance(value, list | dict) else name


def _field_in(message: str, fields: list[str], prefix: str) -> tuple[str | None, str]:
    """The field an error of ``Feature``/``FeatureSet`` is about (the first field name among
    its words), and the message without ``prefix`` (the name of what failed)."""
    if message.startswith(prefix):
        message = message[len(prefix):]
    for word in re.findall(r"[A-Za-z_]\w*", message.split("'")[0] + " " + message):
        if word in fields:
            return word, message
    return None, message


def _suggest_value(value: str, message: str) -> str:
    """A did-you-mean for a value that an error answered with a list of the allowed ones."""
    _, sep, choices = message.partition("one of")
    return _suggest(value, re.findall(r"'([^']*)'", choices)) if sep else ""


# --------------------------------------------------------------------------- writing
def feature_set_document(fs: FeatureSet) -> dict[str, Any]:
    """``fs`` as a file holds it: ``FeatureSet.to_dict``, with each feature's default fields
    left out and its window written readably."""
    data = fs.to_dict()
    defaults = {name: f.default for name, f in _feature_fields().items() if not _required(f)}
    features = []
    for feature in data["features"]:
        out: dict[str, Any] = {}
        for key, value in feature.items():
            if key in defaults and _same(value, defaults[key]):
                continue
            if key == "window_ms" and isinstance(value, int) and value % 1000 == 0:
                out["window"] = format_window(value)
            else:
                out[key] = value
        features.append(out)
    return {**{k: v for k, v in data.items() if k != "features" and v is not None},
            "features": features}


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    return value is default or (type(value) is type(default) and bool(value == default))


def dump_feature_set(fs: FeatureSet, fmt: Format) -> str:
    """``fs`` as the text of a ``json`` or ``toml`` file; :func:`parse_feature_set` reads it
    back equal to ``fs``."""
    document = feature_set_document(fs)
    if fmt == "json":
        return _dump_json(document)
    if fmt == "toml":
        return _dump_toml(document)
    raise TxAnomalyError(f"unknown feature-set format {fmt!r}; expected json or toml")


def _dump_json(document: dict[str, Any]) -> str:
    head = {k: v for k, v in document.items() if k != "features"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    features = [f"    {json.dumps(f, ensure_ascii=False)}" for f in document["features"]]
    return "{\n" + "\n".join(lines) + '\n  "features": [\n' + ",\n".join(features) + "\n  ]\n}\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(text, text)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise TxAnomalyError(f"cannot write {value!r} to TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _dump_toml(document: dict[str, Any]) -> str:
    out = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in document.items()
           if k != "features" and v is not None]
    for feature in document["features"]:
        out += ["", "[[features]]"]
        out += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in feature.items()
                if v is not None]
    return "\n".join(out) + "\n"

