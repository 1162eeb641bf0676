"""Majority aggregation of expert rubric revisions.

Why: in the MicroVerse paper, rubric criteria are revised by a panel of experts who *independently* propose
operations on a rubric (delete a criterion, modify its text or polarity, adjust its weight, supplement a new
criterion); only changes a majority agrees on are applied, and the rest go to adjudication. This module is that
rule as plain Python (no Django), so that it can be tested exhaustively and reused by views and tasks.

Rules (``majority`` = more than half of ``panel_size``, counted in distinct experts):

* **Validation.** Every proposal needs a non-blank rationale, a known op and the fields its op uses (see
  :func:`validate_proposal`). One expert's repeated proposals of the same op on the same target count once:
  the last one wins, the earlier ones are reported in ``superseded``. For a supplement the target is the new
  criterion's dimension and normalised description, so an expert may supplement several different criteria.
* **delete** is applied when a majority proposes it. The criterion is then gone, so every other proposal on
  it (modify, weight) goes to adjudication as ``"superseded by delete"``. A minority delete goes to
  adjudication (``"minority proposal (k of N)"``, or ``"delete conflicts with modify (k of N)"`` when the
  criterion also received other proposals); it does not block majority changes to the criterion.
* **modify** proposes a new description and/or polarity; fields left ``None`` keep their current value, and
  descriptions are compared after whitespace normalisation. It is applied when a majority proposes the same
  resulting (description, polarity). Otherwise the proposals go to adjudication: ``"minority proposal (k of
  N)"`` if they all agree, ``"conflicting modifications"`` if they differ; next to an applied modification,
  the dissenting versions are ``"outvoted by majority modification (k of N)"``.
* **weight** is applied when a majority proposes a weight for the criterion, even with different values: the
  new weight is the median (:func:`statistics.median`) of their values. A minority goes to adjudication.
* **supplement** adds a criterion only when a majority proposes an identical one (same dimension, normalised
  description, polarity and weight). Applied supplements get keys ``"new-1"``, ``"new-2"``, ... in the order
  of (dimension, description, polarity, weight), skipping keys already in use. Proposals for the same
  dimension and description that differ in polarity or weight are ``"conflicting supplements"`` (or
  ``"outvoted by majority supplement (k of N)"`` next to an applied one); a lone version short of a majority
  is a ``"minority proposal (k of N)"``.

Modify and weight changes to one criterion are applied in that order, so each :class:`AppliedChange` chains
``before`` -> ``after`` and the last ``after`` equals the criterion in ``new_criteria``. Every proposal ends up
in exactly one place: behind an applied change, in an adjudication item, or in ``superseded``.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral, Real

__all__ = [
    "OPS",
    "AdjudicationItem",
    "AggregationResult",
    "AppliedChange",
    "CriterionState",
    "Proposal",
    "aggregate",
    "majority_of",
    "normalise_text",
    "validate_proposal",
]

DELETE, MODIFY, WEIGHT, SUPPLEMENT = "delete", "modify", "weight", "supplement"
OPS = (DELETE, MODIFY, WEIGHT, SUPPLEMENT)
POLARITIES = (1, -1)


@dataclass(frozen=True)
class CriterionState:
    """One criterion of a rubric: its dimension, text, polarity (+1 bonus / -1 penalty) and weight."""

    dimension: str
    description: str
    polarity: int
    weight: float


@dataclass(frozen=True)
class Proposal:
    """One expert's proposed operation on a rubric.

    ``criterion`` is the stable key of an existing criterion (None for ``supplement``, which instead carries
    ``dimension``, ``description``, ``polarity`` and ``weight`` of the new criterion). ``modify`` carries a new
    ``description`` and/or ``polarity``; ``weight`` carries ``weight``; ``delete`` carries nothing else.
    ``proposal_id`` is opaque (e.g. a database primary key) and only passed through.
    """

    expert: str
    op: str
    criterion: str | None
    description: str | None = None
    weight: float | None = None
    polarity: int | None = None
    dimension: str | None = None
    rationale: str = ""
    proposal_id: object = None


@dataclass(frozen=True)
class AppliedChange:
    """A change that a majority agreed on.

    ``criterion`` is the existing key, or the new key for a supplement. ``before`` is None for a supplement and
    ``after`` is None for a delete.
    """

    op: str
    criterion: str
    before: CriterionState | None
    after: CriterionState | None
    proposals: tuple[Proposal, ...]

    @property
    def proposal_ids(self) -> tuple:
        return tuple(p.proposal_id for p in self.proposals)

    @property
    def experts(self) -> tuple[str, ...]:
        return tuple(sorted({p.expert for p in self.proposals}))


@dataclass(frozen=True)
class AdjudicationItem:
    """Proposals that the majority rule could not settle, with the reason, for a human adjudicator."""

    op: str
    criterion: str | None
    proposals: tuple[Proposal, ...]
    reason: str

    @property
    def proposal_ids(self) -> tuple:
        return tuple(p.proposal_id for p in self.proposals)

    @property
    def experts(self) -> tuple[str, ...]:
        return tuple(sorted({p.expert for p in self.proposals}))


@dataclass(frozen=True)
class AggregationResult:
    """Outcome of :func:`aggregate`; ``new_criteria`` is the rubric after the applied changes."""

    applied: list[AppliedChange]
    adjudication: list[AdjudicationItem]
    new_criteria: dict[str, CriterionState]
    superseded: list[Proposal] = field(default_factory=list)
    majority: int = 0


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace and trim, so that re-typed but identical texts compare equal."""
    return " ".join(text.split())


