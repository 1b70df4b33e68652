"""Text normalisation for word error rate: case, punctuation, ё/е, hyphens; numbers stay as written."""

from __future__ import annotations

import re


def normalize(text: str) -> str:
    text = text.lower().replace("ё", "е").replace("+", "")
    text = re.sub(r"[^\w\s']|_", " ", text)
    return re.sub(r"\s+", " ", text).strip()
