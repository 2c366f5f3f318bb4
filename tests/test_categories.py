import pytest

from doodle.categories import InvalidCategoryError, normalize_category


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cat", "cat"), ("Smiley Face", "smiley_face"), ("hot-air  balloon", "hot_air_balloon"), ("  X1 ", "x1")],
)
def test_normalize_category_spells_names_one_way(name, expected):
    assert normalize_category(name) == expected


@pytest.mark.parametrize(
    "name",
    ["", "../etc", "a/b", "..", "cat\x00", "ca\u0074\u0301", "кот", "a" * 65, "---", "   ", "cat.png", "~root"],
)
def test_normalize_category_rejects_bad_names(name):
    with pytest.raises(InvalidCategoryError):
        normalize_category(name)
