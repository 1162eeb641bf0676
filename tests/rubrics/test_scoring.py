"""Tests of rubrics.scoring: plain pytest + hypothesis, no Django, no database.

Runs with ``pytest tests/rubrics/test_scoring.py -p no:django`` and under pytest-django alike.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rubrics.scoring import (
    DIMENSIONS,
    LEVELS,
    Criterion,
    DimensionResult,
    ModelSummary,
    TaskResult,
    judgement_problems,
    normalise,
    parse_polarity,
    parse_weight,
    rubric_from_release_entry,
    score_dimension,
    score_task,
    summarise_model,
)

POS, NEG = 1, -1


def c(polarity: int, weight: float, key_number: int | None = None) -> Criterion:
    return Criterion(polarity=polarity, weight=weight, key_number=key_number)


# Shared hand-computed rubric: positives 1.0, 0.5, 0.2; a penalty 0.5; an inert positive 0.0.
# Σw⁺ = 1.0 + 0.5 + 0.2 + 0.0 = 1.7 whenever the list reaches all five criteria.
FIVE = [c(POS, 1.0), c(POS, 0.5), c(POS, 0.2), c(NEG, 0.5), c(POS, 0.0)]


# ---------------------------------------------------------------------------------------------------------------
# parse_weight / parse_polarity
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.0", 1.0), ("1.", 1.0), ("2", 2.0), (1.0, 1.0), (1, 1.0), (0, 0.0), ("0.0", 0.0), (0.2, 0.2), (" 0.5 ", 0.5)],
)
def test_parse_weight_accepts_release_forms(value, expected):
    assert parse_weight(value) == expected
    assert isinstance(parse_weight(value), float)


def test_parse_weight_negative_zero_is_plain_zero():
    assert math.copysign(1.0, parse_weight("-0.0")) == 1.0


@pytest.mark.parametrize(
    "value",
    [True, False, None, "", "abc", "1,0", "nan", float("nan"), "inf", float("inf"), float("-inf"), -0.5, "-1", [1], {}],
)
def test_parse_weight_rejects(value):
    with pytest.raises(ValueError, match="weight"):
        parse_weight(value)


@pytest.mark.parametrize(("value", "expected"), [("+1", 1), ("1", 1), (1, 1), ("-1", -1), (-1, -1)])
def test_parse_polarity_accepts(value, expected):
    assert parse_polarity(value) == expected


@pytest.mark.parametrize("value", [True, False, 0, "0", 2, "+2", "-2", None, 1.0, "-1.0", "plus", ""])
def test_parse_polarity_rejects(value):
    with pytest.raises(ValueError, match="polarity"):
        parse_polarity(value)


# ---------------------------------------------------------------------------------------------------------------
# judgement_problems
# ---------------------------------------------------------------------------------------------------------------


def test_well_formed_judgement_has_no_problems():
    assert judgement_problems(FIVE, [1, 0, 1, 0, 1]) == []
    assert judgement_problems(FIVE, (0, 0, 0, 0, 0)) == []


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        (None, ["no score list"]),
        ([], ["empty score list"]),
        ("10101", ["scores is a str, not a list"]),
        ({"scores": [1]}, ["scores is a dict, not a list"]),
        (5, ["scores is a int, not a list"]),
        ([1, 0, 1, 0, 1, 1], ["6 scores for 5 criteria"]),
        ([1, 0], ["2 scores for 5 criteria"]),
        ([1], ["1 score for 5 criteria"]),
    ],
)
def test_judgement_problems_shapes(scores, expected):
    assert judgement_problems(FIVE, scores) == expected


def test_judgement_problems_singular_criterion():
    assert judgement_problems([c(POS, 1.0)], [1, 1]) == ["2 scores for 1 criterion"]
    assert judgement_problems([], [1]) == ["1 score for 0 criteria"]


def test_judgement_problems_entries_that_are_not_0_or_1():
    problems = judgement_problems(FIVE, [2, True, 1.0, "1", None])
    assert problems == [
        "score 2 is not 0/1 (entry 1, counted as 0)",
        "score True is a bool, not 0/1 (entry 2, counted as 1)",  # JSON true: well formed it is not
        "score 1.0 is not 0/1 (entry 3, counted as 1)",
        "score '1' is not 0/1 (entry 4, counted as 0)",
        "score None is not 0/1 (entry 5, counted as 0)",
    ]
    assert judgement_problems(FIVE, [0, 0, False, 0, 0]) == [
        "score False is a bool, not 0/1 (entry 3, counted as 0)"
    ]


def test_judgement_problems_reports_unreachable_key_numbers():
    numbered = [c(POS, 0.5, n) for n in (11, 22, 33, 44, 55)]
    assert judgement_problems(numbered, [1, 1, 1, 1, 1]) == [
        "criteria numbered 11, 22, 33, 44, 55, not 1-5; no score entry reaches 11, 22, 33, 44, 55"
    ]


# ---------------------------------------------------------------------------------------------------------------
# score_dimension: hand-computed cases and the published edge rules
# ---------------------------------------------------------------------------------------------------------------


def test_dimension_hand_computed():
    # S = 1·1.0 + 0·0.5 + 1·0.2 − 0·0.5 + 1·0.0 = 1.2 ; Σw⁺ = 1.7 ; 1.2 / 1.7 · 100 = 70.588…
    result = score_dimension(FIVE, [1, 0, 1, 0, 1])
    assert result == DimensionResult(raw=pytest.approx(1.2), positive_weight=pytest.approx(1.7),
                                     score=pytest.approx(1.2 / 1.7 * 100), problems=())
    assert result.score == pytest.approx(70.5882352941)


def test_dimension_all_met_with_penalty_present():
    # S = 1.0 + 0.5 + 0.2 − 0.5 + 0.0 = 1.2 ; Σw⁺ = 1.7 → 70.588… (the penalty costs 0.5/1.7 of the score)
    assert score_dimension(FIVE, [1, 1, 1, 1, 1]).score == pytest.approx(1.2 / 1.7 * 100)


def test_dimension_perfect():
    # S = 1.0 + 0.5 + 0.2 + 0.0 = 1.7 = Σw⁺ → exactly 100
    assert score_dimension(FIVE, [1, 1, 1, 0, 1]).score == 100.0


def test_penalty_only_hit_is_clamped_to_zero():
    # S = −0.5 ; −0.5 / 1.7 < 0 → max(0, ·) = 0. The raw sum itself stays negative (it is pooled into the overall).
    result = score_dimension(FIVE, [0, 0, 0, 1, 0])
    assert result.score == 0.0
    assert result.raw == -0.5
    assert result.positive_weight == pytest.approx(1.7)


def test_short_list_scores_only_the_reached_criteria():
    # Two entries reach criteria 1 and 2 only: S = 1.0 + 0.5 = 1.5 ; Σw⁺ = 1.0 + 0.5 = 1.5 → 100.
    # Criteria 3-5 count in neither the sum nor the denominator.
    result = score_dimension(FIVE, [1, 1])
    assert (result.raw, result.positive_weight, result.score) == (1.5, 1.5, 100.0)
    assert result.problems == ("2 scores for 5 criteria",)


def test_long_list_ignores_entries_past_the_last_criterion():
    # Entries 6 and 7 match no criterion; the first five give the hand-computed 1.2 / 1.7.
    result = score_dimension(FIVE, [1, 0, 1, 0, 1, 1, 1])
    assert result.score == score_dimension(FIVE, [1, 0, 1, 0, 1]).score
    assert result.problems == ("7 scores for 5 criteria",)


def test_only_entries_equal_to_one_add_their_weight():
    # Python ``== 1``: 1.0 (criterion 1, +1.0) and True (criterion 3, +0.2) count; "1" and 2 do not.
    # S = 1.0 + 0.2 = 1.2 ; every reached positive criterion still adds to Σw⁺ = 1.7.
    result = score_dimension(FIVE, [1.0, "1", True, 0, 2])
    assert result.raw == pytest.approx(1.2)
    assert result.score == pytest.approx(1.2 / 1.7 * 100)
    assert len(result.problems) == 4


def test_all_zero_positive_weights_give_zero_not_none():
    # Σw⁺ = 0.0 → the published _normalise returns 0.0, and the dimension still counts for the task.
    result = score_dimension([c(POS, 0.0), c(NEG, 0.5)], [1, 0])
    assert (result.raw, result.positive_weight, result.score) == (0.0, 0.0, 0.0)
    assert score_dimension([c(NEG, 0.5)], [0]).score == 0.0


def test_no_criteria_but_scores_give_zero():
    result = score_dimension([], [1, 1])
    assert result.score == 0.0
    assert result.problems == ("2 scores for 0 criteria",)


@pytest.mark.parametrize("scores", [None, [], (), "1,0,1", 3, {"a": 1}])
def test_left_out_dimension_has_no_score(scores):
    result = score_dimension(FIVE, scores)
    assert result.score is None
    assert (result.raw, result.positive_weight) == (0.0, 0.0)
    assert len(result.problems) == 1


def test_key_numbers_11_to_55_are_never_reached():
    # The published walk matches entry i to key number i+1: numbers 11..55 are unreachable with five entries,
    # so S = 0 and Σw⁺ = 0 → 0.0.
    numbered = [c(POS, 0.5, n) for n in (11, 22, 33, 44, 55)]
    result = score_dimension(numbered, [1, 1, 1, 1, 1])
    assert (result.raw, result.positive_weight, result.score) == (0.0, 0.0, 0.0)
    assert result.problems


def test_key_numbers_select_the_criterion_not_the_position():
    # Criteria numbered 2 and 1 (in that order): entry 0 → number 1 (the penalty), entry 1 → number 2 (the bonus).
    # scores [1, 0]: S = −0.5 ; Σw⁺ = 1.0 → clamped 0.   scores [0, 1]: S = 1.0 → 100.
    crit = [c(POS, 1.0, 2), c(NEG, 0.5, 1)]
    assert score_dimension(crit, [1, 0]).score == 0.0
    assert score_dimension(crit, [0, 1]).score == 100.0


def test_duplicate_criterion_numbers_are_rejected():
    # A criterion without key_number stands for its position: numbered 2 then position 2 collide.
    with pytest.raises(ValueError, match="share the number 2"):
        score_dimension([c(POS, 1.0, 2), c(POS, 1.0)], [1, 1])
    # 2, 1, then position 3: no collision.
    assert score_dimension([c(POS, 1.0, 2), c(POS, 1.0, 1), c(POS, 1.0)], [1, 1, 1]).score == 100.0


def test_normalise():
    assert normalise(1.0, 2.0) == 50.0
    assert normalise(-1.0, 2.0) == 0.0
    assert normalise(1.0, 0.0) == 0.0
    assert normalise(-1.0, 0.0) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# score_task
# ---------------------------------------------------------------------------------------------------------------

RUBRIC = {
    "scientific": [c(POS, 1.0), c(POS, 0.5), c(NEG, 0.5)],
    "visual": [c(POS, 0.2), c(POS, 0.2)],
    "instruction": [c(POS, 1.0), c(NEG, 1.0)],
}


def test_task_overall_pools_raw_and_positive_weights():
    # scientific  [1,1,1]: S = 1.0 + 0.5 − 0.5 = 1.0 ; Σw⁺ = 1.5 → 66.67
    # visual      [1,0]  : S = 0.2              ; Σw⁺ = 0.4 → 50
    # instruction [0,1]  : S = −1.0             ; Σw⁺ = 1.0 → 0 (clamped)
    # overall: (1.0 + 0.2 − 1.0) / (1.5 + 0.4 + 1.0) · 100 = 0.2 / 2.9 · 100 = 6.90
    # — not the mean of the dimensions (38.9): the clamp applies after pooling, so the instruction penalty counts.
    result = score_task(index=7, level="Organ-level", rubric=RUBRIC,
                        judgement={"scientific": [1, 1, 1], "visual": [1, 0], "instruction": [0, 1]})
    assert result.included
    assert result.index == 7 and result.level == "Organ-level"
    assert result.dimensions == {
        "scientific": pytest.approx(100 / 1.5),
        "visual": pytest.approx(50.0),
        "instruction": 0.0,
    }
    assert result.overall == pytest.approx(0.2 / 2.9 * 100)
    assert result.malformed == ()


def test_task_overall_is_clamped_when_pooled_sum_is_negative():
    # scientific [0,0,1]: S = −0.5 ; visual [0,0]: 0 ; instruction [0,1]: −1.0 → pooled −1.5 / 2.9 < 0 → 0.
    result = score_task(index=1, level="Cellular-level", rubric=RUBRIC,
                        judgement={"scientific": [0, 0, 1], "visual": [0, 0], "instruction": [0, 1]})
    assert result.overall == 0.0
    assert result.dimensions == {"scientific": 0.0, "visual": 0.0, "instruction": 0.0}


def test_task_with_a_missing_dimension_is_left_out_but_still_reported():
    result = score_task(index=3, level="Organ-level", rubric=RUBRIC,
                        judgement={"scientific": [1, 1, 0], "visual": [1, 1]})
    assert not result.included
    assert result.overall is None
    assert result.dimensions == {"scientific": 100.0, "visual": 100.0, "instruction": None}
    assert result.malformed == ("instruction: no score list",)


def test_task_with_an_empty_list_is_left_out():
    result = score_task(index=4, level="Organ-level", rubric=RUBRIC,
                        judgement={"scientific": [1, 1, 0], "visual": [], "instruction": [1, 0]})
    assert not result.included and result.overall is None
    assert result.malformed == ("visual: empty score list",)


def test_task_malformed_messages_are_prefixed_with_the_dimension():
    # Malformed but included: the published numbers are still produced.
    # scientific [1,1,0,1] → the 4th entry is ignored: S = 1.5 / 1.5 → 100
    # visual [2, 1] → 2 counts as 0: S = 0.2 / 0.4 → 50
    # instruction [1] → only criterion 1 reached: S = 1.0 / 1.0 → 100
    # overall: (1.5 + 0.2 + 1.0) / (1.5 + 0.4 + 1.0) = 2.7 / 2.9 → 93.10
    result = score_task(index=9, level="Subcellular-level", rubric=RUBRIC,
                        judgement={"scientific": [1, 1, 0, 1], "visual": [2, 1], "instruction": [1]})
    assert result.included
    assert result.dimensions == {"scientific": 100.0, "visual": pytest.approx(50.0), "instruction": 100.0}
    assert result.overall == pytest.approx(2.7 / 2.9 * 100)
    assert result.malformed == (
        "scientific: 4 scores for 3 criteria",
        "visual: score 2 is not 0/1 (entry 1, counted as 0)",
        "instruction: 1 score for 2 criteria",
    )


def test_task_dimension_absent_from_rubric_scores_zero():
    rubric = {"scientific": RUBRIC["scientific"], "visual": RUBRIC["visual"]}
    result = score_task(index=5, level="Organ-level", rubric=rubric,
                        judgement={"scientific": [1, 1, 0], "visual": [1, 1], "instruction": [1]})
    # scientific 1.5/1.5, visual 0.4/0.4, instruction 0/0 → overall 1.9 / 1.9 = 100
    assert result.dimensions["instruction"] == 0.0
    assert result.overall == 100.0
    assert result.malformed == ("instruction: 1 score for 0 criteria",)


def test_score_task_is_keyword_only():
    with pytest.raises(TypeError):
        score_task(1, "Organ-level", RUBRIC, {})  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------------
# summarise_model
# ---------------------------------------------------------------------------------------------------------------


def _task(index, level, overall, dims=None, malformed=(), included=True):
    dims = dims or {d: overall for d in DIMENSIONS}
    return TaskResult(index=index, level=level, overall=overall if included else None,
                      dimensions=dims, malformed=malformed, included=included)


def test_summary_means_levels_and_dimensions():
    results = [
        _task(5, "Organ-level", 80.0, {"scientific": 60.0, "visual": 100.0, "instruction": 90.0}),
        _task(2, "Organ-level", 40.0, {"scientific": 20.0, "visual": 80.0, "instruction": 30.0},
              malformed=("visual: 6 scores for 5 criteria",)),
        _task(9, "Cellular-level", 50.0, {"scientific": 40.0, "visual": 60.0, "instruction": 30.0}),
        _task(3, "Subcellular-level", 0.0, {"scientific": 10.0, "visual": None, "instruction": 0.0},
              malformed=("visual: empty score list",), included=False),
        _task(7, "Unknown", 10.0, {"scientific": 0.0, "visual": 20.0, "instruction": 10.0}),
    ]
    summary = summarise_model(results)
    # four included tasks: (80 + 40 + 50 + 10) / 4 = 45
    assert summary.valid_tasks == 4
    assert summary.average == pytest.approx(45.0)
    # Organ (80 + 40) / 2 = 60 ; Cellular 50 ; Subcellular: its only task is left out → None ; "Unknown" in no level
    assert summary.levels == {"Organ-level": 60.0, "Cellular-level": 50.0, "Subcellular-level": None}
    # scientific (60 + 20 + 40 + 0) / 4 = 30 ; visual (100 + 80 + 60 + 20) / 4 = 65 ; instruction (90+30+30+10)/4 = 40
    assert summary.dimensions == {"scientific": 30.0, "visual": 65.0, "instruction": 40.0}
    # both malformed tasks, included or not, sorted
    assert summary.malformed_tasks == [2, 3]
    assert list(summary.levels) == list(LEVELS)
    assert list(summary.dimensions) == list(DIMENSIONS)


def test_summary_of_nothing():
    assert summarise_model([]) == ModelSummary(
        valid_tasks=0, average=None, levels={lv: None for lv in LEVELS},
        dimensions={d: None for d in DIMENSIONS}, malformed_tasks=[],
    )


def test_summary_accepts_a_generator():
    gen = (_task(i, "Organ-level", float(i)) for i in (1, 2, 3))
    assert summarise_model(gen).average == 2.0


# ---------------------------------------------------------------------------------------------------------------
# rubric_from_release_entry
# ---------------------------------------------------------------------------------------------------------------


def _flat(*triples):
    out = {}
    for number, s, w in triples:
        out.update({f"d{number}": f"criterion {number}", f"s{number}": s, f"w{number}": w})
    return out


def test_rubric_from_release_entry_orders_numerically_and_parses():
    entry = {
        "index": 1,
        "rubrics_scientific": dict(reversed(list(_flat((10, "+1", "1."), (2, "-1", 0.5), (1, "+1", "2")).items()))),
        "rubrics_visual": _flat((1, "+1", 1.0)),
        "rubrics_instruction": _flat((22, "+1", "0.2"), (11, "-1", "1.0")),
    }
    rubric = rubric_from_release_entry(entry)
    assert rubric == {
        "scientific": [c(POS, 2.0, 1), c(NEG, 0.5, 2), c(POS, 1.0, 10)],  # 2 before 10
        "visual": [c(POS, 1.0, 1)],
        "instruction": [c(NEG, 1.0, 11), c(POS, 0.2, 22)],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rubrics_visual": None}, "rubrics_visual"),
        ({"rubrics_visual": {**_flat((1, "+1", 1.0)), "x1": 1}}, "unexpected key"),
        ({"rubrics_visual": {"d1": "a", "s1": "+1"}}, "lacks s or w"),
        ({"rubrics_visual": _flat((1, "+2", 1.0))}, "polarity"),
        ({"rubrics_visual": _flat((1, "+1", "heavy"))}, "weight"),
    ],
)
def test_rubric_from_release_entry_rejects(change, message):
    entry = {"index": 1, **{f"rubrics_{d}": _flat((1, "+1", 1.0)) for d in DIMENSIONS}, **change}
    with pytest.raises(ValueError, match=message):
        rubric_from_release_entry(entry)


# ---------------------------------------------------------------------------------------------------------------
# Property-based tests
# ---------------------------------------------------------------------------------------------------------------

weights = st.one_of(st.sampled_from([0.0, 0.2, 0.5, 1.0]), st.floats(0, 3, allow_nan=False, allow_infinity=False))
criteria_lists = st.lists(st.builds(Criterion, polarity=st.sampled_from([POS, NEG]), weight=weights), max_size=7)
entries = st.sampled_from([0, 1, 0, 1, 2, -1, True, False, 1.0, 0.5, "1", None])
score_lists = st.lists(entries, min_size=1, max_size=9)
rubrics = st.fixed_dictionaries({d: criteria_lists for d in DIMENSIONS})
judgements = st.fixed_dictionaries({d: score_lists for d in DIMENSIONS})


@given(criteria_lists, st.one_of(score_lists, st.none(), st.just([]), st.text(max_size=3)))
def test_dimension_score_within_bounds(criteria, scores):
    score = score_dimension(criteria, scores).score
    assert score is None or 0.0 <= score <= 100.0


@given(rubrics, judgements)
def test_task_scores_within_bounds(rubric, judgement):
    result = score_task(index=1, level="Organ-level", rubric=rubric, judgement=judgement)
    assert result.included
    assert 0.0 <= result.overall <= 100.0
    assert all(0.0 <= s <= 100.0 for s in result.dimensions.values())


def _flip_cases(polarity):
    """A rubric, a judgement, and a (dimension, position) whose entry is 0 on a reached criterion of ``polarity``."""

    @st.composite
    def build(draw):
        rubric = draw(rubrics)
        judgement = {d: list(v) for d, v in draw(judgements).items()}
        dim = draw(st.sampled_from(DIMENSIONS))
        crit = draw(st.lists(st.builds(Criterion, polarity=st.sampled_from([POS, NEG]), weight=weights),
                             min_size=1, max_size=7))
        position = draw(st.integers(0, len(crit) - 1))
        crit[position] = Criterion(polarity=polarity, weight=draw(weights))
        rubric[dim] = crit
        scores = judgement[dim]
        if len(scores) <= position:
            scores.extend([0] * (position + 1 - len(scores)))
        scores[position] = 0
        return rubric, judgement, dim, position

    return build()


def _flipped(judgement, dim, position):
    flipped = {d: list(v) for d, v in judgement.items()}
    flipped[dim][position] = 1
    return flipped


@given(_flip_cases(NEG))
def test_penalty_present_never_raises_a_score(case):
    rubric, judgement, dim, position = case
    before = score_task(index=1, level="Organ-level", rubric=rubric, judgement=judgement)
    after = score_task(index=1, level="Organ-level", rubric=rubric, judgement=_flipped(judgement, dim, position))
    assert after.overall <= before.overall
    assert after.dimensions[dim] <= before.dimensions[dim]


@given(_flip_cases(POS))
def test_positive_met_never_lowers_a_score(case):
    rubric, judgement, dim, position = case
    before = score_task(index=1, level="Organ-level", rubric=rubric, judgement=judgement)
    after = score_task(index=1, level="Organ-level", rubric=rubric, judgement=_flipped(judgement, dim, position))
    assert after.overall >= before.overall
    assert after.dimensions[dim] >= before.dimensions[dim]


# An independent re-statement of the published calculation, working on the release's flat dicts directly
# (key numbers taken from the s-keys, weight via float(), sign "+1"/"-1"), used as an oracle for exact equality.
def _published_dimension(flat, scores):
    numbers = {int(k[1:]) for k in flat if k.startswith("s") and k[1:].isdigit()}
    raw = top = 0.0
    for i, entry in enumerate(scores):
        if i + 1 in numbers:
            sign = 1 if flat[f"s{i + 1}"] == "+1" else -1
            weight = float(flat[f"w{i + 1}"])
            if entry == 1:
                raw += sign * weight
            if sign > 0:
                top += weight
    return raw, top


def _published_task(entry, judgement):
    dims, raw_sum, top_sum = [], 0.0, 0.0
    for d in DIMENSIONS:
        scores = judgement.get(d)
        if not scores:
            return None
        raw, top = _published_dimension(entry[f"rubrics_{d}"], scores)
        dims.append(max(0.0, raw / top * 100) if top > 0 else 0.0)
        raw_sum += raw
        top_sum += top
    return (max(0.0, raw_sum / top_sum * 100) if top_sum > 0 else 0.0), dims


key_numbers = st.lists(st.sampled_from([1, 2, 3, 4, 5, 6, 11, 22]), unique=True, max_size=6)
flat_rubrics = key_numbers.flatmap(
    lambda nums: st.tuples(*[
        st.tuples(st.just(n), st.sampled_from(["+1", "-1"]), st.sampled_from(["1.0", "1.", "2", 1.0, 0.5, 0.2, 0.0]))
        for n in nums
    ]).map(lambda triples: _flat(*triples))
)
release_entries = st.fixed_dictionaries({f"rubrics_{d}": flat_rubrics for d in DIMENSIONS})
maybe_judgements = st.fixed_dictionaries({d: st.one_of(score_lists, st.just([]), st.none()) for d in DIMENSIONS})


@given(release_entries, maybe_judgements)
def test_matches_the_published_calculation_exactly(entry, judgement):
    result = score_task(index=1, level="Organ-level", rubric=rubric_from_release_entry(entry), judgement=judgement)
    expected = _published_task(entry, judgement)
    if expected is None:
        assert not result.included and result.overall is None
    else:
        overall, dims = expected
        assert result.included
        assert result.overall == overall  # bit for bit, not approx
        assert [result.dimensions[d] for d in DIMENSIONS] == dims


# ---------------------------------------------------------------------------------------------------------------
# The release data
# ---------------------------------------------------------------------------------------------------------------

PROJECT_COPY = Path(__file__).resolve().parents[2] / "rubrics" / "fixtures" / "microworldbench"
SHARED_COPY = Path("/work/shared/data/microworldbench")


def release_file(name: str) -> Path:
    """The project's own copy of the release, else the shared one; skip when neither is there."""
    for folder in (PROJECT_COPY, SHARED_COPY):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} not found in {PROJECT_COPY} or {SHARED_COPY}")


