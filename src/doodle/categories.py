"""Category names: the one rule for what a label may be and how it is spelled."""

import re

MAX_CATEGORY_CHARS = 64
_ALLOWED = re.compile(rf"[A-Za-z0-9 _-]{{1,{MAX_CATEGORY_CHARS}}}")
_SEPARATORS = re.compile(r"[ _-]+")


class InvalidCategoryError(ValueError):
    """The category name breaks the naming rule; the message says how."""


def normalize_category(name: str) -> str:
    """'Smiley Face' -> 'smiley_face'. Raises InvalidCategoryError for anything else.

    Allowed: 1-64 ASCII letters, digits, spaces, '_' or '-', with at least one
    letter or digit. The result is lower case with '_' between words, so it is
    always a safe single path component.
    """
    if not isinstance(name, str) or not _ALLOWED.fullmatch(name):
        raise InvalidCategoryError(
            f"category must be 1-{MAX_CATEGORY_CHARS} characters of letters, digits, space, '_' or '-'"
        )
    normalized = _SEPARATORS.sub("_", name.strip().lower()).strip("_")
    if not normalized:
        raise InvalidCategoryError("category must contain a letter or digit")
    return normalized
