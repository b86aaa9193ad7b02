"""The Prometheus text format as bascule writes it, read back by prometheus_client's parser (a test-only
dependency) and checked line by line where the format is exact (escaping, bucket order, numbers)."""

from __future__ import annotations

import math

import pytest

from bascule.ops import exposition as ex

parser = pytest.importorskip("prometheus_client.parser")


def test_counter_and_gauge_lines() -> None:
    text = ex.render([
        ex.counter("x_total", "Things.", [((("a", "1"), ("b", "two")), 3)]),
        ex.gauge("y", "Now.", [((), 2.5)]),
    ]).decode()
    assert text == ('# HELP x_total Things.\n# TYPE x_total counter\nx_total{a="1",b="two"} 3\n'
                    '# HELP y Now.\n# TYPE y gauge\ny 2.5\n')


def test_escaping_reads_back() -> None:
    nasty = 'a"b\\c\nd'
    text = ex.render([ex.counter("x_total", "Help with \\ and\nnewline.", [((("path", nasty),), 1)])]).decode()
    assert 'path="a\\"b\\\\c\\nd"' in text
    assert "# HELP x_total Help with \\\\ and\\nnewline.\n" in text
    (family,) = parser.text_string_to_metric_families(text)
    assert family.documentation == "Help with \\ and\nnewline."
    (sample,) = family.samples
    assert sample.labels == {"path": nasty}
    assert sample.value == 1


def test_histogram_is_cumulative_and_ends_with_inf() -> None:
    family = ex.histogram("d_seconds", "Durations.", (0.1, 1.0), [2, 3, 1], 4.25)
    text = ex.render([family]).decode()
    assert text.splitlines()[2:] == [
        'd_seconds_bucket{le="0.1"} 2',
        'd_seconds_bucket{le="1.0"} 5',
        'd_seconds_bucket{le="+Inf"} 6',
        "d_seconds_sum 4.25",
        "d_seconds_count 6",
    ]
    (parsed,) = parser.text_string_to_metric_families(text)
    assert parsed.type == "histogram"
    values = {(s.name, s.labels.get("le")): s.value for s in parsed.samples}
    assert values[("d_seconds_bucket", "+Inf")] == values[("d_seconds_count", None)] == 6
    assert values[("d_seconds_sum", None)] == 4.25


def test_histogram_with_labels_keeps_le_last() -> None:
    text = ex.render([ex.histogram("h", "H.", (1.0,), [0, 0], 0.0, (("route", "/"),))]).decode()
    assert 'h_bucket{route="/",le="1.0"} 0' in text
    assert 'h_count{route="/"} 0' in text


@pytest.mark.parametrize(("value", "text"), [(0, "0"), (7, "7"), (2 ** 60, str(2 ** 60)), (1.5, "1.5"),
                                             (3.0, "3"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
                                             (math.nan, "NaN"), (1e-9, "1e-09")])
def test_numbers(value: float, text: str) -> None:
    assert ex.number(value) == text


def test_le_spelling_matches_prometheus_client() -> None:
    from prometheus_client.utils import floatToGoString

    for bound in (0.005, 0.01, 0.1, 1.0, 2.5, 10.0, 100.0, math.inf):
        assert ex.go_float(bound) == floatToGoString(bound)


def test_family_without_samples_is_valid() -> None:
    text = ex.render([ex.counter("empty_total", "Nothing yet.")]).decode()
    assert text == "# HELP empty_total Nothing yet.\n# TYPE empty_total counter\n"
    (family,) = parser.text_string_to_metric_families(text)
    assert family.samples == []


@pytest.mark.parametrize("name", ["1abc", "a-b", "", "a b"])
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(ValueError):
        ex.counter(name, "x")


def test_bad_label_names_refused() -> None:
    with pytest.raises(ValueError):
        ex.counter("x_total", "x", [((("__name__", "y"),), 1)])
    with pytest.raises(ValueError):
        ex.counter("x_total", "x", [((("a-b", "y"),), 1)])


def test_histogram_shape_checked() -> None:
    with pytest.raises(ValueError):
        ex.histogram("h", "h", (1.0, 2.0), [1, 2], 0.0)
    with pytest.raises(ValueError):
        ex.histogram("h", "h", (2.0, 1.0), [1, 2, 3], 0.0)


def test_duplicate_family_refused() -> None:
    with pytest.raises(ValueError):
        ex.render([ex.gauge("g", "g"), ex.gauge("g", "g")])


def test_empty_render() -> None:
    assert ex.render([]) == b""
