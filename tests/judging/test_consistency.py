"""Consistency maths against scikit-learn / SciPy / statsmodels on fixed data, and its database side and page."""
from __future__ import annotations

import math

import pytest
from django.urls import reverse
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.proportion import proportion_confint

from judging import consistency
from judging.consistency import EXPERT, JUDGE
from judging.models import HumanScore, Judgement

# ------------------------------------------------------------------------------------------------ plain maths

J1, J2 = (JUDGE, "gpt-judge"), (JUDGE, "other-judge")
E1, E2, E3 = (EXPERT, "ann"), (EXPERT, "bob"), (EXPERT, "cy")
JUDGE_LABELS = [1, 0, 1, 1, 0, 0, 1, 1]
ANN_LABELS = [1, 0, 0, 1, 0, 1, 1, 1]
BOB_LABELS = [1, 1, 0, 1, 0, 1, 1, 0]


def fixed_triples():
    triples = []
    for item, (j, a, b) in enumerate(zip(JUDGE_LABELS, ANN_LABELS, BOB_LABELS)):
        triples += [(J1, item, j), (E1, item, a), (E2, item, b)]
    triples.append((E3, 99, 1))  # an item only one rater saw: no pair
    return triples


def test_pooled_agreement_matches_sklearn():
    pairs = list(zip(JUDGE_LABELS, ANN_LABELS))
    result = consistency.pooled_agreement(pairs)
    assert result.n == 8
    assert result.percent == pytest.approx(100 * 6 / 8)
    assert result.kappa == pytest.approx(cohen_kappa_score(JUDGE_LABELS, ANN_LABELS))
    # by hand: po = 6/8; judge 1s 5/8, ann 1s 5/8 -> pe = 25/64 + 9/64 = 34/64; kappa = (48-34)/(64-34) = 14/30
    assert result.kappa == pytest.approx(14 / 30)


def test_undefined_kappa_is_none_and_empty_is_empty():
    assert consistency.pooled_agreement([(1, 1), (1, 1)]).kappa is None
    assert consistency.pooled_agreement([(1, 1), (1, 1)]).percent == 100.0
    assert consistency.pooled_agreement([]) == consistency.Agreement(n=0, percent=None, kappa=None)


def test_dimension_agreement_pools_the_right_pairs():
    result = consistency.dimension_agreement(fixed_triples())
    judge_x = JUDGE_LABELS * 2
    expert_y = ANN_LABELS + BOB_LABELS
    pairs = sorted(zip(JUDGE_LABELS, ANN_LABELS)) + sorted(zip(JUDGE_LABELS, BOB_LABELS))
    assert result["judge_vs_expert"].n == 16
    expected = consistency.pooled_agreement(pairs)
    assert result["judge_vs_expert"].kappa == pytest.approx(cohen_kappa_score(judge_x, expert_y)) == expected.kappa
    assert result["judge_vs_expert"].percent == pytest.approx(
        100 * sum(a == b for a, b in zip(judge_x, expert_y)) / 16)
    assert result["expert_vs_expert"].n == 8
    assert result["expert_vs_expert"].kappa == pytest.approx(cohen_kappa_score(ANN_LABELS, BOB_LABELS))
    assert result["judge_vs_judge"].n == 0 and result["judge_vs_judge"].kappa is None


def test_judge_vs_judge_and_per_judge_report():
    triples = fixed_triples() + [(J2, item, 1 - j) for item, j in enumerate(JUDGE_LABELS)]
    report = consistency.agreement_report({"visual": triples})
    assert report["dimensions"]["visual"]["judge_vs_judge"]["n"] == 8
    assert report["dimensions"]["visual"]["judge_vs_judge"]["percent"] == 0.0
    assert report["dimensions"]["visual"]["judge_vs_expert"]["n"] == 32
    own = report["judges"]["gpt-judge"]["visual"]
    assert own["n"] == 16
    assert own["kappa"] == pytest.approx(cohen_kappa_score(JUDGE_LABELS * 2, ANN_LABELS + BOB_LABELS))


