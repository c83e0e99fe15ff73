"""The committed samples in data/ are what the generator makes today, and data/README.md documents them."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from dedup.traces import generate, read_jsonl
from dedup.traces.generate import FRAME_COLUMNS

DATA = Path(__file__).resolve().parents[2] / "data"
README = (DATA / "README.md").read_text()


@pytest.mark.parametrize(("name", "source", "n"),
                         [("sample_genesys", "genesys", 500), ("sample_nice", "nice", 300)])
def test_committed_jsonl_samples_are_reproducible(name, source, n):
    trace = generate(n_events=n, source=source, seed=1, cache=False)
    loaded = read_jsonl(DATA / f"{name}.jsonl")
    assert list(loaded.envelopes()) == list(trace.envelopes())
    for column in ("arrival_ms", "logical_id", "kind", "original_arrival_ms"):
        assert loaded.frame[column].tolist() == trace.frame[column].tolist()


def test_committed_csv_sample_is_reproducible():
    trace = generate(n_events=300, source="mixed", seed=1, cache=False)
    committed = pd.read_csv(DATA / "sample_mixed.csv")
    expected = trace.table()
    assert list(committed.columns) == list(expected.columns)
    for column in ("arrival_ms", "logical_id", "envelope_id", "event_time_ms", "delay_s"):
        assert committed[column].tolist() == expected[column].tolist()


def test_readme_documents_every_column():
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", README, flags=re.MULTILINE))
    table_columns = set(pd.read_csv(DATA / "sample_mixed.csv", nrows=1).columns)
    truth_columns = set(pd.read_csv(DATA / "sample_genesys.truth.csv", nrows=1).columns)
    assert set(FRAME_COLUMNS) | table_columns | truth_columns <= documented


def test_readme_lists_every_committed_file():
    for path in DATA.iterdir():
        if path.name != "README.md":
            assert f"`{path.name}" in README
