"""Judge-human consistency (the paper's Figure 6) and blind-preference ratios: plain maths on plain tuples.

The top half imports nothing from Django: every function takes tuples and returns dataclasses / dicts, so the tests
check them against scikit-learn, SciPy and statsmodels directly. The bottom half (``*_from_db``) reads the database
into those tuples; the page, its JSON twin and anything scripted call :func:`consistency_from_db`.

Ratings are ``(rater, item, label)`` triples where

* ``rater`` is ``(kind, name)``: ``("judge", "<judge model>")`` or ``("expert", "<username>")``;
* ``item`` is any hashable naming one criterion of one video (the database side uses ``(video_id, criterion_id)``);
* ``label`` is 0 or 1.

Agreement between two groups of raters is *pooled*: every pair of ratings of the same item by one rater of each
group (two different raters; unordered within one group) is one observation; percent agreement is the share of equal
pairs (0-100) and Cohen's kappa is :func:`sklearn.metrics.cohen_kappa_score` on the two label vectors with
``labels=[0, 1]``. Kappa is ``None`` when undefined (no pairs, or both raters always gave one and the same label).

Model-ranking correlation compares two ``{model name: score}`` mappings on the models both have, with
:func:`scipy.stats.spearmanr` and :func:`scipy.stats.kendalltau` (``None`` where SciPy gives NaN or fewer than two
models are shared).

Preference ratios (blind pairwise): outcomes ``(level, model_x, model_y, winner)`` with ``winner`` one of ``model_x``,
``model_y`` or ``None`` (tie). For each unordered pair of models (named in sorted order as ``first`` / ``second``)
the report gives wins of each, ties, and each proportion with its Wilson 95 % interval
(:func:`statsmodels.stats.proportion.proportion_confint`, ``method="wilson"``); per level and over all levels.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass
from itertools import combinations

JUDGE = "judge"
EXPERT = "expert"
KINDS = (JUDGE, EXPERT)
ALL_LEVELS = "all"


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------ agreement


@dataclass(frozen=True)
class Agreement:
    """Pooled agreement between two groups of raters: ``n`` pairs, percent (0-100) and Cohen's kappa."""

    n: int
    percent: float | None
    kappa: float | None


def pooled_agreement(pairs: Iterable[tuple[int, int]]) -> Agreement:
    """Percent agreement and Cohen's kappa over ``(label_x, label_y)`` pairs of 0/1 labels."""
    pairs = list(pairs)
    if not pairs:
        return Agreement(n=0, percent=None, kappa=None)
    x = [int(a) for a, _ in pairs]
    y = [int(b) for _, b in pairs]
    percent = 100.0 * sum(a == b for a, b in zip(x, y)) / len(pairs)
    from sklearn.metrics import cohen_kappa_score  # slow import, kept out of URL loading

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined (both raters used one label): NaN -> None
        kappa = _finite_or_none(cohen_kappa_score(x, y, labels=[0, 1]))
    return Agreement(n=len(pairs), percent=percent, kappa=kappa)


def rating_pairs(triples: Iterable[tuple[tuple[str, str], Hashable, int]], kind_x: str,
                 kind_y: str) -> list[tuple[int, int]]:
    """Every pair of ratings of one item by a ``kind_x`` rater and a different ``kind_y`` rater.

    For two kinds, the ``kind_x`` label comes first. For one kind (``expert`` vs ``expert``), each unordered pair of
    raters counts once, the rater whose name sorts first giving the first label. A rater rating an item twice is a
    ``ValueError``."""
    by_item: dict[Hashable, dict[tuple[str, str], int]] = defaultdict(dict)
    for rater, item, label in triples:
        if rater in by_item[item]:
            raise ValueError(f"{rater!r} rated {item!r} twice")
        if label not in (0, 1) or isinstance(label, bool):
            raise ValueError(f"label must be 0 or 1, got {label!r}")
        by_item[item][tuple(rater)] = int(label)
    pairs: list[tuple[int, int]] = []
    for item in sorted(by_item, key=repr):
        ratings = by_item[item]
        if kind_x == kind_y:
            raters = sorted(r for r in ratings if r[0] == kind_x)
            pairs.extend((ratings[a], ratings[b]) for a, b in combinations(raters, 2))
        else:
            xs = sorted(r for r in ratings if r[0] == kind_x)
            ys = sorted(r for r in ratings if r[0] == kind_y)
            pairs.extend((ratings[a], ratings[b]) for a in xs for b in ys)
    return pairs


