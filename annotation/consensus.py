"""Panel consensus rule for keep/reject annotation decisions.

The MicroVerse data pipeline has each candidate judged by a small panel of experts and keeps it when a
quorum agrees (the paper's rule: 2 of 3). This module holds that rule as plain Python so that views,
tasks and reports all decide the same way, and so the rule can be tested without a database.

The quorum must be a strict majority of the panel (``quorum > panel_size / 2``). That is what makes the
outcome unique (keeps and rejects can never both reach the quorum) and stable (once decided, further votes
from the same panel cannot overturn it).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

KEEP = "keep"
REJECT = "reject"
VOTES = frozenset({KEEP, REJECT})

ACCEPTED = "accepted"
REJECTED = "rejected"
OPEN = "open"

__all__ = [
    "ACCEPTED",
    "KEEP",
    "OPEN",
    "REJECT",
    "REJECTED",
    "ConsensusRule",
    "decide",
    "is_decided",
    "outstanding_votes",
]


@dataclass(frozen=True)
class ConsensusRule:
    """A panel of ``panel_size`` experts; ``quorum`` identical votes decide an item.

    Defaults to the paper's 2-of-3 rule. Raises ``ValueError`` for a rule that is not a strict majority,
    because such a rule could accept and reject the same item.
    """

    panel_size: int = 3
    quorum: int = 2

    def __post_init__(self) -> None:
        for name in ("panel_size", "quorum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.panel_size < 1:
            raise ValueError(f"panel_size must be at least 1, got {self.panel_size}")
        if not 1 <= self.quorum <= self.panel_size:
            raise ValueError(
                f"quorum must be between 1 and panel_size ({self.panel_size}), got {self.quorum}"
            )
        if 2 * self.quorum <= self.panel_size:
            raise ValueError(
                f"quorum {self.quorum} of {self.panel_size} is not a strict majority: both 'keep' and "
                f"'reject' could reach it, so the outcome would not be unique; use a quorum of at least "
                f"{self.panel_size // 2 + 1}"
            )


def _tally(rule: ConsensusRule, decisions: Iterable[str]) -> tuple[int, int]:
    """Count keeps and rejects, refusing unknown votes and more votes than panel seats."""
    keeps = rejects = 0
    for vote in decisions:
        if vote == KEEP:
            keeps += 1
        elif vote == REJECT:
            rejects += 1
        else:
            raise ValueError(f"unknown decision {vote!r}; expected 'keep' or 'reject'")
    if keeps + rejects > rule.panel_size:
        raise ValueError(
            f"{keeps + rejects} decisions for a panel of {rule.panel_size}; a panel cannot cast more votes "
            f"than it has members"
        )
    return keeps, rejects


def decide(rule: ConsensusRule, decisions: Iterable[str]) -> str:
    """Return ``"accepted"``, ``"rejected"`` or ``"open"`` for the votes cast so far.

    ``"open"`` also covers a full panel that did not reach the quorum (possible when the quorum is larger
    than a bare majority, e.g. 4 of 5 with a 3-2 split): such an item needs adjudication.
    """
    keeps, rejects = _tally(rule, decisions)
    if keeps >= rule.quorum:
        return ACCEPTED
    if rejects >= rule.quorum:
        return REJECTED
    return OPEN


def outstanding_votes(rule: ConsensusRule, decisions: Iterable[str]) -> int:
    """How many panel members have not voted yet (``panel_size - len(decisions)``)."""
    keeps, rejects = _tally(rule, decisions)
    return rule.panel_size - keeps - rejects


def is_decided(rule: ConsensusRule, decisions: Iterable[str]) -> bool:
    """True once the votes reached the quorum either way."""
    return decide(rule, decisions) != OPEN