@functools.cache
def _load(name: str):
    return json.loads(release_file(name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def release():
    """[(index, level, raw entry, rubric)] for every task of the normalised release."""
    levels = {t["index"]: t["final_label"] for t in _load("finaltasks.json")}
    return [(e["index"], levels[e["index"]], e, rubric_from_release_entry(e)) for e in _load("MWBenchRubrics_norm.json")]


def _has_weighted_penalty(criteria, n_entries):
    reached = {cr.key_number for cr in criteria} & set(range(1, n_entries + 1))
    return any(cr.polarity < 0 and cr.weight > 0 and cr.key_number in reached for cr in criteria)


def test_release_shape(release):
    assert len(release) == 459
    counts = {(len(r["scientific"]), len(r["visual"]), len(r["instruction"])) for _, _, _, r in release}
    assert counts == {(5, 5, 5), (5, 5, 4)}
    short = [i for i, _, _, r in release if len(r["instruction"]) == 4]
    assert short == [277]
    weights_seen = {cr.weight for _, _, _, r in release for crit in r.values() for cr in crit}
    assert weights_seen == {0.0, 0.2, 0.5, 1.0}
    assert sorted(lv for _, lv, _, _ in release) == sorted(LEVELS[0:1] * 189 + LEVELS[1:2] * 238 + LEVELS[2:] * 32)


def _odd_dimensions(rubric):
    """The dimensions whose criteria are numbered 11, 22, ... rather than 1..n."""
    return [d for d in DIMENSIONS if [cr.key_number for cr in rubric[d]] != list(range(1, len(rubric[d]) + 1))]


def test_release_dimensions_numbered_11_to_55(release):
    odd = {i: _odd_dimensions(r) for i, _, _, r in release if _odd_dimensions(r)}
    assert len(odd) == 55  # 55 tasks, one such dimension each
    assert all(len(dims) == 1 for dims in odd.values())
    for i, _, _, r in release:
        for d in odd.get(i, []):
            assert [cr.key_number for cr in r[d]] == [11, 22, 33, 44, 55]
    assert sorted(i for i, dims in odd.items() if dims == ["scientific"]) == [60, 325, 330, 453]
    assert sorted(i for i, dims in odd.items() if dims == ["visual"]) == [319]
    assert sum(dims == ["instruction"] for dims in odd.values()) == 50


def test_release_all_ones(release):
    """All ones, one per criterion: 100 exactly when no reached penalty carries weight; below 100 otherwise."""
    results = []
    for index, level, _, rubric in release:
        judgement = {d: [1] * len(rubric[d]) for d in DIMENSIONS}
        result = score_task(index=index, level=level, rubric=rubric, judgement=judgement)
        results.append(result)
        assert result.included
        penalised = any(_has_weighted_penalty(rubric[d], len(rubric[d])) for d in DIMENSIONS)
        if penalised:
            assert result.overall < 100.0
        else:
            assert result.overall == 100.0
    summary = summarise_model(results)
    assert summary.valid_tasks == 459
    # only the 11..55-numbered tasks are flagged: the lists themselves are well formed
    assert summary.malformed_tasks == [i for i, _, _, r in release if _odd_dimensions(r)]


def test_release_ideal_judgement(release):
    """1 on every bonus, 0 on every penalty: 100 everywhere, except the one dimension of the 55 tasks whose
    criteria the published walk cannot reach (0.0, as published); their overall pools the other two dimensions."""
    results = []
    for index, level, _, rubric in release:
        judgement = {d: [1 if cr.polarity > 0 else 0 for cr in rubric[d]] for d in DIMENSIONS}
        result = score_task(index=index, level=level, rubric=rubric, judgement=judgement)
        results.append(result)
        assert result.overall == 100.0
        odd = _odd_dimensions(rubric)
        assert result.dimensions == {d: 0.0 if d in odd else 100.0 for d in DIMENSIONS}
    summary = summarise_model(results)
    assert summary.average == 100.0
    assert summary.levels == {lv: 100.0 for lv in LEVELS}
    # instruction: 50 tasks at 0 ; scientific: 4 ; visual: 1
    assert summary.dimensions == {
        "scientific": pytest.approx(100.0 * 455 / 459),
        "visual": pytest.approx(100.0 * 458 / 459),
        "instruction": pytest.approx(100.0 * 409 / 459),
    }


def test_release_all_zeros(release):
    for index, level, _, rubric in release:
        result = score_task(index=index, level=level, rubric=rubric,
                            judgement={d: [0] * len(rubric[d]) for d in DIMENSIONS})
        assert result.overall == 0.0
        assert result.malformed == tuple(
            f"{d}: criteria numbered 11, 22, 33, 44, 55, not 1-5; no score entry reaches 11, 22, 33, 44, 55"
            for d in _odd_dimensions(rubric)
        )


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_release_matches_the_published_calculation(release, data):
    index, level, entry, rubric = data.draw(st.sampled_from(release))
    judgement = data.draw(maybe_judgements)
    result = score_task(index=index, level=level, rubric=rubric, judgement=judgement)
    expected = _published_task(entry, judgement)
    assert (result.overall, [result.dimensions[d] for d in DIMENSIONS]) == (
        expected if expected is not None else (None, [score_dimension(rubric[d], judgement[d]).score
                                                      for d in DIMENSIONS])
    )
