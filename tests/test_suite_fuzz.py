"""Fuzzing the suite reader: any line gives a layout or an InputError, nothing else, and quickly."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eligen_bench.errors import InputError
from eligen_bench.layout import Layout
from eligen_bench.suite import Suite, read_suite, validate_suite_file

FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
# Layout-shaped objects reach the deeper checks (entities, boxes, masks) that random JSON rarely does.
rle = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=300), max_size=12)
masks = st.fixed_dictionaries({"size": st.lists(st.integers(-2, 70), max_size=3) | json_values,
                               "counts": rle | json_values})
entities = st.fixed_dictionaries(
    {"prompt": st.text(max_size=12) | json_values,
     "bbox": st.lists(st.floats(-0.5, 1.5) | st.integers(-1, 2), max_size=5) | json_values},
    optional={"mask": masks | json_values, "category": st.text(max_size=8) | json_values},
)
layouts = st.fixed_dictionaries(
    {"id": st.text(max_size=12) | st.from_regex(r"[a-z0-9]{1,8}\n?", fullmatch=True) | json_values,
     "prompt": st.text(max_size=20) | json_values},
    optional={"width": st.integers(-10, 9000) | json_values, "height": st.integers(-10, 9000) | json_values,
              "entities": st.lists(entities | json_values, max_size=4) | json_values,
              "source": st.text(max_size=8) | json_values, "init_image": st.text(max_size=8) | json_values},
)
headers = st.fixed_dictionaries({"suite": st.text(max_size=10) | json_values},
                                optional={"version": json_values, "notes": json_values, "description": json_values,
                                          "format": json_values, "hash": json_values, "count": json_values})


def read_lines(*lines: str) -> Suite | None:
    """Read a file of these lines: the suite, or None when it raised an InputError (anything else fails)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        try:
            suite = read_suite(path)
        except InputError as exc:
            assert "\n" not in str(exc) and "fuzz.jsonl" in str(exc)
            return None
        _, problems = validate_suite_file(path)
        assert not problems
        return suite


@FUZZ
@given(json_values | layouts)
def test_any_json_line_is_a_layout_or_an_input_error(value) -> None:
    suite = read_lines(json.dumps(value, ensure_ascii=False))
    if suite is not None:
        (layout,) = suite.layouts
        assert isinstance(layout, Layout) and Layout.from_dict(layout.to_dict()) == layout


@FUZZ
@given(headers, layouts)
def test_any_header_is_read_or_an_input_error(header, layout) -> None:
    read_lines(json.dumps(header), json.dumps(layout))


@FUZZ
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_arbitrary_text_is_a_layout_or_an_input_error(text) -> None:
    read_lines(text)


def test_pathological_nesting_is_quick() -> None:
    for text in ("[" * 200_000, "{\"a\":" * 200_000, "[" * 500 + "]" * 500):
        assert read_lines(text) is None
