"""MicroWorldBench scoring, exactly as the published numbers were computed.

Plain Python on purpose (no Django import), so the importer, the views and offline checks share one calculation.

The reference is ``eval/calculate_scores.py`` of the public repository FreedomIntelligence/MicroVerse
(functions ``_calculate_dimension_score``, ``_normalise``, ``_aggregate_model``). Its rules, reproduced here:

* per task and dimension ``S = sum(score_i * s_i * w_i)`` and ``S_norm = max(0, S / sum(w+)) * 100``, where ``sum(w+)``
  adds the weights of the positive criteria only; a denominator ``<= 0`` gives ``0.0`` (not "no score");
* the task's overall score normalises the three dimensions pooled (raw sums and positive-weight sums added up);
* the calculation walks the judge's score list, not the criteria: entry ``i`` belongs to the criterion whose release key
  number is ``i + 1`` (``d1/s1/w1`` -> 1). Entries matching no criterion are ignored; criteria no entry reaches count
  in neither the sum nor the denominator; only an entry ``== 1`` (Python equality, so ``True`` and ``1.0`` count too)
  adds its signed weight, while every reached positive criterion adds its weight to the denominator;
* a task is left out when any dimension has no score list or an empty one; model averages are plain means over the
  tasks left in; level averages group them by the task's level.

Consequence of the key-number rule worth knowing: 55 tasks of the release number one dimension's criteria
``11, 22, 33, 44, 55`` (instruction in 50 tasks, scientific in tasks 60, 325, 330 and 453, visual in task 319).
A normal 5-entry score list reaches none of them, so the published calculation scores that dimension 0 and pools
the task's overall score from the other two dimensions only. We reproduce that (``Criterion.key_number`` carries
the number) and report it as a problem, so it is visible rather than silent. (The published judge prompt in
``eval/video_evaluator.py`` lists only key numbers 1-9, so the judge never saw those criteria either.)

Nothing here rounds: callers round for display (the paper shows one decimal).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

DIMENSIONS = ("scientific", "visual", "instruction")
LEVELS = ("Organ-level", "Cellular-level", "Subcellular-level")


@dataclass(frozen=True)
class Criterion:
    """One rubric criterion. ``polarity`` is +1 (bonus) or -1 (penalty); ``weight`` is >= 0.

    ``key_number`` is the release's key number (``d7/s7/w7`` -> 7). The published walk matches score entry ``i`` to
    key number ``i + 1``; when it is ``None`` the criterion's 1-based position in its dimension stands in for it.
    """

    polarity: int
    weight: float
    key_number: int | None = None


def parse_weight(value: object) -> float:
    """A criterion weight from the release: ``"1.0"``, ``"1."``, ``"2"``, ``1.0`` or ``1``; finite and >= 0.

    Raises ``ValueError`` for anything else (bools, ``None``, NaN, infinities, negatives, non-numeric text).
    """
    # bool is an int subclass; True as a weight is a data error, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"weight must be a number or numeric string, got {value!r}")
    try:
        weight = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"weight is not a number: {value!r}") from None
    if not math.isfinite(weight):
        raise ValueError(f"weight must be finite, got {value!r}")
    if weight < 0:
        raise ValueError(f"weight must not be negative, got {value!r}")
    return weight + 0.0  # turns "-0.0" into 0.0


def parse_polarity(value: object) -> int:
    """A criterion polarity: ``"+1"``, ``"1"`` or ``1`` -> 1; ``"-1"`` or ``-1`` -> -1. Anything else: ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"polarity must be +1 or -1, got {value!r}")
    if isinstance(value, int) and value in (1, -1):
        return value
    if isinstance(value, str) and value.strip() in ("+1", "1", "-1"):
        return -1 if value.strip() == "-1" else 1
    raise ValueError(f"polarity must be +1 or -1, got {value!r}")


def _numbered(criteria: Sequence[Criterion]) -> dict[int, Criterion]:
    """Criteria keyed by the number the score walk looks up (key number, else 1-based position)."""
    by_number: dict[int, Criterion] = {}
    for position, criterion in enumerate(criteria, start=1):
        number = criterion.key_number if criterion.key_number is not None else position
        if number in by_number:
            raise ValueError(f"two criteria share the number {number}")
        by_number[number] = criterion
    return by_number