def dimension_agreement(triples) -> dict[str, Agreement]:
    """``judge_vs_expert``, ``expert_vs_expert`` and ``judge_vs_judge`` for one dimension's ratings."""
    triples = list(triples)
    return {
        "judge_vs_expert": pooled_agreement(rating_pairs(triples, JUDGE, EXPERT)),
        "expert_vs_expert": pooled_agreement(rating_pairs(triples, EXPERT, EXPERT)),
        "judge_vs_judge": pooled_agreement(rating_pairs(triples, JUDGE, JUDGE)),
    }


def agreement_report(triples_by_dimension: Mapping[str, Iterable]) -> dict:
    """Per dimension: the three agreements (as dicts), plus judge-vs-expert for each judge model on its own.

    Returns ``{"dimensions": {dim: {"judge_vs_expert": {n, percent, kappa}, ...}},
    "judges": {judge_name: {dim: {n, percent, kappa}}}}``."""
    report: dict = {"dimensions": {}, "judges": {}}
    for dimension, triples in triples_by_dimension.items():
        triples = list(triples)
        report["dimensions"][dimension] = {k: asdict(v) for k, v in dimension_agreement(triples).items()}
        judges = sorted({rater[1] for rater, _, _ in triples if rater[0] == JUDGE})
        for judge in judges:
            own = [t for t in triples if t[0][0] == EXPERT or tuple(t[0]) == (JUDGE, judge)]
            report["judges"].setdefault(judge, {})[dimension] = asdict(
                pooled_agreement(rating_pairs(own, JUDGE, EXPERT)))
    return report


# ---------------------------------------------------------------------------------------- ranking correlation


@dataclass(frozen=True)
class RankCorrelation:
    models: list[str]
    spearman: float | None
    spearman_p: float | None
    kendall: float | None
    kendall_p: float | None


def ranking_correlation(x: Mapping[str, float | None], y: Mapping[str, float | None]) -> RankCorrelation:
    """Spearman's rho and Kendall's tau (SciPy) between two model scores on the models both score (not None)."""
    models = sorted(m for m in x if m in y and x[m] is not None and y[m] is not None)
    if len(models) < 2:
        return RankCorrelation(models=models, spearman=None, spearman_p=None, kendall=None, kendall_p=None)
    from scipy.stats import kendalltau, spearmanr

    a = [float(x[m]) for m in models]
    b = [float(y[m]) for m in models]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: SciPy warns and returns NaN -> None
        rho = spearmanr(a, b)
        tau = kendalltau(a, b)
    return RankCorrelation(models=models, spearman=_finite_or_none(rho.statistic),
                           spearman_p=_finite_or_none(rho.pvalue), kendall=_finite_or_none(tau.statistic),
                           kendall_p=_finite_or_none(tau.pvalue))


# ------------------------------------------------------------------------------------------ preference ratios


def wilson(count: int, nobs: int) -> tuple[float | None, float | None]:
    """Wilson 95 % interval of ``count / nobs`` (statsmodels); ``(None, None)`` when ``nobs`` is 0."""
    if nobs <= 0:
        return None, None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(count, nobs, alpha=0.05, method="wilson")
    return float(low), float(high)


def _proportion(count: int, nobs: int) -> dict:
    low, high = wilson(count, nobs)
    return {"count": count, "ratio": count / nobs if nobs else None, "ci_low": low, "ci_high": high}


