"""Tests for inter-rater agreement (plain Python, no database)."""
import json
import math
import time
from itertools import combinations

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from annotation.agreement import (
    AlphaResult,
    FleissResult,
    PairKappa,
    _kappa_from_confusion,
    agreement_report,
    fleiss,
    krippendorff_alpha,
    pairwise_cohen,
    percent_agreement,
)

K, R = "keep", "reject"

# ---------------------------------------------------------------------------------------------------------
# Hand-checked example: 3 experts, 10 items; C did not rate items 9 and 10.
#
#   item  1  2  3  4  5  6  7  8  9  10
#   A     K  K  K  K  K  K  R  R  R  R
#   B     K  K  K  K  K  R  R  R  K  R
#   C     K  K  K  R  K  K  R  K  -  -
#
# Cohen A-B (10 shared items): agree on 1-5, 7, 8, 10 -> po = 8/10 = 0.8.
#   A: 6 K / 4 R, B: 6 K / 4 R -> pe = 0.6*0.6 + 0.4*0.4 = 0.52.
#   kappa = (0.8 - 0.52) / (1 - 0.52) = 0.28 / 0.48 = 7/12 = 0.58333.
# Cohen A-C (items 1-8): agree on 1, 2, 3, 5, 6, 7 -> po = 6/8 = 0.75.
#   A: 6 K / 2 R, C: 6 K / 2 R -> pe = 0.75^2 + 0.25^2 = 0.625.
#   kappa = (0.75 - 0.625) / 0.375 = 1/3.
# Cohen B-C (items 1-8): agree on 1, 2, 3, 5, 7 -> po = 5/8.
#   B: 5 K / 3 R, C: 6 K / 2 R -> pe = (5*6 + 3*2) / 64 = 36/64.
#   kappa = (40/64 - 36/64) / (28/64) = 4/28 = 1/7.
# Percent agreement (share of agreeing pairs per item):
#   items 1, 2, 3, 5, 7, 10 -> 1; items 4, 6, 8 (2 vs 1) -> 1/3 each; item 9 (R vs K) -> 0.
#   mean = (6 + 3 * 1/3 + 0) / 10 = 0.7 -> 70 %.
# Fleiss (complete panels of 3 = items 1-8), counts (K, R):
#   items 1, 2, 3, 5 -> (3,0); item 7 -> (0,3); items 4, 6 -> (2,1); item 8 -> (1,2).
#   P_i = (sum_j n_ij^2 - 3) / (3 * 2): 1 for the unanimous items, (4 + 1 - 3) / 6 = 1/3 for the others.
#   P_bar = (5 * 1 + 3 * 1/3) / 8 = 6/8 = 0.75.
#   p_K = (3+3+3+2+3+2+0+1) / 24 = 17/24, p_R = 7/24, Pe = (17^2 + 7^2) / 24^2 = 338/576.
#   kappa = (432/576 - 338/576) / (1 - 338/576) = 94/238 = 47/119 = 0.39496.
# Krippendorff alpha (nominal, all 10 items): each unit with m values adds its ordered value pairs
# weighted 1 / (m - 1) to the coincidence matrix o.
#   o_KK: items 1, 2, 3, 5 (3 K: 6 ordered pairs / 2 = 3 each) = 12, items 4, 6 (2 K: 2 / 2 = 1 each) = 2 -> 14
#   o_RR: item 7 (3 R) = 3, item 8 (2 R) = 1, item 10 (2 R, m = 2) = 2 -> 6
#   o_KR = o_RK: items 4, 6, 8 (2 * 1 ordered K-R pairs, weight 1/2) = 1 each -> 3,
#                item 9 (m = 2) = 1 -> 4
#   n = 14 + 6 + 4 + 4 = 28 pairable values, n_K = 14 + 4 = 18, n_R = 6 + 4 = 10.
#   alpha = 1 - (n - 1) * (o_KR + o_RK) / (n_K * n_R + n_R * n_K) = 1 - 27 * 8 / 360 = 0.4.
# ---------------------------------------------------------------------------------------------------------
HAND = {
    "A": "KKKKKKRRRR",
    "B": "KKKKKRRRKR",
    "C": "KKKRKKRK",
}


