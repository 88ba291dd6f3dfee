"""The pixel's validation on the hot path (service.pixel_fields) is PixelBeacon's, exactly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.service import pixel_fields
from schemas.events import PixelBeacon

NAMES = ["s", "e", "u", "r", "uid", "em", "did", "cat", "pid", "rev", "cur", "cmp", "ts"]
NAMES += ["aid", "cs", "c", "sig", "S"]
# Near the edges of every rule: lengths, patterns, number forms, ranges, case, whitespace.
EDGES = ["shop", "page_view", "EUR", "eur", "", "a" * 64, "a" * 65, "x" * 256, "x" * 257]
EDGES += ["x" * 4097, "é" * 257, "9.5", "007", "1e10", " 1", "nan", "1_0", "１", "1764000000000"]
EDGES += ["946684799999", "4102444800001", "1764000000000.0", "shop\n", "Analytics,ADS", "\u212a"]

values = st.text(max_size=12) | st.sampled_from(EDGES)


def reference(params: dict[str, str]) -> dict[str, Any] | list[Any]:
    """The model's fields, or its errors."""
    try:
        return PixelBeacon.model_validate(params).model_dump()
    except ValidationError as exc:
        return exc.errors()


@given(st.dictionaries(st.sampled_from(NAMES), values, max_size=8))
@example({"s": "shop", "e": "page_view", "u": "https://shop.example/", "ts": "1763900000001"})
@example({"s": "shop", "rev": "49.90", "cur": "EUR", "cs": "Analytics", "k": "v"})
def test_pixel_fields_are_the_models_dump_or_its_errors(params: dict[str, str]) -> None:
    expected = reference(params)
    if isinstance(expected, list):
        with pytest.raises(ValidationError) as raised:
            pixel_fields(params)
        assert raised.value.errors() == expected
    else:
        assert pixel_fields(params) == expected
        assert list(pixel_fields(params)) == list(expected)
