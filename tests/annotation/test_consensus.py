"""Tests for the panel consensus rule (plain Python, no database)."""
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annotation.consensus import (
    ACCEPTED,
    OPEN,
    REJECTED,
    ConsensusRule,
    decide,
    is_decided,
    outstanding_votes,
)

PAPER = ConsensusRule()  # 2 of 3


def _expected(rule, votes):
    keeps = votes.count("keep")
    rejects = votes.count("reject")
    if keeps >= rule.quorum:
        return ACCEPTED
    if rejects >= rule.quorum:
        return REJECTED
    return OPEN


def test_default_is_papers_two_of_three():
    assert PAPER.panel_size == 3
    assert PAPER.quorum == 2


# Every sequence of 0..3 votes under the 2-of-3 rule, spelled out by hand.
PAPER_TABLE = {
    (): OPEN,
    ("keep",): OPEN,
    ("reject",): OPEN,
    ("keep", "keep"): ACCEPTED,
    ("reject", "reject"): REJECTED,
    ("keep", "reject"): OPEN,
    ("reject", "keep"): OPEN,
    ("keep", "keep", "keep"): ACCEPTED,
    ("keep", "keep", "reject"): ACCEPTED,
    ("keep", "reject", "keep"): ACCEPTED,
    ("reject", "keep", "keep"): ACCEPTED,
    ("reject", "reject", "reject"): REJECTED,
    ("reject", "reject", "keep"): REJECTED,
    ("reject", "keep", "reject"): REJECTED,
    ("keep", "reject", "reject"): REJECTED,
}


def test_paper_table_is_exhaustive():
    all_sequences = {
        seq for n in range(4) for seq in itertools.product(("keep", "reject"), repeat=n)
    }
    assert set(PAPER_TABLE) == all_sequences


@pytest.mark.parametrize("votes,outcome", sorted(PAPER_TABLE.items()))
def test_paper_rule_exhaustive(votes, outcome):
    assert decide(PAPER, votes) == outcome
    assert is_decided(PAPER, votes) == (outcome != OPEN)
    assert outstanding_votes(PAPER, votes) == 3 - len(votes)


def test_accepts_any_iterable():
    assert decide(PAPER, iter(["keep", "keep"])) == ACCEPTED
    assert outstanding_votes(PAPER, (v for v in ["keep"])) == 2


@pytest.mark.parametrize("n", range(6))
def test_panel_five_quorum_three_exhaustive(n):
    rule = ConsensusRule(panel_size=5, quorum=3)
    for votes in itertools.product(("keep", "reject"), repeat=n):
        votes = list(votes)
        assert decide(rule, votes) == _expected(rule, votes)
        assert outstanding_votes(rule, votes) == 5 - n
    # A full 5-member panel with quorum 3 always decides.
    if n == 5:
        for votes in itertools.product(("keep", "reject"), repeat=5):
            assert is_decided(rule, votes)


def test_panel_five_quorum_three_examples():
    rule = ConsensusRule(panel_size=5, quorum=3)
    assert decide(rule, ["keep", "keep", "reject", "reject"]) == OPEN
    assert decide(rule, ["keep", "keep", "reject", "reject", "keep"]) == ACCEPTED
    assert decide(rule, ["reject", "keep", "reject", "reject"]) == REJECTED


def test_supermajority_can_stay_open_on_full_panel():
    rule = ConsensusRule(panel_size=5, quorum=4)
    votes = ["keep", "keep", "keep", "reject", "reject"]
    assert decide(rule, votes) == OPEN
    assert outstanding_votes(rule, votes) == 0


def test_single_member_panel():
    rule = ConsensusRule(panel_size=1, quorum=1)
    assert decide(rule, []) == OPEN
    assert decide(rule, ["keep"]) == ACCEPTED
    assert decide(rule, ["reject"]) == REJECTED


@pytest.mark.parametrize(
    "panel_size,quorum,message",
    [
        (3, 1, "strict majority"),
        (4, 2, "strict majority"),
        (2, 1, "strict majority"),
        (3, 4, "between 1 and panel_size"),
        (3, 0, "between 1 and panel_size"),
        (3, -1, "between 1 and panel_size"),
        (0, 1, "at least 1"),
        (-3, 2, "at least 1"),
        (3.0, 2, "integer"),
        (3, "2", "integer"),
        (3, True, "integer"),
    ],
)
def test_invalid_rules(panel_size, quorum, message):
    with pytest.raises(ValueError, match=message):
        ConsensusRule(panel_size=panel_size, quorum=quorum)


def test_strict_majority_message_suggests_minimum():
    with pytest.raises(ValueError, match="at least 3"):
        ConsensusRule(panel_size=4, quorum=2)


@pytest.mark.parametrize("bad", ["Keep", "accept", "", None, 1, "keep "])
def test_unknown_votes_rejected(bad):
    with pytest.raises(ValueError, match="unknown decision"):
        decide(PAPER, ["keep", bad])
    with pytest.raises(ValueError, match="unknown decision"):
        outstanding_votes(PAPER, [bad])
    with pytest.raises(ValueError, match="unknown decision"):
        is_decided(PAPER, [bad])


def test_too_many_votes_rejected():
    with pytest.raises(ValueError, match="cannot cast more votes"):
        decide(PAPER, ["keep"] * 4)
    with pytest.raises(ValueError, match="cannot cast more votes"):
        outstanding_votes(PAPER, ["keep", "reject", "keep", "reject"])


def test_rule_is_frozen_and_hashable():
    with pytest.raises(Exception):
        PAPER.quorum = 1  # type: ignore[misc]
    assert {ConsensusRule(3, 2), ConsensusRule()} == {PAPER}


@st.composite
def rule_and_votes(draw):
    panel_size = draw(st.integers(min_value=1, max_value=9))
    quorum = draw(st.integers(min_value=panel_size // 2 + 1, max_value=panel_size))
    votes = draw(st.lists(st.sampled_from(["keep", "reject"]), max_size=panel_size))
    return ConsensusRule(panel_size, quorum), votes


@given(rule_and_votes())
def test_decision_is_final_once_reached(case):
    """With quorum > half, adding more votes (up to panel_size) never changes a decided outcome."""
    rule, votes = case
    outcomes = [decide(rule, votes[:k]) for k in range(len(votes) + 1)]
    for earlier, later in zip(outcomes, outcomes[1:]):
        if earlier != OPEN:
            assert later == earlier


@given(rule_and_votes(), st.randoms(use_true_random=False))
def test_order_does_not_matter(case, rnd):
    rule, votes = case
    shuffled = list(votes)
    rnd.shuffle(shuffled)
    assert decide(rule, shuffled) == decide(rule, votes)


@given(rule_and_votes())
def test_matches_reference_and_counts(case):
    rule, votes = case
    assert decide(rule, votes) == _expected(rule, votes)
    assert outstanding_votes(rule, votes) == rule.panel_size - len(votes)
    assert is_decided(rule, votes) == (decide(rule, votes) != OPEN)
