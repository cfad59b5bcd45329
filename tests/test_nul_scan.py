"""The compiled NUL search finds exactly the values Polars' search finds, in strings held in
the view (up to 12 bytes) or in a data buffer, in slices and in frames of several chunks."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from txanomaly.io.nul_scan import nul_rows


def _polars(frame: pl.DataFrame) -> list[bool]:
    return frame.select(pl.any_horizontal(
        [pl.col(c).cast(pl.String).cast(pl.Binary).bin.contains(b"\x00").fill_null(False)
         for c in frame.columns])).to_series().to_list()


def _compiled(frame: pl.DataFrame) -> list[bool]:
    return frame.select(nul_rows(list(frame.columns))).to_series().to_list()


_VALUE = st.none() | st.text(st.sampled_from("a\x00é"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(a=st.lists(_VALUE, min_size=1, max_size=40), b=st.lists(_VALUE, min_size=1, max_size=40),
       cut=st.integers(0, 40))
def test_the_rows_with_a_nul_are_those_polars_finds(a, b, cut):
    n = min(len(a), len(b))
    frame = pl.DataFrame({"a": a[:n], "b": b[:n]}, schema={"a": pl.String, "b": pl.String})
    assert _compiled(frame) == _polars(frame)
    tail = frame.slice(min(cut, n))  # a view with an offset
    assert _compiled(tail) == _polars(tail)
    chunked = pl.concat([frame, tail], rechunk=False)  # several chunks
    assert chunked.n_chunks() >= 1
    assert _compiled(chunked) == _polars(chunked)


def test_every_position_of_a_nul_is_found():
    values = []
    for length in range(1, 40):
        for at in range(length):
            values.append("x" * at + "\x00" + "y" * (length - at - 1))
        values.append("z" * length)
    frame = pl.DataFrame({"s": values})
    assert _compiled(frame) == [("\x00" in v) for v in values]


def test_a_column_of_another_type_and_no_column():
    frame = pl.DataFrame({"n": [1, 2], "s": ["a", "b\x00"]})
    assert frame.select(nul_rows([pl.col("n").cast(pl.String), "s"])).to_series().to_list() \
        == [False, True]
    assert frame.select(nul_rows([])).to_series().to_list() == [False]