def hand_ratings():
    return [
        (rater, item + 1, K if code == "K" else R)
        for rater, codes in HAND.items()
        for item, code in enumerate(codes)
    ]


def test_hand_example_pairwise():
    pairs = pairwise_cohen(hand_ratings(), bootstrap=0)
    by_pair = {(p.rater_a, p.rater_b): p for p in pairs}
    assert list(by_pair) == [("A", "B"), ("A", "C"), ("B", "C")]
    ab, ac, bc = by_pair[("A", "B")], by_pair[("A", "C")], by_pair[("B", "C")]
    assert ab.n_items == 10 and ac.n_items == 8 and bc.n_items == 8
    assert ab.kappa == pytest.approx(7 / 12)
    assert ac.kappa == pytest.approx(1 / 3)
    assert bc.kappa == pytest.approx(1 / 7)
    assert ab.percent_agreement == pytest.approx(80.0)
    assert ac.percent_agreement == pytest.approx(75.0)
    assert bc.percent_agreement == pytest.approx(62.5)
    assert ab.ci_low is None and ab.ci_high is None  # bootstrap=0


def test_hand_example_percent_fleiss_alpha():
    assert percent_agreement(hand_ratings()) == (10, pytest.approx(70.0))
    f = fleiss(hand_ratings(), bootstrap=0)
    assert f.n_items == 8 and f.n_raters_per_item == 3
    assert f.kappa == pytest.approx(47 / 119)
    a = krippendorff_alpha(hand_ratings(), bootstrap=0)
    assert a.n_items == 10 and a.n_raters == 3
    assert a.alpha == pytest.approx(0.4)


def test_hand_example_explicit_panel_of_two():
    # Items 9 and 10 were rated by A and B only: (R, K) and (R, R).
    # P_bar = (0 + 1) / 2 = 0.5; p_K = 1/4, p_R = 3/4, Pe = 10/16; kappa = (8/16 - 10/16) / (6/16) = -1/3.
    f = fleiss(hand_ratings(), panel_size=2, bootstrap=0)
    assert f.n_items == 2 and f.n_raters_per_item == 2
    assert f.kappa == pytest.approx(-1 / 3)


# ---------------------------------------------------------------------------------------------------------
# Equality with the libraries on fixed data with missing ratings and three categories.


def random_ratings(seed=7, n_raters=5, n_items=60, labels=("a", "b", "c"), p_missing=0.3):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(labels), n_items)
    ratings = []
    for r in range(n_raters):
        for i in range(n_items):
            if rng.random() < p_missing:
                continue
            label = truth[i] if rng.random() < 0.7 else rng.integers(0, len(labels))
            ratings.append((f"r{r}", f"item{i:03d}", labels[label]))
    return ratings


def reference_matrix(ratings):
    raters = sorted({r for r, _, _ in ratings})
    items = sorted({i for _, i, _ in ratings})
    cats = sorted({v for _, _, v in ratings})
    m = np.full((len(raters), len(items)), np.nan)
    for r, i, v in ratings:
        m[raters.index(r), items.index(i)] = cats.index(v)
    return raters, items, cats, m


def test_pairwise_matches_sklearn():
    ratings = random_ratings()
    raters, _, _, m = reference_matrix(ratings)
    pairs = pairwise_cohen(ratings, bootstrap=0)
    assert len(pairs) == len(list(combinations(raters, 2)))
    for p in pairs:
        a, b = m[raters.index(p.rater_a)], m[raters.index(p.rater_b)]
        both = ~np.isnan(a) & ~np.isnan(b)
        assert p.n_items == both.sum()
        assert p.kappa == pytest.approx(cohen_kappa_score(a[both], b[both]))
        assert p.percent_agreement == pytest.approx(100 * np.mean(a[both] == b[both]))


def test_fleiss_matches_statsmodels():
    ratings = random_ratings(p_missing=0.15)
    _, _, cats, m = reference_matrix(ratings)
    counts = (~np.isnan(m)).sum(axis=0)
    sizes, freq = np.unique(counts[counts >= 2], return_counts=True)
    panel = int(sizes[np.argmax(freq)])
    rows = [sorted(m[:, j][~np.isnan(m[:, j])]) for j in range(m.shape[1]) if counts[j] == panel]
    table, _ = aggregate_raters(np.array(rows, dtype=int), n_cat=len(cats))
    result = fleiss(ratings, bootstrap=0)
    assert result.n_raters_per_item == panel
    assert result.n_items == len(rows)
    assert result.kappa == pytest.approx(fleiss_kappa(table, method="fleiss"))


