"""Field paths: the JSONPath subset (keys, indices, [*], quoted keys), its errors and reasons."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.fieldpath import WILDCARD, FieldNotFound, FieldPath, FieldPathError

ORDER: dict[str, Any] = {
    "order_id": "A17",
    "note": "left at the door",
    "lines": [{"sku": "X1", "qty": 2}, {"sku": "Y9", "qty": 1}],
    "meta": {"tags": ["gift", "fragile"], "odd key": True, "a-b_c": 3},
    "inputs": ["first", "second"],
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.note", "left at the door"),
        ("note", "left at the door"),
        (".note", "left at the door"),
        ("$.lines[0].sku", "X1"),
        ("$.lines[-1].qty", 1),
        ("$.meta.tags[1]", "fragile"),
        ("$['meta']['odd key']", True),
        ('$.meta["odd key"]', True),
        ("$.meta.a-b_c", 3),
    ],
)
def test_get_follows_keys_and_indices(path: str, expected: Any) -> None:
    assert FieldPath.parse(path).get(ORDER) == expected


def test_the_root_path_is_the_whole_document() -> None:
    assert FieldPath.parse("$").get("a bare JSON string") == "a bare JSON string"
    assert FieldPath.parse("$").steps == ()


def test_wildcard_matches_every_element_in_order() -> None:
    assert FieldPath.parse("$.inputs[*]").find(ORDER) == ["first", "second"]
    assert FieldPath.parse("$.lines[*].sku").find(ORDER) == ["X1", "Y9"]
    path = FieldPath.parse("$.lines[*].qty")
    assert path.has_wildcard
    assert WILDCARD in path.steps
    with pytest.raises(ValueError, match="several values"):
        path.get(ORDER)


def test_key_path_takes_any_column_name_literally() -> None:
    path = FieldPath.key("odd key")
    assert path.text == "$['odd key']"
    assert path.get({"odd key": 1}) == 1
    assert FieldPath.key("$.not.a.path").get({"$.not.a.path": 2}) == 2


@pytest.mark.parametrize(
    ("path", "document", "reason"),
    [
        ("$.missing", ORDER, "$ has no key 'missing'"),
        ("$.lines[5]", ORDER, "$.lines has 2 element(s), no index 5"),
        ("$.note[0]", ORDER, "$.note is a string, not a list"),
        ("$.lines.sku", ORDER, "$.lines is a list, not an object"),
        ("$.lines[*].price", ORDER, "$.lines[0] has no key 'price'"),
        ("$.inputs[*]", {"inputs": []}, "$.inputs is an empty list"),
        ("$.inputs[*]", {"inputs": None}, "$.inputs is null, not a list"),
        ("$.a", "text", "$ is a string, not an object"),
        ("$['odd key'].x", {"odd key": 3}, "$['odd key'] is a number, not an object"),
    ],
)
def test_a_path_matching_nothing_says_where_it_stopped(
    path: str, document: Any, reason: str
) -> None:
    with pytest.raises(FieldNotFound) as caught:
        FieldPath.parse(path).find(document)
    assert caught.value.reason == reason
    assert str(caught.value) == f"{FieldPath.parse(path).text} matches nothing: {reason}"


def test_an_index_never_matches_an_object_nor_a_key_a_list() -> None:
    with pytest.raises(FieldNotFound):
        FieldPath.parse("$[0]").get({"0": "a key, not an index"})
    with pytest.raises(FieldNotFound):
        FieldPath.parse("$['0']").get(["a list"])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("$.", "expected a name (letters, digits, _ or -) at character 3, found the end"),
        ("$..a", "expected a name (letters, digits, _ or -) at character 3, found '.'"),
        ("$.a b", "expected '.' or '[' at character 4, found ' '"),
        ("$[x]", "expected an index, '*' or a quoted key at character 3, found 'x'"),
        ("$[1", "expected ']' at character 4, found the end"),
        ('$["a]', 'expected a closing " at character 6, found the end'),
        ("$['a'x", "expected ']' at character 6, found 'x'"),
        ("", "expected a name"),
    ],
)
def test_malformed_paths_are_refused_naming_the_character(path: str, message: str) -> None:
    with pytest.raises(FieldPathError, match="bad field path") as caught:
        FieldPath.parse(path)
    assert message in str(caught.value)


_keys = st.text(st.characters(codec="utf-8", exclude_characters="\\"), min_size=1, max_size=8)


@given(st.lists(st.one_of(_keys, st.integers(-3, 3)), min_size=1, max_size=5), st.integers())
def test_any_quoted_key_and_index_path_finds_the_value_placed_there(
    steps: list[str | int], value: int
) -> None:
    document: Any = value
    for step in reversed(steps):  # build the document the path leads into
        if isinstance(step, int):
            size = step + 1 if step >= 0 else -step
            items: list[Any] = [None] * size
            items[step] = document
            document = items
        else:
            document = {step: document}
    quote = [f"[{s}]" if isinstance(s, int) else f"[{_quoted(s)}]" for s in steps]
    path = FieldPath.parse("$" + "".join(quote))
    assert path.steps == tuple(steps)
    assert path.get(document) == value


def _quoted(key: str) -> str:
    quote = '"' if "'" in key else "'"
    return quote + key.replace(quote, "\\" + quote) + quote
