"""Template filters for dashboard pages: JSON shown to people, percentages."""
from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre> block (autoescaped by the template like any string)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@register.filter
def compact_json(value: Any) -> str:
    """One-line JSON for a table cell; empty for an empty object."""
    if value in ({}, [], None, ""):
        return ""
    return json.dumps(value, separators=(", ", ": "), sort_keys=True, ensure_ascii=False, default=str)


@register.filter
def percent(fraction: float | None) -> str:
    """0..1 as a whole percentage: 0.427 -> "43%"."""
    if fraction is None:
        return ""
    return f"{round(min(max(float(fraction), 0.0), 1.0) * 100)}%"