def test_alpha_matches_krippendorff():
    ratings = random_ratings()
    _, _, _, m = reference_matrix(ratings)
    expected = krippendorff.alpha(reliability_data=m, level_of_measurement="nominal")
    result = krippendorff_alpha(ratings, bootstrap=0)
    assert result.alpha == pytest.approx(expected)
    assert result.n_items == int(((~np.isnan(m)).sum(axis=0) >= 2).sum())


def test_alpha_value_counts_path_matches_reliability_path():
    # The bootstrap feeds the library value counts; check that input form gives the same alpha.
    from annotation.agreement import _table

    table = _table(random_ratings())
    expected = krippendorff.alpha(reliability_data=table.matrix, level_of_measurement="nominal")
    got = krippendorff.alpha(value_counts=table.item_counts(), level_of_measurement="nominal")
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_vectorised_kappa_matches_sklearn(k):
    rng = np.random.default_rng(k)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        x = rng.integers(0, k, n)
        y = np.where(rng.random(n) < 0.6, x, rng.integers(0, k, n))
        confusion = np.bincount(x * k + y, minlength=k * k).reshape(k, k)
        expected = cohen_kappa_score(x, y) if len(set(x) | set(y)) > 1 else np.nan
        got = _kappa_from_confusion(confusion)
        if np.isnan(expected):
            assert np.isnan(got)
        else:
            assert got == pytest.approx(expected)


def test_vectorised_kappa_stack_and_undefined():
    stack = np.array([[[5, 0], [0, 0]], [[3, 1], [1, 3]], [[0, 4], [4, 0]]])
    got = _kappa_from_confusion(stack)
    assert np.isnan(got[0])  # both raters always "0": undefined
    assert got[1] == pytest.approx(0.5)
    assert got[2] == pytest.approx(-1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["x", "y", "z"])),
        min_size=2,
        max_size=30,
    )
)
def test_pairwise_matches_sklearn_property(labels):
    ratings = [("A", i, a) for i, (a, _) in enumerate(labels)] + [("B", i, b) for i, (_, b) in enumerate(labels)]
    (pair,) = pairwise_cohen(ratings, bootstrap=0)
    a = [x for x, _ in labels]
    b = [y for _, y in labels]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = cohen_kappa_score(a, b)
    if math.isnan(expected):
        assert pair.kappa is None
    else:
        assert pair.kappa == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------
# Missing data


def test_pairs_without_shared_items_are_left_out():
    ratings = [("A", 1, K), ("B", 1, K), ("C", 2, R), ("D", 2, R), ("A", 3, R), ("B", 3, K)]
    pairs = pairwise_cohen(ratings, bootstrap=0)
    assert [(p.rater_a, p.rater_b) for p in pairs] == [("A", "B"), ("C", "D")]
    ab, cd = pairs
    assert ab.n_items == 2 and ab.kappa == pytest.approx(0.0)  # K/K and R/K: po 0.5, pe 0.5
    assert cd.n_items == 1 and cd.kappa is None and cd.percent_agreement == 100.0


def test_single_rated_items_do_not_count():
    ratings = hand_ratings() + [("A", 11, K), ("B", 12, R), ("C", 13, K)]
    assert percent_agreement(ratings) == (10, pytest.approx(70.0))
    alpha = krippendorff_alpha(ratings, bootstrap=0)
    assert alpha.n_items == 10 and alpha.alpha == pytest.approx(0.4)
    assert fleiss(ratings, bootstrap=0).kappa == pytest.approx(47 / 119)
    report = agreement_report(ratings, bootstrap=0)
    assert report["n_items"] == 13 and report["n_ratings"] == 31


def test_alpha_counts_only_raters_of_counted_items():
    ratings = [("A", 1, K), ("B", 1, R), ("A", 2, R), ("B", 2, R), ("Z", 3, K)]
    result = krippendorff_alpha(ratings, bootstrap=0)
    assert result.n_items == 2 and result.n_raters == 2