def _is_score_list(scores: object) -> bool:
    # JSON gives lists; tuples are accepted for callers building judgements by hand. Strings are sequences too,
    # but a string of scores is not a score list.
    return isinstance(scores, (list, tuple))


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def judgement_problems(criteria: Sequence[Criterion], scores: object) -> list[str]:
    """Why a judge's score list for one dimension is not well formed; an empty list means it is.

    Well formed: a list with exactly one entry per criterion, each the integer 0 or 1 (``True``/``1.0`` are counted
    as 1 by the published walk but are not well formed), and criteria numbered 1..n so every entry reaches one.
    """
    if scores is None:
        return ["no score list"]
    if not _is_score_list(scores):
        return [f"scores is a {type(scores).__name__}, not a list"]
    if len(scores) == 0:
        return ["empty score list"]

    problems: list[str] = []
    n_scores, n_criteria = len(scores), len(criteria)
    if n_scores != n_criteria:
        problems.append(
            f"{_plural(n_scores, 'score', 'scores')} for {_plural(n_criteria, 'criterion', 'criteria')}"
        )
    numbers = sorted(_numbered(criteria))
    if numbers != list(range(1, n_criteria + 1)):
        # A rubric numbering problem rather than the judge's fault, but it changes the score just the same.
        message = f"criteria numbered {', '.join(map(str, numbers))}, not 1-{n_criteria}"
        unreached = [n for n in numbers if not 1 <= n <= n_scores]
        if unreached:
            message += f"; no score entry reaches {', '.join(map(str, unreached))}"
        problems.append(message)
    for position, entry in enumerate(scores, start=1):
        if isinstance(entry, bool):
            problems.append(f"score {entry!r} is a bool, not 0/1 (entry {position}, counted as {int(entry)})")
        elif not (isinstance(entry, int) and entry in (0, 1)):
            counted = 1 if entry == 1 else 0
            problems.append(f"score {entry!r} is not 0/1 (entry {position}, counted as {counted})")
    return problems


def normalise(raw: float, positive_weight: float) -> float:
    """``max(0, raw / positive_weight) * 100``; 0.0 when there is no positive weight (the published choice).

    Written ``raw / positive_weight * 100`` in that order so floats match the published script bit for bit.
    """
    if positive_weight <= 0:
        return 0.0
    return max(0.0, raw / positive_weight * 100)


@dataclass(frozen=True)
class DimensionResult:
    """``raw`` = signed weighted sum, ``positive_weight`` = denominator; ``score`` is None when left out."""

    raw: float
    positive_weight: float
    score: float | None
    problems: tuple[str, ...]


def score_dimension(criteria: Sequence[Criterion], scores: object) -> DimensionResult:
    """Score one dimension of one task by walking ``scores`` the published way (see the module docstring).

    ``scores`` that are missing, empty or not a list leave the dimension out (``score=None``, raw and denominator 0).
    The published script would walk a non-empty string character by character and crash on a number; both are
    treated as "left out" here, which is the only sane reading and never occurs in a well-formed file.
    """
    problems = tuple(judgement_problems(criteria, scores))
    if not _is_score_list(scores) or len(scores) == 0:
        return DimensionResult(raw=0.0, positive_weight=0.0, score=None, problems=problems)

    by_number = _numbered(criteria)
    raw = 0.0
    positive_weight = 0.0
    for i, entry in enumerate(scores):
        criterion = by_number.get(i + 1)
        if criterion is None:  # past the last criterion, or a gap in the numbering: ignored
            continue
        if entry == 1:  # Python equality, as published: True and 1.0 count, "1" and 2 do not
            raw += criterion.polarity * criterion.weight
        if criterion.polarity > 0:  # reached positive criteria form the denominator whatever their entry
            positive_weight += criterion.weight
    return DimensionResult(raw=raw, positive_weight=positive_weight, score=normalise(raw, positive_weight),
                           problems=problems)


@dataclass(frozen=True)
class TaskResult:
    """One task's scores for one model. ``overall`` is None unless ``included``; ``malformed`` lists problems as
    ``"<dimension>: <problem>"``."""

    index: int
    level: str
    overall: float | None
    dimensions: dict[str, float | None]
    malformed: tuple[str, ...]
    included: bool


