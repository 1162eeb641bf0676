"""What changed between two rubric versions (plain Python). Criteria are matched by dimension and release key number."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

FIELDS = ("description", "polarity", "weight")


@dataclass(frozen=True)
class CriterionChange:
    kind: str  # "added", "removed" or "changed"
    dimension: str
    key_number: int
    before: Mapping | None
    after: Mapping | None
    fields: tuple[str, ...]  # for "changed": which of description / polarity / weight differ


def diff_criteria(old: Iterable[Mapping], new: Iterable[Mapping]) -> list[CriterionChange]:
    """Changes from `old` to `new`, each criterion a mapping with dimension, key_number and FIELDS."""
    before = {(c["dimension"], c["key_number"]): c for c in old}
    after = {(c["dimension"], c["key_number"]): c for c in new}
    changes = []
    for key in sorted(before.keys() | after.keys(), key=lambda k: (_DIM_ORDER.get(k[0], 9), k[1])):
        a, b = before.get(key), after.get(key)
        if a is None:
            changes.append(CriterionChange("added", *key, None, b, FIELDS))
        elif b is None:
            changes.append(CriterionChange("removed", *key, a, None, FIELDS))
        else:
            differing = tuple(f for f in FIELDS if _differs(a[f], b[f]))
            if differing:
                changes.append(CriterionChange("changed", *key, a, b, differing))
    return changes


_DIM_ORDER = {"scientific": 0, "visual": 1, "instruction": 2}


def _differs(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) > 1e-9
    return a != b


def dimensions_with_unreachable_keys(criteria_by_dimension: Mapping[str, Iterable]) -> list[str]:
    """Dimensions whose criteria are not numbered 1..n in the release (e.g. d11, d22, ...).

    The published calculation matches the judge's i-th score to key number i+1, so such criteria are never scored:
    the dimension scores 0 whatever the judge says. The task page warns about it.
    """
    flagged = []
    for dimension, criteria in criteria_by_dimension.items():
        numbers = sorted(c.key_number for c in criteria)
        if numbers and numbers != list(range(1, len(numbers) + 1)):
            flagged.append(dimension)
    return flagged
