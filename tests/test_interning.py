"""The chunked engine's id interner: exact, stable codes across calls (features/interning.py)."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from txanomaly.features.interning import MISSING, IdCodes, PairSlots


def reference(chunks: list[list[str | None]]) -> list[list[int]]:
    """Codes in order of first appearance, from a dictionary."""
    seen: dict[str, int] = {}
    return [[MISSING if v is None else seen.setdefault(v, len(seen)) for v in chunk]
            for chunk in chunks]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=40), max_size=6))
def test_codes_equal_a_dictionarys_across_chunks(chunks: list[list[str | None]]) -> None:
    codes = IdCodes()
    got = [codes(pl.Series(chunk, dtype=pl.String)).tolist() for chunk in chunks]
    assert got == reference(chunks)
    assert len(codes) == len({v for chunk in chunks for v in chunk if v is not None})


def test_many_ids_grow_the_table_and_arena_and_keep_their_codes() -> None:
    rng = np.random.default_rng(0)
    ids = [f"user-{i}-" + "x" * int(i % 50) for i in range(200_000)]
    chunks = [[ids[j] for j in rng.integers(0, len(ids), 30_000)] for _ in range(12)]
    codes = IdCodes()
    got = [codes(pl.Series(chunk)).tolist() for chunk in chunks]
    assert got == reference(chunks)


def test_sliced_numeric_unicode_and_empty_ids() -> None:
    frame = pl.DataFrame({"id": ["", "é", None, "日本", "", "a" * 1000, "é"]})
    codes = IdCodes()
    # A slice of a larger column: its Arrow buffers start at an offset.
    assert codes(frame.get_column("id").slice(3, 4)).tolist() == [0, 1, 2, 3]
    assert codes(frame.get_column("id")).tolist() == [1, 3, MISSING, 0, 1, 2, 3]
    assert codes(pl.Series([7, None, 7], dtype=pl.Int64)).tolist() == [4, MISSING, 4]
    assert codes(pl.Series(["7"])).tolist() == [4]  # the id's text decides, not its type
    assert codes(pl.Series([], dtype=pl.String)).tolist() == []
    assert codes(pl.Series([None, None], dtype=pl.String)).tolist() == [MISSING, MISSING]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.one_of(st.just(MISSING), st.integers(0, 5)),
                                   st.one_of(st.just(MISSING), st.integers(0, 2**32 - 2))),
                         max_size=40), max_size=6))
def test_pair_codes_equal_a_dictionarys_across_chunks(chunks: list[list[tuple[int, int]]]
                                                      ) -> None:
    pairs = PairSlots()
    seen: dict[tuple[int, int], int] = {}
    for chunk in chunks:
        first = np.array([p[0] for p in chunk], np.uint32)
        second = np.array([p[1] for p in chunk], np.uint32)
        want = [MISSING if MISSING in p else seen.setdefault(p, len(seen)) for p in chunk]
        assert pairs(first, second).tolist() == want
    assert pairs.count == len(seen)


def test_many_pairs_grow_the_table_and_keep_their_codes() -> None:
    rng = np.random.default_rng(1)
    pairs = PairSlots()
    seen: dict[tuple[int, int], int] = {}
    for _ in range(5):
        first, second = rng.integers(0, 3_000, (2, 20_000)).astype(np.uint32)
        want = [seen.setdefault(p, len(seen)) for p in zip(first.tolist(), second.tolist(),
                                                             strict=True)]
        assert pairs(first, second).tolist() == want
    assert len(pairs) == len(seen) > 1024
