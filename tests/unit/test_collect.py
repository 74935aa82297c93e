"""carviz.data.collect: the Collect form's text -> ClassRequests / engine options / spec, pagination, thumbnails."""

from __future__ import annotations

import pytest
from PIL import Image

from carviz.data.collect import (
    build_spec, class_lines, dataset_name, page_count, paginate, parse_class_line, parse_class_lines,
    parse_engine_options, thumbnail,
)


def test_class_lines_round_trip_and_errors() -> None:
    text = "# comment\nsedan: sedan car; sedan side view \n\n세단\n"
    classes = parse_class_lines(text, 7)
    assert [(c.name, c.queries, c.target) for c in classes] == [
        ("sedan", ("sedan car", "sedan side view"), 7), ("세단", ("세단",), 7)]
    spec = build_spec(classes, "bing", {"ignored": "for bing"})
    assert spec.engine_options == {} and parse_class_lines(class_lines(spec), 7) == classes
    for bad, message in ((": q", "name is missing"), ("a: ;", "at least one search query"), ("", "at least one class"),
                         ("a: x\na: y", "line 2"), ("../x: q", "path separator"), (".hidden: q", "dot")):
        with pytest.raises(ValueError, match=message):
            parse_class_lines(bad, 5)
    assert parse_class_line("suv=suv car;jeep", 3, separator="=").queries == ("suv car", "jeep")
    with pytest.raises(ValueError):
        dataset_name("  ")


def test_engine_options_and_generic_spec() -> None:
    options = parse_engine_options(["search_url_template=http://127.0.0.1:1/s?q={query}", "thumb_selector=img",
                                    "thumb_attributes=data-src, src", "consent_selector="])
    assert options["thumb_attributes"] == ["data-src", "src"] and "consent_selector" not in options
    assert build_spec(parse_class_lines("a", 2), "generic", options).make_engine().thumb_selector == "img"
    with pytest.raises(ValueError, match="key=value"):
        parse_engine_options(["oops"])
    with pytest.raises(ValueError, match="needs thumb_selector"):
        build_spec(parse_class_lines("a", 2), "generic", {"search_url_template": "http://127.0.0.1/?q={query}"})


def test_paginate_and_thumbnail(tmp_path) -> None:
    assert page_count(0, 24) == 1 and page_count(49, 24) == 3
    assert paginate(list(range(30)), 2, 24) == list(range(24, 30)) and paginate([1, 2], 9, 24) == [1, 2]
    Image.new("RGB", (640, 320), "red").save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"nope")
    with Image.open(__import__("io").BytesIO(thumbnail(tmp_path / "a.jpg", 100))) as small:
        assert small.size == (100, 50)
    assert thumbnail(tmp_path / "b.jpg") is None
