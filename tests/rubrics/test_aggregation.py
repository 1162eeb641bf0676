"""Tests for majority aggregation of rubric revisions (plain Python, no database)."""
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rubrics.aggregation import (
    AdjudicationItem,
    AppliedChange,
    CriterionState,
    Proposal,
    aggregate,
    majority_of,
    normalise_text,
    validate_proposal,
)

CRITERIA = {
    "scientific-1": CriterionState("scientific", "Red blood cells are biconcave.", 1, 2.0),
    "scientific-2": CriterionState("scientific", "Flow is laminar.", 1, 1.0),
    "visual-1": CriterionState("visual", "Visible artifacts.", -1, 0.5),
}

_ids = itertools.count(1)


def prop(expert, op, criterion=None, **kw):
    kw.setdefault("rationale", f"{expert} thinks so")
    kw.setdefault("proposal_id", next(_ids))
    return Proposal(expert=expert, op=op, criterion=criterion, **kw)


def run(proposals, panel_size=3, criteria=CRITERIA):
    return aggregate(criteria=criteria, proposals=proposals, panel_size=panel_size)


def only(items):
    assert len(items) == 1, items
    return items[0]


def placements(result):
    """proposal_id -> where it ended up; each proposal must appear exactly once."""
    seen = []
    for change in result.applied:
        seen += [(p.proposal_id, "applied") for p in change.proposals]
    for item in result.adjudication:
        seen += [(p.proposal_id, "adjudication") for p in item.proposals]
    seen += [(p.proposal_id, "superseded") for p in result.superseded]
    ids = [i for i, _ in seen]
    assert len(ids) == len(set(ids)), "a proposal ended up in two places"
    return dict(seen)


# ---------------------------------------------------------------------------------------------------------
# Basics