def majority_of(panel_size: int) -> int:
    """The smallest number of experts that is more than half of the panel."""
    if isinstance(panel_size, bool) or not isinstance(panel_size, int) or panel_size < 1:
        raise ValueError(f"panel_size must be a positive integer, got {panel_size!r}")
    return panel_size // 2 + 1


def _who(p: Proposal) -> str:
    target = f" on {p.criterion!r}" if p.criterion is not None else ""
    return f"{p.op!r} proposal by expert {p.expert!r}{target}"


def _is_blank(value) -> bool:
    return not isinstance(value, str) or not value.strip()


def _check_weight(p: Proposal) -> None:
    w = p.weight
    if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w) or w < 0:
        raise ValueError(f"{_who(p)} needs a finite, non-negative weight, got {w!r}")


def _check_polarity(p: Proposal) -> None:
    if isinstance(p.polarity, bool) or not isinstance(p.polarity, Integral) or p.polarity not in POLARITIES:
        raise ValueError(f"{_who(p)} needs polarity +1 or -1, got {p.polarity!r}")


def _check_absent(p: Proposal, *names: str) -> None:
    present = [n for n in names if getattr(p, n) is not None]
    if present:
        raise ValueError(f"{_who(p)} must not set {', '.join(present)}")


def _modified_state(p: Proposal, state: CriterionState) -> CriterionState:
    """The criterion as a modify proposal would leave it (description normalised only if it changes)."""
    description = state.description
    if p.description is not None and normalise_text(p.description) != normalise_text(state.description):
        description = normalise_text(p.description)
    polarity = int(p.polarity) if p.polarity is not None else state.polarity
    return replace(state, description=description, polarity=polarity)