def score_task(
    *,
    index: int,
    level: str,
    rubric: Mapping[str, Sequence[Criterion]],
    judgement: Mapping[str, object],
) -> TaskResult:
    """Score one task. ``rubric`` and ``judgement`` map each of ``DIMENSIONS`` to criteria / a score list.

    A dimension absent from ``rubric`` has no criteria (it scores 0.0 if judged, as published). Every dimension is
    scored even when another one is missing, so the per-dimension view and the problem list stay complete; the task
    is ``included`` (and gets an ``overall``) only when all three have a non-empty score list.
    """
    results = {dim: score_dimension(rubric.get(dim, ()), judgement.get(dim)) for dim in DIMENSIONS}
    included = all(r.score is not None for r in results.values())
    overall = None
    if included:
        # Pooled in DIMENSIONS order starting from 0.0, as the published loop accumulates them.
        raw = 0.0
        positive_weight = 0.0
        for r in results.values():
            raw += r.raw
            positive_weight += r.positive_weight
        overall = normalise(raw, positive_weight)
    malformed = tuple(f"{dim}: {problem}" for dim, r in results.items() for problem in r.problems)
    return TaskResult(
        index=index,
        level=level,
        overall=overall,
        dimensions={dim: r.score for dim, r in results.items()},
        malformed=malformed,
        included=included,
    )


@dataclass(frozen=True)
class ModelSummary:
    """A model's leaderboard row. Averages are None when no included task contributes (the script printed 0.0)."""

    valid_tasks: int
    average: float | None
    levels: dict[str, float | None]
    dimensions: dict[str, float | None]
    malformed_tasks: list[int]


def _mean(values: list[float]) -> float | None:
    # sum()/len() over the tasks in the order given, like the published _avg.
    return sum(values) / len(values) if values else None


def summarise_model(results: Iterable[TaskResult]) -> ModelSummary:
    """Plain means over the included tasks; a task whose level is not one of ``LEVELS`` counts in the average and the
    dimension means but in no level (as published). ``malformed_tasks``: sorted indices of every task with a problem,
    included or not."""
    totals: list[float] = []
    by_level: dict[str, list[float]] = {level: [] for level in LEVELS}
    by_dimension: dict[str, list[float]] = {dim: [] for dim in DIMENSIONS}
    malformed: set[int] = set()
    for result in results:
        if result.malformed:
            malformed.add(result.index)
        if not result.included or result.overall is None:
            continue
        totals.append(result.overall)
        if result.level in by_level:
            by_level[result.level].append(result.overall)
        for dim in DIMENSIONS:
            by_dimension[dim].append(result.dimensions[dim])
    return ModelSummary(
        valid_tasks=len(totals),
        average=_mean(totals),
        levels={level: _mean(values) for level, values in by_level.items()},
        dimensions={dim: _mean(values) for dim, values in by_dimension.items()},
        malformed_tasks=sorted(malformed),
    )


_RELEASE_KEY = re.compile(r"([dsw])(\d+)")


def rubric_from_release_entry(entry: Mapping) -> dict[str, list[Criterion]]:
    """The criteria of one task of ``MWBenchRubrics(_norm).json``, per dimension, ordered by key number.

    Each ``rubrics_<dimension>`` is a flat dict ``d<n>, s<n>, w<n>``; numbers may be 1..5 or 11, 22, ... and are
    sorted numerically (``d11`` before ``d22``, ``d2`` before ``d10``). The number is kept as ``key_number`` because the
    published walk matches on it. Raises ``ValueError`` for a missing dimension, an unknown key, or a number without
    both ``s`` and ``w``.
    """
    rubric: dict[str, list[Criterion]] = {}
    for dim in DIMENSIONS:
        flat = entry.get(f"rubrics_{dim}")
        if not isinstance(flat, Mapping):
            raise ValueError(f"task {entry.get('index')!r}: rubrics_{dim} is missing or not an object")
        fields: dict[int, dict[str, object]] = {}
        for key, value in flat.items():
            match = _RELEASE_KEY.fullmatch(str(key))
            if match is None:
                raise ValueError(f"task {entry.get('index')!r}: unexpected key {key!r} in rubrics_{dim}")
            fields.setdefault(int(match.group(2)), {})[match.group(1)] = value
        criteria = []
        for number in sorted(fields):
            parts = fields[number]
            if "s" not in parts or "w" not in parts:
                raise ValueError(f"task {entry.get('index')!r}: rubrics_{dim} criterion {number} lacks s or w")
            criteria.append(
                Criterion(polarity=parse_polarity(parts["s"]), weight=parse_weight(parts["w"]), key_number=number)
            )
        rubric[dim] = criteria
    return rubric
