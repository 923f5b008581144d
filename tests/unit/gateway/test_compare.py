"""What compare computes: the hyperparameters that differ (and only those), and curves thinned to a chart's worth."""

from gateway.compare import side_by_side, thinned


def test_exactly_the_differing_keys_are_named_and_a_missing_key_differs():
    parameters, differences = side_by_side([{"a": 1, "b": 2, "c": None}, {"a": 1, "b": 3}, {"a": 1, "b": 2}])
    assert parameters == {"a": [1, 1, 1], "b": [2, 3, 2], "c": [None, None, None]}
    assert differences == ["b"]
    assert side_by_side([{"x": 1}, {"y": 1}])[1] == ["x", "y"]


def test_a_long_curve_is_thinned_evenly_keeping_its_ends():
    points = list(range(10_001))
    kept = thinned(points, 2000)
    assert len(kept) == 2000 and kept[0] == 0 and kept[-1] == 10_000
    assert max(b - a for a, b in zip(kept, kept[1:])) <= 6
    assert thinned(points[:5], 2000) == points[:5]
