"""Fixtures of the fuzz suite: the inputs sent, counted and printed at the end of each test module."""

from __future__ import annotations

import time

import pytest

from tests.fuzz.harness.server import COUNTS


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    start = time.perf_counter()
    yield
    if COUNTS:
        print(f"\nfuzz inputs: {dict(COUNTS)} in {time.perf_counter() - start:.1f} s")