def test_majority_of():
    assert [majority_of(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError):
            majority_of(bad)


def test_normalise_text():
    assert normalise_text("  Flow\n is\tlaminar.  ") == "Flow is laminar."


def test_no_proposals_keeps_rubric():
    result = run([])
    assert result.applied == [] and result.adjudication == [] and result.superseded == []
    assert result.new_criteria == CRITERIA
    assert result.majority == 2


# ---------------------------------------------------------------------------------------------------------
# delete


def test_majority_delete_applied():
    a, b = prop("A", "delete", "scientific-2"), prop("B", "delete", "scientific-2")
    result = run([a, b])
    change = only(result.applied)
    assert change == AppliedChange("delete", "scientific-2", CRITERIA["scientific-2"], None, (a, b))
    assert change.proposal_ids == (a.proposal_id, b.proposal_id)
    assert change.experts == ("A", "B")
    assert list(result.new_criteria) == ["scientific-1", "visual-1"]
    assert result.adjudication == []


def test_minority_delete_goes_to_adjudication():
    a = prop("A", "delete", "visual-1")
    result = run([a])
    assert result.applied == []
    assert only(result.adjudication) == AdjudicationItem("delete", "visual-1", (a,), "minority proposal (1 of 3)")
    assert result.new_criteria == CRITERIA


def test_majority_delete_supersedes_other_proposals():
    d1, d2 = prop("A", "delete", "scientific-1"), prop("B", "delete", "scientific-1")
    m = prop("C", "modify", "scientific-1", description="Cells are biconcave discs.")
    w = prop("C", "weight", "scientific-1", weight=1.0)
    result = run([d1, m, d2, w])
    assert only(result.applied).op == "delete"
    assert [(i.op, i.reason, i.proposals) for i in result.adjudication] == [
        ("modify", "superseded by delete", (m,)),
        ("weight", "superseded by delete", (w,)),
    ]
    assert "scientific-1" not in result.new_criteria


def test_delete_wins_even_if_modify_also_has_majority():
    # B proposes both; delete reaches a majority, so the criterion goes and the modify is superseded.
    proposals = [
        prop("A", "delete", "scientific-2"),
        prop("B", "delete", "scientific-2"),
        prop("B", "modify", "scientific-2", description="Flow is laminar in capillaries."),
        prop("C", "modify", "scientific-2", description="Flow is laminar in capillaries."),
    ]
    result = run(proposals)
    assert [c.op for c in result.applied] == ["delete"]
    assert only(result.adjudication).reason == "superseded by delete"


def test_minority_delete_conflicts_with_majority_modify():
    d = prop("A", "delete", "scientific-2")
    m1 = prop("B", "modify", "scientific-2", description="Laminar flow.")
    m2 = prop("C", "modify", "scientific-2", description="Laminar  flow. ")
    result = run([d, m1, m2])
    change = only(result.applied)
    assert change.op == "modify" and change.proposals == (m1, m2)
    assert change.after.description == "Laminar flow."
    assert only(result.adjudication) == AdjudicationItem(
        "delete", "scientific-2", (d,), "delete conflicts with modify (1 of 3)"
    )


def test_delete_conflicts_with_modify_and_weight_when_nothing_has_majority():
    d = prop("A", "delete", "visual-1")
    m = prop("B", "modify", "visual-1", description="Obvious artifacts.")
    w = prop("C", "weight", "visual-1", weight=1.0)
    result = run([d, m, w])
    assert result.applied == []
    assert [(i.op, i.reason) for i in result.adjudication] == [
        ("delete", "delete conflicts with modify and weight (1 of 3)"),
        ("modify", "minority proposal (1 of 3)"),
        ("weight", "minority proposal (1 of 3)"),
    ]
    assert result.new_criteria == CRITERIA


# ---------------------------------------------------------------------------------------------------------
# modify


def test_identical_modification_after_whitespace_normalisation_applied():
    m1 = prop("A", "modify", "scientific-1", description="Cells are  biconcave\ndiscs.")
    m2 = prop("C", "modify", "scientific-1", description=" Cells are biconcave discs.")
    result = run([m1, m2])
    change = only(result.applied)
    assert change.before == CRITERIA["scientific-1"]
    assert change.after == CriterionState("scientific", "Cells are biconcave discs.", 1, 2.0)
    assert result.new_criteria["scientific-1"] == change.after


def test_different_texts_are_conflicting_modifications():
    m1 = prop("A", "modify", "scientific-1", description="Cells are biconcave discs.")
    m2 = prop("B", "modify", "scientific-1", description="Cells are Biconcave discs.")
    result = run([m1, m2])
    assert result.applied == []
    assert only(result.adjudication) == AdjudicationItem(
        "modify", "scientific-1", (m1, m2), "conflicting modifications"
    )


def test_single_modification_is_minority():
    m = prop("B", "modify", "scientific-1", description="New text.")
    result = run([m])
    assert only(result.adjudication).reason == "minority proposal (1 of 3)"


def test_two_agreeing_modifications_are_minority_on_panel_of_five():
    m1 = prop("A", "modify", "scientific-1", description="New text.")
    m2 = prop("B", "modify", "scientific-1", description="New text.")
    result = run([m1, m2], panel_size=5)
    assert result.applied == []
    assert only(result.adjudication).reason == "minority proposal (2 of 5)"


def test_outvoted_modification_goes_to_adjudication():
    m1 = prop("A", "modify", "scientific-1", description="Version one.")
    m2 = prop("B", "modify", "scientific-1", description="Version two.")
    m3 = prop("C", "modify", "scientific-1", description="Version one.")
    result = run([m1, m2, m3])
    assert only(result.applied).proposals == (m1, m3)
    assert only(result.adjudication) == AdjudicationItem(
        "modify", "scientific-1", (m2,), "outvoted by majority modification (1 of 3)"
    )


def test_polarity_change_needs_identical_majority():
    p1 = prop("A", "modify", "visual-1", polarity=1)
    p2 = prop("B", "modify", "visual-1", polarity=1)
    result = run([p1, p2])
    change = only(result.applied)
    assert change.after == CriterionState("visual", "Visible artifacts.", 1, 0.5)
    # Text unchanged and polarity flipped, or the same text plus the flip: the same resulting criterion.
    p3 = prop("C", "modify", "visual-1", polarity=1, description=" Visible   artifacts. ")
    assert only(run([p1, p3]).applied).after.description == "Visible artifacts."


def test_polarity_plus_text_differs_from_text_alone():
    t = prop("A", "modify", "visual-1", description="Obvious artifacts.")
    tp = prop("B", "modify", "visual-1", description="Obvious artifacts.", polarity=1)
    result = run([t, tp])
    assert result.applied == []
    assert only(result.adjudication).reason == "conflicting modifications"


def test_modify_and_weight_both_applied_in_order():
    m1 = prop("A", "modify", "scientific-2", description="Flow is laminar and steady.")
    m2 = prop("B", "modify", "scientific-2", description="Flow is laminar and steady.")
    w1 = prop("A", "weight", "scientific-2", weight=2.0)
    w2 = prop("C", "weight", "scientific-2", weight=1.5)
    result = run([w1, m1, w2, m2])
    modify, weight = result.applied
    assert (modify.op, weight.op) == ("modify", "weight")
    assert weight.before == modify.after
    assert weight.after == CriterionState("scientific", "Flow is laminar and steady.", 1, 1.75)
    assert result.new_criteria["scientific-2"] == weight.after


# ---------------------------------------------------------------------------------------------------------
# weight


def test_weight_majority_takes_median():
    ws = [
        prop("A", "weight", "scientific-1", weight=1.0),
        prop("B", "weight", "scientific-1", weight=3.0),
        prop("C", "weight", "scientific-1", weight=1.5),
    ]
    result = run(ws)
    change = only(result.applied)
    assert change.before.weight == 2.0 and change.after.weight == 1.5
    assert change.proposals == tuple(ws)
    assert result.new_criteria["scientific-1"].weight == 1.5


def test_weight_median_of_even_count():
    ws = [prop(e, "weight", "visual-1", weight=w) for e, w in (("A", 1.0), ("B", 2.0), ("C", 0.0), ("D", 4))]
    result = run(ws, panel_size=5)
    assert only(result.applied).after.weight == 1.5  # median(0, 1, 2, 4)


def test_weight_minority_goes_to_adjudication():
    w = prop("A", "weight", "scientific-1", weight=1.0)
    result = run([w])
    assert only(result.adjudication) == AdjudicationItem("weight", "scientific-1", (w,), "minority proposal (1 of 3)")


# ---------------------------------------------------------------------------------------------------------
# supplement


def supp(expert, description="Platelets aggregate at the thrombus.", dimension="scientific", polarity=1, weight=1.0):
    return prop(expert, "supplement", None, description=description, dimension=dimension, polarity=polarity, weight=weight)


def test_identical_supplement_by_majority_applied():
    s1, s2 = supp("A"), supp("B", description="Platelets  aggregate at the thrombus.\n")
    result = run([s1, s2])
    change = only(result.applied)
    assert change == AppliedChange(
        "supplement", "new-1", None,
        CriterionState("scientific", "Platelets aggregate at the thrombus.", 1, 1.0), (s1, s2),
    )
    assert list(result.new_criteria)[-1] == "new-1"
    assert result.adjudication == []


def test_supplements_differing_in_weight_conflict():
    s1, s2 = supp("A", weight=1.0), supp("B", weight=0.7)
    result = run([s1, s2])
    assert result.applied == []
    assert only(result.adjudication) == AdjudicationItem("supplement", None, (s1, s2), "conflicting supplements")


def test_supplement_minority_and_outvoted():
    s1, s2, s3 = supp("A", polarity=1), supp("B", polarity=-1), supp("C", polarity=1)
    lone = supp("B", description="Something else.", dimension="visual")
    result = run([s1, s2, s3, lone])
    assert only(result.applied).proposals == (s1, s3)
    assert [(i.proposals, i.reason) for i in result.adjudication] == [
        ((s2,), "outvoted by majority supplement (1 of 3)"),
        ((lone,), "minority proposal (1 of 3)"),
    ]


def test_new_keys_deterministic_and_skip_existing():
    criteria = dict(CRITERIA, **{"new-1": CriterionState("visual", "Existing new-1.", 1, 1.0)})
    z = [supp("A", description="Zebra."), supp("B", description="Zebra.")]
    a = [supp("A", description="Alpha.", dimension="visual"), supp("B", description="Alpha.", dimension="visual")]
    s = [supp("A", description="Alpha."), supp("C", description="Alpha.")]
    for order in (z + a + s, s + a + z, a + z + s):
        result = run(order, criteria=criteria)
        assert [(c.criterion, c.after.dimension, c.after.description) for c in result.applied] == [
            ("new-2", "scientific", "Alpha."),
            ("new-3", "scientific", "Zebra."),
            ("new-4", "visual", "Alpha."),
        ]
        assert list(result.new_criteria) == [*criteria, "new-2", "new-3", "new-4"]


def test_expert_may_supplement_several_criteria():
    proposals = [supp("A", description="One."), supp("A", description="Two."), supp("B", description="One.")]
    result = run(proposals)
    assert only(result.applied).after.description == "One."
    assert only(result.adjudication).reason == "minority proposal (1 of 3)"
    assert result.superseded == []


# ---------------------------------------------------------------------------------------------------------
# One expert, several proposals


def test_last_proposal_of_an_expert_counts():
    first = prop("A", "modify", "scientific-1", description="Draft text.")
    second = prop("A", "modify", "scientific-1", description="Final text.")
    other = prop("B", "modify", "scientific-1", description="Final text.")
    result = run([first, other, second])
    change = only(result.applied)
    assert change.after.description == "Final text." and change.proposals == (other, second)
    assert result.superseded == [first]
    assert result.adjudication == []


def test_repeated_votes_do_not_make_a_majority():
    ws = [prop("A", "weight", "visual-1", weight=w) for w in (1.0, 2.0, 3.0)]
    result = run(ws)
    assert result.applied == []
    assert only(result.adjudication).proposals == (ws[-1],)
    assert result.superseded == ws[:2]


def test_last_supplement_on_same_topic_counts():
    s_old = supp("A", weight=2.0)
    s_new = supp("A", weight=1.0)
    result = run([s_old, supp("B", weight=1.0), s_new])
    assert only(result.applied).after.weight == 1.0
    assert result.superseded == [s_old]


# ---------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("rationale", ["", "   ", "\n\t"])
def test_blank_rationale_rejected_naming_expert_and_op(rationale):
    bad = prop("Dr. Ito", "weight", "visual-1", weight=1.0, rationale=rationale)
    with pytest.raises(ValueError, match=r"'weight'.*'Dr\. Ito'.*blank rationale"):
        run([prop("A", "delete", "visual-1"), bad])


@pytest.mark.parametrize(
    "proposal,message",
    [
        (Proposal("A", "rename", "visual-1", rationale="r"), "unknown op"),
        (Proposal("", "delete", "visual-1", rationale="r"), "no expert"),
        (Proposal("A", "delete", "missing", rationale="r"), "unknown criterion"),
        (Proposal("A", "delete", None, rationale="r"), "unknown criterion"),
        (Proposal("A", "delete", "visual-1", weight=1.0, rationale="r"), "must not set weight"),
        (Proposal("A", "weight", "visual-1", rationale="r"), "weight"),
        (Proposal("A", "weight", "visual-1", weight=-1.0, rationale="r"), "non-negative"),
        (Proposal("A", "weight", "visual-1", weight=float("nan"), rationale="r"), "finite"),
        (Proposal("A", "weight", "visual-1", weight=True, rationale="r"), "weight"),
        (Proposal("A", "weight", "visual-1", weight=0.5, rationale="r"), "current weight"),
        (Proposal("A", "weight", "visual-1", weight=1.0, polarity=1, rationale="r"), "must not set polarity"),
        (Proposal("A", "modify", "visual-1", rationale="r"), "description and/or polarity"),
        (Proposal("A", "modify", "visual-1", description="  ", rationale="r"), "blank description"),
        (Proposal("A", "modify", "visual-1", polarity=2, rationale="r"), "polarity"),
        (Proposal("A", "modify", "visual-1", polarity=-1, rationale="r"), "unchanged"),
        (Proposal("A", "modify", "visual-1", description="Visible  artifacts. ", rationale="r"), "unchanged"),
        (Proposal("A", "modify", "visual-1", description="x", weight=2.0, rationale="r"), "must not set weight"),
        (Proposal("A", "supplement", "visual-1", description="x", dimension="visual", polarity=1, weight=1.0,
                  rationale="r"), "must not name"),
        (Proposal("A", "supplement", None, description="x", polarity=1, weight=1.0, rationale="r"), "dimension"),
        (Proposal("A", "supplement", None, dimension="visual", polarity=1, weight=1.0, rationale="r"), "description"),
        (Proposal("A", "supplement", None, description="x", dimension="visual", weight=1.0, rationale="r"),
         "polarity"),
        (Proposal("A", "supplement", None, description="x", dimension="visual", polarity=1, rationale="r"),
         "weight"),
    ],
)
def test_invalid_proposals(proposal, message):
    with pytest.raises(ValueError, match=message):
        validate_proposal(proposal, CRITERIA)
    with pytest.raises(ValueError, match=message):
        run([proposal])


def test_more_experts_than_panel_rejected():
    proposals = [prop(e, "delete", "visual-1") for e in "ABCD"]
    with pytest.raises(ValueError, match="4 distinct experts.*only 3"):
        run(proposals)


def test_invalid_panel_size():
    with pytest.raises(ValueError, match="panel_size"):
        run([], panel_size=0)


def test_panel_of_one_applies_everything():
    result = run([prop("A", "delete", "visual-1"), supp("A")], panel_size=1)
    assert [c.op for c in result.applied] == ["delete", "supplement"]


# ---------------------------------------------------------------------------------------------------------
# Properties

KEYS = ["c1", "c2", "c3"]
PROP_CRITERIA = {k: CriterionState("scientific", f"Original {k}.", 1, 1.0) for k in KEYS}


@st.composite
def panels(draw, unique=False):
    panel_size = draw(st.integers(min_value=1, max_value=5))
    experts = [f"E{i}" for i in range(panel_size)]
    op = st.sampled_from(["delete", "modify", "weight", "supplement"])
    n = draw(st.integers(min_value=0, max_value=20))
    proposals = []
    for index in range(n):
        expert = draw(st.sampled_from(experts))
        kind = draw(op)
        common = dict(expert=expert, op=kind, rationale="because", proposal_id=index)
        if kind == "supplement":
            proposals.append(
                Proposal(
                    criterion=None,
                    dimension=draw(st.sampled_from(["scientific", "visual"])),
                    description=draw(st.sampled_from(["New A.", " New  A.", "New B."])),
                    polarity=draw(st.sampled_from([1, -1])),
                    weight=draw(st.sampled_from([0.5, 1.0])),
                    **common,
                )
            )
            continue
        criterion = draw(st.sampled_from(KEYS))
        if kind == "delete":
            proposals.append(Proposal(criterion=criterion, **common))
        elif kind == "weight":
            proposals.append(Proposal(criterion=criterion, weight=draw(st.sampled_from([0.0, 0.5, 2.0])), **common))
        else:
            proposals.append(
                Proposal(
                    criterion=criterion,
                    description=draw(st.sampled_from(["Text X.", "Text  X. ", "Text Y."])),
                    polarity=draw(st.sampled_from([None, 1, -1])),
                    **common,
                )
            )
    if unique:
        seen, kept = set(), []
        for p in reversed(proposals):
            target = (p.dimension, normalise_text(p.description)) if p.op == "supplement" else p.criterion
            if (p.expert, p.op, target) not in seen:
                seen.add((p.expert, p.op, target))
                kept.append(p)
        proposals = kept[::-1]
    return panel_size, proposals


@settings(max_examples=300, deadline=None)
@given(panels())
def test_applied_changes_need_a_majority_and_nothing_is_lost(case):
    panel_size, proposals = case
    result = aggregate(criteria=PROP_CRITERIA, proposals=proposals, panel_size=panel_size)
    majority = panel_size // 2 + 1
    for change in result.applied:
        assert len({p.expert for p in change.proposals}) >= majority
        assert all(p.op == change.op for p in change.proposals)
    for item in result.adjudication:
        assert item.proposals and all(p.op == item.op for p in item.proposals)
        assert item.reason
    where = placements(result)
    assert sorted(where) == [p.proposal_id for p in proposals]
    # The rubric reflects exactly the applied changes.
    deleted = {c.criterion for c in result.applied if c.op == "delete"}
    added = [c.criterion for c in result.applied if c.op == "supplement"]
    assert list(result.new_criteria) == [k for k in KEYS if k not in deleted] + added
    for change in result.applied:
        if change.op in ("modify", "weight"):
            assert change.before != change.after or change.op == "weight"
    last_after = {}
    for change in result.applied:
        if change.after is not None:
            last_after[change.criterion] = change.after
    for key, state in result.new_criteria.items():
        assert state == last_after.get(key, PROP_CRITERIA.get(key))


@settings(max_examples=200, deadline=None)
@given(panels(unique=True), st.randoms(use_true_random=False))
def test_outcome_does_not_depend_on_proposal_order(case, rnd):
    panel_size, proposals = case
    shuffled = list(proposals)
    rnd.shuffle(shuffled)
    one = aggregate(criteria=PROP_CRITERIA, proposals=proposals, panel_size=panel_size)
    two = aggregate(criteria=PROP_CRITERIA, proposals=shuffled, panel_size=panel_size)
    assert one.new_criteria == two.new_criteria
    assert [(c.op, c.criterion, c.after) for c in one.applied] == [(c.op, c.criterion, c.after) for c in two.applied]
    assert placements(one) == placements(two)
