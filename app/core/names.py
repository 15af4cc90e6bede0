"""Names people give models and datasets. A name becomes part of file names (a download's
``Content-Disposition``, the certificate's subject), so it may hold no path separators, no
``..``, no quotes and no control characters."""

from __future__ import annotations

import re

_SAFE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 _.+-]{0,198}[A-Za-z0-9_+-])?")
RULE = "1-200 of letters, digits, space and . _ + -, starting with a letter or digit, no '..'"


def unsafe_name_reason(name: str) -> str | None:
    """None for a usable name, else what is wrong with it.

    >>> unsafe_name_reason("digits-cnn v2") is None
    True
    >>> unsafe_name_reason("../../x").startswith("a name is 1-200 of letters")
    True
    """
    if _SAFE.fullmatch(name) is None or ".." in name:
        return f"a name is {RULE}"
    return None
