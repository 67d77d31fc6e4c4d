"""Instance values as JSON: properties and their items, fixed and pattern matching, discriminator paths.

Fixed and pattern values follow elementdefinition.html (``fixed[x]``, ``pattern[x]``): a fixed value is matched
exactly (the instance's ``id`` and ``extension`` aside, which a fixed value does not speak about); a pattern is
contained in the instance: each property of the pattern is in the instance with a matching value, and each item of
a pattern array is matched by a different item of the instance array.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["Item", "as_list", "contains_pattern", "items_of", "matches_fixed", "step_values"]


@dataclass(frozen=True)
class Item:
    """One occurrence of an element: its JSON value (None when only ``_name`` is given) and ``_name`` part."""

    value: Any
    extra: dict[str, Any] | None
    index: int | None  # position in a JSON array, None for a single value
    type_code: str | None = None  # the type of a choice occurrence (``Quantity`` for ``valueQuantity``)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def items_of(obj: dict[str, Any], key: str, type_code: str | None = None) -> list[Item]:
    """The occurrences of property ``key`` of ``obj`` (with the ``_key`` primitive parts aligned)."""
    raw, extra = obj.get(key), obj.get("_" + key)
    if raw is None and extra is None:
        return []
    is_list = isinstance(raw, list) or isinstance(extra, list)
    values, extras = as_list(raw), as_list(extra)
    count = max(len(values), len(extras))
    return [
        Item(
            values[i] if i < len(values) else None,
            extras[i] if i < len(extras) and isinstance(extras[i], dict) else None,
            i if is_list else None,
            type_code,
        )
        for i in range(count)
    ]


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return Decimal(str(a)) == Decimal(str(b))
    return bool(a == b)


def matches_fixed(value: Any, fixed: Any) -> bool:
    """``value`` is exactly ``fixed`` (ignoring the instance's own ``id`` and ``extension``)."""
    if isinstance(fixed, dict):
        if not isinstance(value, dict):
            return False
        keys = {k for k in value if k not in ("id", "extension") or k in fixed}
        return keys == set(fixed) and all(matches_fixed(value[k], fixed[k]) for k in fixed)
    if isinstance(fixed, list):
        return (isinstance(value, list) and len(value) == len(fixed)
                and all(matches_fixed(v, f) for v, f in zip(value, fixed, strict=True)))
    return _same_scalar(value, fixed)


def contains_pattern(value: Any, pattern: Any) -> bool:
    """``value`` contains ``pattern``."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and contains_pattern(value[key], expected) for key, expected in pattern.items()
        )
    if isinstance(pattern, list):
        available = as_list(value)
        used: set[int] = set()
        for expected in pattern:
            match = next((i for i, v in enumerate(available) if i not in used and contains_pattern(v, expected)), None)
            if match is None:
                return False
            used.add(match)
        return True
    return not isinstance(value, (dict, list)) and _same_scalar(value, pattern)


def step_values(value: Any, step: str) -> Iterator[tuple[Any, str | None]]:
    """The values one step of a discriminator path reaches from ``value``: ``name``, ``extension('url')``."""
    if not isinstance(value, dict):
        return
    if step.startswith("extension(") and step.endswith(")"):
        url = step[len("extension("):-1].strip("'\"")
        for extension in as_list(value.get("extension")):
            if isinstance(extension, dict) and extension.get("url") == url:
                yield extension, "Extension"
        return
    if step in value:
        for item in as_list(value[step]):
            yield item, None
        return
    for key, item in value.items():  # a choice: ``value`` reaches ``valueQuantity``
        if key.startswith(step) and key[len(step):][:1].isupper():
            for entry in as_list(item):
                yield entry, key[len(step):]