def test_fleiss_panel_choice():
    # Two items rated by 2 raters, two by 3, one by 1: tie between 2 and 3 goes to the larger panel.
    ratings = [
        ("A", 1, K), ("B", 1, K),
        ("A", 2, R), ("B", 2, K),
        ("A", 3, K), ("B", 3, K), ("C", 3, R),
        ("A", 4, R), ("B", 4, R), ("C", 4, R),
        ("C", 5, K),
    ]
    assert fleiss(ratings, bootstrap=0).n_raters_per_item == 3
    assert fleiss(ratings, bootstrap=0).n_items == 2
    assert fleiss(ratings, panel_size=2, bootstrap=0).n_items == 2
    empty = fleiss(ratings, panel_size=4, bootstrap=0)
    assert empty == FleissResult(0, 4, None, None, None)
    with pytest.raises(ValueError, match="panel_size"):
        fleiss(ratings, panel_size=1)


# ---------------------------------------------------------------------------------------------------------
# Degenerate cases


def test_empty_input():
    assert pairwise_cohen([]) == []
    assert fleiss([]) == FleissResult(0, None, None, None, None)
    assert krippendorff_alpha([]) == AlphaResult(0, 0, None, None, None)
    assert percent_agreement([]) == (0, None)
    report = agreement_report([])
    assert report["n_ratings"] == 0 and report["raters"] == [] and report["pairwise"] == []
    json.dumps(report, allow_nan=False)


def test_one_rater():
    ratings = [("A", i, K if i % 2 else R) for i in range(5)]
    assert pairwise_cohen(ratings) == []
    assert fleiss(ratings).kappa is None
    assert krippendorff_alpha(ratings) == AlphaResult(0, 0, None, None, None)
    assert percent_agreement(ratings) == (0, None)


def test_one_item():
    ratings = [("A", 1, K), ("B", 1, R), ("C", 1, K)]
    (ab, ac, bc) = pairwise_cohen(ratings)
    assert ab.n_items == 1 and ab.kappa is None and ab.percent_agreement == 0.0
    assert ac.kappa is None and ac.percent_agreement == 100.0
    assert percent_agreement(ratings) == (1, pytest.approx(100 / 3))
    f = fleiss(ratings, bootstrap=50)
    assert f.n_items == 1 and f.kappa == pytest.approx(fleiss_kappa(np.array([[2, 1]]), method="fleiss"))
    a = krippendorff_alpha(ratings, bootstrap=50)
    # One unit (K, K, R): o_KK = 1, o_KR = o_RK = 1, n = 3 -> alpha = 1 - 2 * 2 / (2 * 2 * 1) = 0.
    assert a.n_items == 1 and a.alpha == pytest.approx(0.0)
    assert a.alpha == pytest.approx(
        krippendorff.alpha(reliability_data=[[0], [1], [0]], level_of_measurement="nominal")
    )
    json.dumps(agreement_report(ratings, bootstrap=50), allow_nan=False)


def test_all_same_label_is_undefined_not_nan():
    ratings = [(r, i, K) for r in "ABC" for i in range(6)]
    pairs = pairwise_cohen(ratings)
    assert all(p.kappa is None and p.ci_low is None and p.percent_agreement == 100.0 for p in pairs)
    assert fleiss(ratings) == FleissResult(6, 3, None, None, None)
    assert krippendorff_alpha(ratings) == AlphaResult(6, 3, None, None, None)
    assert percent_agreement(ratings) == (6, 100.0)
    report = agreement_report(ratings)
    assert report["categories"] == [K]
    json.dumps(report, allow_nan=False)


def test_two_categories_but_counted_items_use_one():
    # "reject" only occurs on a single-rated item: alpha over the counted items is undefined.
    ratings = [("A", 1, K), ("B", 1, K), ("A", 2, K), ("B", 2, K), ("A", 3, R)]
    assert krippendorff_alpha(ratings).alpha is None
    assert fleiss(ratings).kappa is None