def validate_proposal(proposal: Proposal, criteria: Mapping[str, CriterionState]) -> None:
    """Raise ValueError if ``proposal`` is malformed for this rubric.

    Exposed so a form or API can check one proposal when it is submitted, rather than only when the panel is
    aggregated.
    """
    p = proposal
    if _is_blank(p.expert):
        raise ValueError(f"proposal has no expert: {p!r}")
    if p.op not in OPS:
        raise ValueError(f"unknown op {p.op!r} in proposal by expert {p.expert!r}; expected one of {OPS}")
    if _is_blank(p.rationale):
        raise ValueError(f"{_who(p)} has a blank rationale; every proposal must say why")
    if p.op == SUPPLEMENT:
        if p.criterion is not None:
            raise ValueError(f"{_who(p)}: a supplement adds a new criterion and must not name one")
        if _is_blank(p.dimension):
            raise ValueError(f"{_who(p)} needs a dimension")
        if _is_blank(p.description):
            raise ValueError(f"{_who(p)} needs a description")
        _check_polarity(p)
        _check_weight(p)
        return
    if p.criterion not in criteria:
        raise ValueError(f"{_who(p)} names an unknown criterion")
    state = criteria[p.criterion]
    if p.op == DELETE:
        _check_absent(p, "description", "weight", "polarity", "dimension")
    elif p.op == WEIGHT:
        _check_absent(p, "description", "polarity", "dimension")
        _check_weight(p)
        if float(p.weight) == float(state.weight):
            raise ValueError(f"{_who(p)} proposes the current weight {state.weight!r}; nothing to change")
    else:  # MODIFY
        _check_absent(p, "weight", "dimension")
        if p.description is None and p.polarity is None:
            raise ValueError(f"{_who(p)} needs a new description and/or polarity")
        if p.description is not None and _is_blank(p.description):
            raise ValueError(f"{_who(p)} has a blank description")
        if p.polarity is not None:
            _check_polarity(p)
        if _modified_state(p, state) == state:
            raise ValueError(f"{_who(p)} leaves the criterion unchanged")


def _supplement_topic(p: Proposal) -> tuple[str, str]:
    return (p.dimension, normalise_text(p.description))


def _supplement_signature(p: Proposal) -> tuple[str, str, int, float]:
    return (p.dimension, normalise_text(p.description), int(p.polarity), float(p.weight))


def _experts(proposals) -> set[str]:
    return {p.expert for p in proposals}