def preference_ratios(outcomes: Iterable[tuple[str, str, str, str | None]]) -> dict[str, list[dict]]:
    """``{level or "all": [row per model pair]}``; a row: ``first``, ``second`` (sorted names), ``n``,
    ``first_wins``, ``second_wins``, ``ties`` (each ``{count, ratio, ci_low, ci_high}``)."""
    counts: dict[str, dict[tuple[str, str], list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for level, model_x, model_y, winner in outcomes:
        if model_x == model_y:
            raise ValueError(f"a comparison needs two models, got {model_x!r} twice")
        if winner not in (model_x, model_y, None):
            raise ValueError(f"winner {winner!r} is neither {model_x!r} nor {model_y!r}")
        first, second = sorted((model_x, model_y))
        slot = 2 if winner is None else (0 if winner == first else 1)
        for key in (ALL_LEVELS, level):
            counts[key][(first, second)][slot] += 1
    result: dict[str, list[dict]] = {}
    for level in sorted(counts, key=lambda k: (k != ALL_LEVELS, k)):
        rows = []
        for (first, second), (w1, w2, ties) in sorted(counts[level].items()):
            n = w1 + w2 + ties
            rows.append({"first": first, "second": second, "n": n, "first_wins": _proportion(w1, n),
                         "second_wins": _proportion(w2, n), "ties": _proportion(ties, n)})
        result[level] = rows
    return result


# ------------------------------------------------------------------------------------------- database side


def rating_triples_from_db() -> dict[str, list]:
    """Per dimension, ``(rater, (video id, criterion id), 0/1)`` for the experts and every judge model.

    Expert ratings are :class:`judging.models.HumanScore` rows. A judge rating is entry ``i`` of a scored
    judgement's list, for the criterion of the judgement's rubric version whose key number is ``i + 1`` (the
    published walk), kept only when the entry is 0 or 1. For each judge model the latest run that judged a video
    counts. Expert and judge ratings meet only on the same criterion ids, i.e. when the expert scored the rubric
    version the judge saw. Three queries."""
    from judging.models import HumanScore, Judgement
    from rubrics.models import Criterion

    triples: dict[str, list] = defaultdict(list)
    human = HumanScore.objects.values_list("expert__username", "video_id", "criterion_id", "score",
                                           "criterion__dimension")
    for username, video_id, criterion_id, score, dimension in human:
        triples[dimension].append(((EXPERT, username), (video_id, criterion_id), int(score)))
    judgements = list(
        Judgement.objects.filter(video__isnull=False, status=Judgement.Status.SCORED)
        .order_by("run__created_at", "run_id")
        .values_list("run__judge_model", "video_id", "dimension", "rubric_version_id", "scores")
    )
    criteria: dict[tuple, dict[int, int]] = defaultdict(dict)
    for version_id, dimension, key_number, criterion_id in Criterion.objects.filter(
        version_id__in={j[3] for j in judgements}
    ).values_list("version_id", "dimension", "key_number", "id"):
        criteria[(version_id, dimension)][key_number] = criterion_id
    latest: dict[tuple, tuple] = {}
    for judge, video_id, dimension, version_id, scores in judgements:  # later runs overwrite earlier ones
        latest[(judge, video_id, dimension)] = (version_id, scores)
    for (judge, video_id, dimension), (version_id, scores) in sorted(latest.items()):
        if not isinstance(scores, list):
            continue
        by_number = criteria[(version_id, dimension)]
        for i, entry in enumerate(scores):
            criterion_id = by_number.get(i + 1)
            if criterion_id is None or isinstance(entry, bool) or entry not in (0, 1):
                continue
            triples[dimension].append(((JUDGE, judge), (video_id, criterion_id), int(entry)))
    return dict(triples)


def human_model_scores() -> tuple[dict[str, float], dict[int, float]]:
    """Per model, the mean overall score the experts' 0/1 give its human-evaluated videos (``rubrics.scoring`` on
    the current rubric, criteria in position order; each video the mean over its experts who scored every
    criterion). Returns ``({model name: score}, {video id: score})``."""
    from judging.models import HumanScore
    from rubrics import scoring
    from rubrics.models import Criterion

    rows = list(HumanScore.objects.values_list("expert_id", "video_id", "video__model__name", "video__task__index",
                                               "video__task__level", "video__task__current_rubric_id",
                                               "criterion_id", "score"))
    criteria: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for version_id, dimension, criterion_id, polarity, weight in Criterion.objects.filter(
        version_id__in={r[5] for r in rows}
    ).order_by("version_id", "dimension", "position").values_list("version_id", "dimension", "id", "polarity",
                                                                  "weight"):
        criteria[version_id][dimension].append((criterion_id, scoring.Criterion(polarity=polarity, weight=weight)))
    given: dict[tuple, dict[int, int]] = defaultdict(dict)
    meta: dict[int, tuple] = {}
    for expert_id, video_id, model, index, level, version_id, criterion_id, score in rows:
        given[(expert_id, video_id)][criterion_id] = score
        meta[video_id] = (model, index, level, version_id)
    per_video: dict[int, list[float]] = defaultdict(list)
    for (expert_id, video_id), scores in sorted(given.items()):
        model, index, level, version_id = meta[video_id]
        rubric = criteria.get(version_id, {})
        if not rubric or any(cid not in scores for dim in rubric.values() for cid, _ in dim):
            continue
        result = scoring.score_task(
            index=index, level=level, rubric={d: [c for _, c in rubric.get(d, [])] for d in scoring.DIMENSIONS},
            judgement={d: [scores[cid] for cid, _ in rubric.get(d, [])] for d in scoring.DIMENSIONS})
        if result.overall is not None:
            per_video[video_id].append(result.overall)
    video_scores = {v: sum(s) / len(s) for v, s in per_video.items()}
    by_model: dict[str, list[float]] = defaultdict(list)
    for video_id, value in sorted(video_scores.items()):
        by_model[meta[video_id][0]].append(value)
    return {m: sum(v) / len(v) for m, v in by_model.items()}, video_scores


def consistency_from_db(*, rubric_label: str = "released") -> dict:
    """The consistency report: agreement per dimension (judge vs experts, experts among themselves, judge models
    among themselves; and each judge model vs the experts), model-ranking correlations (each judge model's scores on
    the human-evaluated videos vs the experts'; each pair of judge models' leaderboard averages), and blind pairwise
    preference ratios. JSON-ready."""
    from judging import human, selectors
    from judging.models import GeneratedVideo

    triples = rating_triples_from_db()
    report = agreement_report({d: triples.get(d, []) for d in ("scientific", "visual", "instruction")})
    human_by_model, human_by_video = human_model_scores()
    video_rows = GeneratedVideo.objects.filter(pk__in=list(human_by_video)).values_list("pk", "task__index",
                                                                                     "model_id")
    task_of_video, model_of_video = {}, {}
    for video_id, index, model_id in (video_rows if human_by_video else []):
        task_of_video[video_id], model_of_video[video_id] = index, model_id
    rankings = []
    averages: dict[str, dict[str, float | None]] = {}
    judge_models = sorted(set(selectors.JudgeRun.objects.filter(rubric_label=rubric_label)
                              .values_list("judge_model", flat=True)))
    for judge in judge_models:
        board = selectors.leaderboard(rubric_label=rubric_label, judge_model=judge)
        averages[judge] = {row["model"]: row["average"] for row in board.rows}
        runs = selectors.runs_for_leaderboard(rubric_label=rubric_label, judge_model=judge)
        scores = selectors.run_task_scores([r.pk for r in runs.values()])
        judged: dict[str, list[float]] = defaultdict(list)
        for video_id, index in task_of_video.items():
            run = runs.get(model_of_video[video_id])
            task = scores[run.pk].get(index) if run else None
            if task is not None and task.result.overall is not None:
                judged[run.model.name].append(task.result.overall)
        judge_scores = {m: sum(v) / len(v) for m, v in judged.items()}
        rankings.append({"between": [f"judge:{judge}", "experts"], "scores": [judge_scores, human_by_model],
                         **asdict(ranking_correlation(judge_scores, human_by_model))})
    for first, second in combinations(judge_models, 2):
        rankings.append({"between": [f"judge:{first}", f"judge:{second}"],
                         "scores": [averages[first], averages[second]],
                         **asdict(ranking_correlation(averages[first], averages[second]))})
    report.update(rubric_label=rubric_label, human_model_scores=human_by_model, rankings=rankings,
                  pairwise=human.pairwise_results())
    return report