def test_constant_but_different_raters_have_kappa_zero():
    ratings = [("A", i, K) for i in range(4)] + [("B", i, R) for i in range(4)]
    (pair,) = pairwise_cohen(ratings, bootstrap=20)
    assert pair.kappa == 0.0 and pair.percent_agreement == 0.0


# ---------------------------------------------------------------------------------------------------------
# Validation


def test_invalid_input():
    with pytest.raises(ValueError, match="more than once"):
        percent_agreement([("A", 1, K), ("A", 1, R)])
    with pytest.raises(ValueError, match="strings"):
        percent_agreement([("A", 1, 1)])
    with pytest.raises(ValueError, match="triple"):
        percent_agreement([("A", 1)])
    with pytest.raises(ValueError, match="bootstrap"):
        pairwise_cohen(hand_ratings(), bootstrap=-1)
    with pytest.raises(ValueError, match="bootstrap"):
        agreement_report(hand_ratings(), bootstrap=1.5)


# ---------------------------------------------------------------------------------------------------------
# Bootstrap, report, determinism, speed


def simulated(n_raters=6, n_items=300, seed=3):
    rng = np.random.default_rng(seed)
    truth = rng.random(n_items) < 0.6
    return [
        (f"e{r}", i, K if (truth[i] ^ (rng.random() < 0.15)) else R)
        for r in range(n_raters)
        for i in range(n_items)
    ]


def test_confidence_intervals_contain_point_estimates():
    report = agreement_report(simulated(), bootstrap=300, seed=1)
    for p in report["pairwise"]:
        assert p["ci_low"] <= p["kappa"] <= p["ci_high"]
        assert p["ci_high"] - p["ci_low"] < 0.5
    for key, stat in (("fleiss", "kappa"), ("krippendorff", "alpha")):
        block = report[key]
        assert block["ci_low"] <= block[stat] <= block["ci_high"]


def test_seed_determinism():
    ratings = simulated(n_raters=4, n_items=120)
    one = agreement_report(ratings, bootstrap=100, seed=11)
    two = agreement_report(list(reversed(ratings)), bootstrap=100, seed=11)
    assert one == two
    other = agreement_report(ratings, bootstrap=100, seed=12)
    assert other["pairwise"][0]["kappa"] == one["pairwise"][0]["kappa"]
    assert other["pairwise"][0]["ci_low"] != one["pairwise"][0]["ci_low"]
    assert other["fleiss"]["ci_low"] != one["fleiss"]["ci_low"]


def test_report_is_json_serialisable_and_complete():
    ratings = hand_ratings() + [("D", 1, "unsure")]
    report = agreement_report(ratings, bootstrap=50)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert set(report) >= {
        "pairwise", "fleiss", "krippendorff", "percent_agreement", "n_ratings", "n_items", "raters",
    }
    assert report["raters"] == ["A", "B", "C", "D"]
    assert report["categories"] == [K, R, "unsure"]
    assert report["n_ratings"] == 29 and report["n_items"] == 10
    assert set(report["pairwise"][0]) == set(PairKappa.__dataclass_fields__)
    assert set(report["fleiss"]) == set(FleissResult.__dataclass_fields__)
    assert set(report["krippendorff"]) == set(AlphaResult.__dataclass_fields__)
    for value in (report["fleiss"]["kappa"], report["krippendorff"]["alpha"]):
        assert type(value) is float


def test_report_ids_are_json_safe():
    ratings = [((1, "x"), "i1", K), ((2, "y"), "i1", R), (7, "i2", K), ((1, "x"), "i2", K)]
    report = agreement_report(ratings, bootstrap=10)
    json.dumps(report, allow_nan=False)
    assert 7 in report["raters"] and "(1, 'x')" in report["raters"]


def test_report_speed_10_experts_5000_items():
    rng = np.random.default_rng(0)
    truth = rng.random(5000) < 0.6
    ratings = [
        (f"expert{r}", i, K if flag else R)
        for r in range(10)
        for i, flag in enumerate(truth ^ (rng.random(5000) < 0.15))
    ]
    start = time.perf_counter()
    report = agreement_report(ratings, bootstrap=200, seed=0)
    elapsed = time.perf_counter() - start
    assert len(report["pairwise"]) == 45
    assert elapsed < 15, f"agreement_report took {elapsed:.1f}s"