def aggregate(
    *,
    criteria: Mapping[str, CriterionState],
    proposals: Sequence[Proposal],
    panel_size: int,
) -> AggregationResult:
    """Apply the changes a majority of the panel agrees on; send everything else to adjudication.

    See the module docstring for the rules. Raises ValueError for a malformed proposal (blank rationale,
    unknown op or criterion, missing or stray fields, a no-op change) or when more distinct experts proposed
    than the panel has members.
    """
    majority = majority_of(panel_size)
    for p in proposals:
        validate_proposal(p, criteria)
    experts = _experts(proposals)
    if len(experts) > panel_size:
        raise ValueError(
            f"{len(experts)} distinct experts proposed changes but the panel has only {panel_size} members"
        )

    # One expert's last proposal per (op, target) counts; earlier ones are superseded.
    latest: dict[tuple, tuple[int, Proposal]] = {}
    superseded: list[tuple[int, Proposal]] = []
    for index, p in enumerate(proposals):
        target = _supplement_topic(p) if p.op == SUPPLEMENT else p.criterion
        key = (p.expert, p.op, target)
        if key in latest:
            superseded.append(latest[key])
        latest[key] = (index, p)
    kept = [p for _, p in sorted(latest.values(), key=lambda pair: pair[0])]

    def share(group) -> str:
        return f"({len(_experts(group))} of {panel_size})"

    applied: list[AppliedChange] = []
    adjudication: list[AdjudicationItem] = []
    new_criteria: dict[str, CriterionState] = {}

    for key, state in criteria.items():
        on_key = [p for p in kept if p.criterion == key]
        deletes = tuple(p for p in on_key if p.op == DELETE)
        modifies = tuple(p for p in on_key if p.op == MODIFY)
        weights = tuple(p for p in on_key if p.op == WEIGHT)

        if len(_experts(deletes)) >= majority:
            applied.append(AppliedChange(DELETE, key, state, None, deletes))
            for op, group in ((MODIFY, modifies), (WEIGHT, weights)):
                if group:
                    adjudication.append(AdjudicationItem(op, key, group, "superseded by delete"))
            continue

        if deletes:
            others = [op for op, group in ((MODIFY, modifies), (WEIGHT, weights)) if group]
            if others:
                reason = f"delete conflicts with {' and '.join(others)} {share(deletes)}"
            else:
                reason = f"minority proposal {share(deletes)}"
            adjudication.append(AdjudicationItem(DELETE, key, deletes, reason))

        current = state
        if modifies:
            versions: dict[CriterionState, list[Proposal]] = {}
            for p in modifies:
                versions.setdefault(_modified_state(p, state), []).append(p)
            winner = next((v for v, group in versions.items() if len(_experts(group)) >= majority), None)
            if winner is not None:
                backing = tuple(versions[winner])
                applied.append(AppliedChange(MODIFY, key, current, winner, backing))
                current = winner
                outvoted = tuple(p for p in modifies if not any(p is b for b in backing))
                if outvoted:
                    adjudication.append(
                        AdjudicationItem(
                            MODIFY, key, outvoted, f"outvoted by majority modification {share(outvoted)}"
                        )
                    )
            elif len(versions) == 1:
                adjudication.append(AdjudicationItem(MODIFY, key, modifies, f"minority proposal {share(modifies)}"))
            else:
                adjudication.append(AdjudicationItem(MODIFY, key, modifies, "conflicting modifications"))

        if weights:
            if len(_experts(weights)) >= majority:
                after = replace(current, weight=float(statistics.median(float(p.weight) for p in weights)))
                applied.append(AppliedChange(WEIGHT, key, current, after, weights))
                current = after
            else:
                adjudication.append(AdjudicationItem(WEIGHT, key, weights, f"minority proposal {share(weights)}"))

        new_criteria[key] = current

    # Supplements, grouped by topic (dimension + normalised description), in a deterministic order.
    topics: dict[tuple[str, str], list[Proposal]] = {}
    for p in kept:
        if p.op == SUPPLEMENT:
            topics.setdefault(_supplement_topic(p), []).append(p)
    winners: list[tuple[tuple, tuple[Proposal, ...]]] = []
    for topic in sorted(topics):
        group = topics[topic]
        signatures: dict[tuple, list[Proposal]] = {}
        for p in group:
            signatures.setdefault(_supplement_signature(p), []).append(p)
        winner = next((s for s, g in signatures.items() if len(_experts(g)) >= majority), None)
        if winner is not None:
            backing = tuple(signatures[winner])
            winners.append((winner, backing))
            outvoted = tuple(p for p in group if not any(p is b for b in backing))
            if outvoted:
                adjudication.append(
                    AdjudicationItem(
                        SUPPLEMENT, None, outvoted, f"outvoted by majority supplement {share(outvoted)}"
                    )
                )
        elif len(signatures) == 1:
            adjudication.append(AdjudicationItem(SUPPLEMENT, None, tuple(group), f"minority proposal {share(group)}"))
        else:
            adjudication.append(AdjudicationItem(SUPPLEMENT, None, tuple(group), "conflicting supplements"))

    counter = 0
    used = set(criteria)
    for signature, backing in sorted(winners, key=lambda pair: pair[0]):
        counter += 1
        while f"new-{counter}" in used:
            counter += 1
        new_key = f"new-{counter}"
        used.add(new_key)
        dimension, description, polarity, weight = signature
        state = CriterionState(dimension, description, polarity, weight)
        applied.append(AppliedChange(SUPPLEMENT, new_key, None, state, backing))
        new_criteria[new_key] = state

    return AggregationResult(
        applied=applied,
        adjudication=adjudication,
        new_criteria=new_criteria,
        superseded=[p for _, p in sorted(superseded, key=lambda pair: pair[0])],
        majority=majority,
    )
