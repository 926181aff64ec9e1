"""hashkit.bench.time_search: a warm-up search, then repeated timed runs, reported as a median
and its spread."""

import numpy as np

from hashkit.bench import time_search


class CountingIndex:
    """Stands in for a faiss index: counts searches, returns fixed results."""

    def __init__(self):
        self.calls = 0

    def search(self, xq, k):
        self.calls += 1
        return np.zeros((len(xq), k), np.int32), np.full((len(xq), k), self.calls, np.int64)


def test_time_search_warms_up_then_reports_the_median_of_its_repeats():
    index = CountingIndex()
    xq = np.zeros((7, 4), np.uint8)
    timing, D, I = time_search(index, xq, 3, 1, min_seconds=0.0, repeats=4)
    assert index.calls == 1 + 4  # one warm-up, then one search per repeat
    assert timing["repeats"] == 4
    assert timing["qps_min"] <= timing["qps"] <= timing["qps_max"]
    assert D.shape == I.shape == (7, 3)
    assert I[0, 0] == index.calls  # the last search's result comes back


def test_time_search_repeats_short_searches_until_each_run_is_long_enough():
    index = CountingIndex()
    time_search(index, np.zeros((2, 4), np.uint8), 1, 1, min_seconds=0.01, repeats=2)
    assert index.calls > 1 + 2