def test_duplicate_rating_and_bad_label_refused():
    with pytest.raises(ValueError):
        consistency.rating_pairs([(E1, 1, 1), (E1, 1, 0)], EXPERT, EXPERT)
    with pytest.raises(ValueError):
        consistency.rating_pairs([(E1, 1, 2)], EXPERT, EXPERT)


def test_ranking_correlation_matches_scipy():
    x = {"A": 50.0, "B": 43.5, "C": 23.2, "D": 77.2, "E": 49.4, "only-x": 1.0}
    y = {"A": 3.0, "B": 2.5, "C": 1.0, "D": 3.5, "E": 2.8, "only-y": 0.0, "none": None}
    result = consistency.ranking_correlation(x, y)
    models = ["A", "B", "C", "D", "E"]
    assert result.models == models
    rho, tau = spearmanr([x[m] for m in models], [y[m] for m in models]), kendalltau(
        [x[m] for m in models], [y[m] for m in models])
    assert result.spearman == pytest.approx(rho.statistic) and result.spearman_p == pytest.approx(rho.pvalue)
    assert result.kendall == pytest.approx(tau.statistic) and result.kendall_p == pytest.approx(tau.pvalue)
    assert result.spearman == pytest.approx(1.0) and result.kendall == pytest.approx(1.0)  # same order
    short = consistency.ranking_correlation({"A": 1.0}, {"A": 2.0})
    assert short.spearman is None and short.kendall is None
    flat = consistency.ranking_correlation({"A": 1.0, "B": 1.0}, {"A": 1.0, "B": 2.0})
    assert flat.spearman is None  # constant input: NaN -> None


def _wilson_by_hand(count, n, z=1.959963984540054):
    p = count / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_preference_ratios_with_wilson_intervals():
    outcomes = ([("Organ-level", "M1", "M2", "M1")] * 5 + [("Organ-level", "M2", "M1", "M2")] * 2
                + [("Cellular-level", "M1", "M2", None)] * 3 + [("Cellular-level", "M1", "M3", "M3")])
    result = consistency.preference_ratios(outcomes)
    assert list(result) == ["all", "Cellular-level", "Organ-level"]
    pair = next(r for r in result["all"] if (r["first"], r["second"]) == ("M1", "M2"))
    assert pair["n"] == 10
    assert (pair["first_wins"]["count"], pair["second_wins"]["count"], pair["ties"]["count"]) == (5, 2, 3)
    assert pair["first_wins"]["ratio"] == 0.5
    low, high = proportion_confint(5, 10, alpha=0.05, method="wilson")
    assert (pair["first_wins"]["ci_low"], pair["first_wins"]["ci_high"]) == pytest.approx((low, high))
    assert (low, high) == pytest.approx(_wilson_by_hand(5, 10))
    organ = result["Organ-level"][0]
    assert (organ["n"], organ["first_wins"]["count"], organ["second_wins"]["count"]) == (7, 5, 2)
    assert (organ["second_wins"]["ci_low"], organ["second_wins"]["ci_high"]) == pytest.approx(_wilson_by_hand(2, 7))
    cellular = {(r["first"], r["second"]): r for r in result["Cellular-level"]}
    assert cellular[("M1", "M3")]["second_wins"]["ratio"] == 1.0
    assert cellular[("M1", "M2")]["ties"]["ratio"] == 1.0
    with pytest.raises(ValueError):
        consistency.preference_ratios([("Organ-level", "M1", "M2", "M9")])


# ---------------------------------------------------------------------------------------------- database side


@pytest.fixture
def judged(tasks, expert, expert2):
    """Alpha and Beta judged on tasks 1 and 3 by judge-1 (and Alpha also by judge-2); experts scored Alpha's task-1
    video on every criterion of the current (= released) rubric."""
    from tests.judging.test_pages import make_model_run

    alpha = make_model_run("Alpha", [tasks[0], tasks[2]], model_no=1)
    make_model_run("Beta", [tasks[0], tasks[2]], model_no=2)
    second = make_model_run("Alpha", [tasks[0]], model_no=1, judge_model="judge-2")
    Judgement.objects.filter(run=second, dimension="visual").update(scores=[0, 0, 0, 0, 0])
    video = alpha.judgements.first().video
    criteria = list(tasks[0].current_rubric.criteria.order_by("dimension", "position"))
    for n, criterion in enumerate(criteria):
        HumanScore.objects.create(expert=expert, video=video, criterion=criterion, score=n % 2)
        HumanScore.objects.create(expert=expert2, video=video, criterion=criterion, score=1)
    return {"video": video, "criteria": criteria, "alpha": alpha}


@pytest.fixture
def tasks(db, tmp_path):
    from rubrics.models import BenchmarkTask
    from tests.helpers import import_release_subset

    import_release_subset(tmp_path, (1, 2, 3, 277))
    return list(BenchmarkTask.objects.select_related("current_rubric").order_by("index"))


def test_triples_from_db_pair_judge_and_experts_on_the_same_criteria(judged):
    from tests.judging.test_pages import pattern

    triples = consistency.rating_triples_from_db()
    video, criteria = judged["video"], judged["criteria"]
    scientific = [c for c in criteria if c.dimension == "scientific"]
    judge_1 = {item: label for rater, item, label in triples["scientific"] if rater == (JUDGE, "judge-1")}
    assert [judge_1[(video.pk, c.pk)] for c in scientific] == pattern(1, 1, "scientific", 5)
    experts = [(rater, label) for rater, item, label in triples["scientific"]
               if rater[0] == EXPERT and item == (video.pk, scientific[0].pk)]
    assert sorted(experts) == [((EXPERT, "expert1"), criteria.index(scientific[0]) % 2), ((EXPERT, "expert2"), 1)]

    report = consistency.consistency_from_db()
    # judge-1 vs experts on the visual dimension, recomputed with sklearn
    visual = [c for c in criteria if c.dimension == "visual"]
    judge_visual = pattern(1, 1, "visual", 5)
    e1 = [criteria.index(c) % 2 for c in visual]
    own = report["judges"]["judge-1"]["visual"]
    assert own["n"] == 10
    expected = cohen_kappa_score(judge_visual * 2, e1 + [1] * 5)
    assert own["kappa"] == (None if math.isnan(expected) else pytest.approx(expected))
    assert own["percent"] == pytest.approx(
        100 * sum(a == b for a, b in zip(judge_visual * 2, e1 + [1] * 5)) / 10)
    # judge-2 differs from judge-1 on visual only where judge-1 said 1
    assert report["dimensions"]["visual"]["judge_vs_judge"]["n"] == 5
    assert report["dimensions"]["visual"]["judge_vs_judge"]["percent"] == pytest.approx(
        100 * judge_visual.count(0) / 5)
    assert report["dimensions"]["scientific"]["expert_vs_expert"]["n"] == 5
    assert report["human_model_scores"].keys() == {"Alpha"}
    assert {tuple(r["between"]) for r in report["rankings"]} == {
        ("judge:judge-1", "experts"), ("judge:judge-2", "experts"), ("judge:judge-1", "judge:judge-2")}


def test_consistency_page_and_json(client, researcher, judged):
    client.force_login(researcher)
    html = client.get(reverse("judging-consistency")).content.decode()
    assert 'id="agreement-table"' in html and "consistency-chart-data" in html and "judge-2" in html
    data = client.get(reverse("judging-consistency-json")).json()
    assert set(data["dimensions"]) == {"scientific", "visual", "instruction"}
    assert data["dimensions"]["visual"]["judge_vs_judge"]["n"] == 5
