"""Judging result pages: leaderboard numbers (vs rubrics.scoring, judging.report and a hand computation), sorting,
exports, permissions, constant query counts; model, task and judgement pages."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from judging import selectors
from judging.models import GeneratedVideo, JudgeRun, Judgement, ModelUnderTest
from judging.report import benchmark_report
from microverse_site.models import LLMCall
from rubrics import scoring
from rubrics.models import BenchmarkTask
from tests.helpers import import_release_subset

DIMS = ("scientific", "visual", "instruction")
# Task 1 (Cellular) with these scores, by hand from MWBenchRubrics_norm.json:
#   scientific +1/1.0 +1/1.0 +1/1.0 +1/0.5 -1/1.0, scores 1 1 0 1 1: raw 1+1+0.5-1 = 1.5 over 3.5 -> 42.857...
#   visual     +1/0.5 +1/0.5 +1/0.2 +1/0.2 -1/0.0, scores 1 0 1 0 0: raw 0.7 over 1.4 -> 50.0
#   instruction+1/0.5 +1/0.5 +1/0.5 +1/0.2 +1/0.0, scores 1 1 1 0 0: raw 1.5 over 1.7 -> 88.235...
#   overall: raw 3.7 over 6.6 -> 56.0606...
HAND_SCORES = {"scientific": [1, 1, 0, 1, 1], "visual": [1, 0, 1, 0, 0], "instruction": [1, 1, 1, 0, 0]}
HAND_OVERALL = 3.7 / 6.6 * 100


def pattern(index: int, model_no: int, dimension: str, n: int) -> list[int]:
    """A deterministic 0/1 list that differs by task, model and dimension."""
    return [((index * 7 + model_no * 3 + DIMS.index(dimension) * 5 + i) % 3 == 0) * 1 for i in range(n)]


def criteria_count(task: BenchmarkTask, dimension: str) -> int:
    return task.current_rubric.criteria.filter(dimension=dimension).count()


def make_model_run(name: str, tasks, *, model_no: int = 0, judge_model: str = "judge-1", scores=None,
                   rubric_label: str = "released", frames=()) -> JudgeRun:
    """A model, one video per task, one run with three scored judgements per task (scores: {index: {dim: list}}
    overrides the pattern; a value of None leaves that judgement out)."""
    model, _ = ModelUnderTest.objects.get_or_create(name=name)
    run = JudgeRun.objects.create(model=model, judge_model=judge_model, rubric_label=rubric_label, status="done")
    for task in tasks:
        video, _ = GeneratedVideo.objects.get_or_create(model=model, task=task, defaults={"frames": list(frames)})
        for dim in DIMS:
            given = (scores or {}).get(task.index, {})
            if dim in given and given[dim] is None:
                continue
            values = given.get(dim, pattern(task.index, model_no, dim, criteria_count(task, dim)))
            Judgement.objects.create(run=run, video=video, task=task, dimension=dim,
                                     rubric_version=task.current_rubric, status="scored", scores=values,
                                     reasoning=f"reasoning {task.index} {dim}", raw_response=json.dumps(values))
    return run


@pytest.fixture
def tasks(db, tmp_path):
    import_release_subset(tmp_path, (1, 2, 3, 277))
    return list(BenchmarkTask.objects.select_related("current_rubric").order_by("index"))


@pytest.fixture
def board_data(tasks):
    """Three models: Alpha (hand scores on task 1), Beta, and Gamma with a flagged judgement and a pending one."""
    alpha = make_model_run("Alpha", tasks, model_no=1, scores={1: HAND_SCORES})
    beta = make_model_run("Beta", tasks, model_no=2)
    gamma = make_model_run("Gamma", tasks, model_no=3, scores={3: {"visual": [1, 1]}, 277: {"instruction": None}})
    Judgement.objects.filter(run=gamma, task__index=3, dimension="visual").update(
        status="flagged", flag_reason="2 scores for 5 criteria")
    Judgement.objects.create(run=gamma, task=tasks[3], dimension="instruction",
                             rubric_version=tasks[3].current_rubric, status="pending")
    return {"alpha": alpha, "beta": beta, "gamma": gamma}


def expected_summary(run: JudgeRun) -> scoring.ModelSummary:
    """rubrics.scoring straight on the stored rows (pending = missing)."""
    results = []
    for task in BenchmarkTask.objects.order_by("index"):
        judgements = {j.dimension: j for j in run.judgements.filter(task=task)}
        if not judgements:
            continue
        rubric = {d: [scoring.Criterion(polarity=c.polarity, weight=c.weight, key_number=c.key_number)
                      for c in task.current_rubric.criteria.filter(dimension=d).order_by("position")] for d in DIMS}
        answers = {d: j.scores for d, j in judgements.items() if j.status != "pending"}
        results.append(scoring.score_task(index=task.index, level=task.level, rubric=rubric, judgement=answers))
    return scoring.summarise_model(results)


# ------------------------------------------------------------------------------------------------- numbers


def test_leaderboard_numbers_equal_scoring_and_report(board_data):
    board = selectors.leaderboard()
    report = benchmark_report(rubric_label="released")["models"]
    assert {r["model"] for r in board.rows} == {"Alpha", "Beta", "Gamma"} == set(report)
    for row in board.rows:
        summary = expected_summary(JudgeRun.objects.get(pk=row["run_id"]))
        assert row["average"] == summary.average == report[row["model"]]["average"]
        assert row["levels"] == summary.levels == report[row["model"]]["levels"]
        assert row["dimensions"] == summary.dimensions == report[row["model"]]["dimensions"]
        assert row["valid_tasks"] == summary.valid_tasks == report[row["model"]]["valid_tasks"]
        assert row["malformed_tasks"] == summary.malformed_tasks == report[row["model"]]["malformed_tasks"]
    gamma = next(r for r in board.rows if r["model"] == "Gamma")
    assert gamma["valid_tasks"] == 3  # 277 lacks instruction (pending)
    # 2: instruction criteria numbered 11..55 (release quirk); 3: the flagged 2-entry list, walked the published
    # way; 277: instruction pending (no score list).
    assert gamma["malformed_tasks"] == [2, 3, 277]
    assert gamma["covered"] == 2 and gamma["total_tasks"] == 4 and gamma["coverage"] == 0.5
    assert gamma["flagged_tasks"] == 1 and gamma["flagged"] == [3]
    alpha = next(r for r in board.rows if r["model"] == "Alpha")
    assert alpha["covered"] == 4 and alpha["flagged_tasks"] == 0


def test_hand_computed_task_score(board_data):
    scores = selectors.run_task_scores([board_data["alpha"].pk])[board_data["alpha"].pk]
    result = scores[1].result
    assert result.dimensions["scientific"] == pytest.approx(1.5 / 3.5 * 100)
    assert result.dimensions["visual"] == pytest.approx(50.0)
    assert result.dimensions["instruction"] == pytest.approx(1.5 / 1.7 * 100)
    assert result.overall == pytest.approx(HAND_OVERALL)  # 56.06


def test_latest_run_counts_and_judge_filter(tasks):
    make_model_run("Alpha", tasks, model_no=1, judge_model="judge-1")
    newer = make_model_run("Alpha", tasks, model_no=5, judge_model="judge-2")
    assert [r["run_id"] for r in selectors.leaderboard().rows] == [newer.pk]
    only_first = selectors.leaderboard(judge_model="judge-1").rows
    assert len(only_first) == 1 and only_first[0]["judge_model"] == "judge-1"
    assert selectors.leaderboard(rubric_label="draft").rows == []


# --------------------------------------------------------------------------------------------------- sorting


def test_sorting_any_column_and_none_last(board_data):
    rows = selectors.leaderboard().rows
    by_average = sorted(rows, key=lambda r: -r["average"])
    assert [r["model"] for r in selectors.leaderboard(sort="-average").rows] == [r["model"] for r in by_average]
    assert [r["model"] for r in selectors.leaderboard(sort="average").rows] == [r["model"] for r in by_average[::-1]]
    assert [r["model"] for r in selectors.leaderboard(sort="model").rows] == ["Alpha", "Beta", "Gamma"]
    assert [r["model"] for r in selectors.leaderboard(sort="-model").rows] == ["Gamma", "Beta", "Alpha"]
    for key in ("visual", "Cellular-level"):
        got = [r["model"] for r in selectors.leaderboard(sort=f"-{key}").rows]
        value = (lambda r: r["dimensions"][key]) if key == "visual" else (lambda r: r["levels"][key])
        assert got == [r["model"] for r in sorted(rows, key=lambda r: -value(r))]
    assert selectors.leaderboard(sort="-flagged_tasks").rows[0]["model"] == "Gamma"
    assert selectors.leaderboard(sort="bogus").sort == selectors.DEFAULT_SORT
    # None sorts last in both directions: Subcellular has no task here.
    rows, _ = selectors.sort_rows([{"model": "a", "average": None}, {"model": "b", "average": 1.0}], "average")
    assert [r["model"] for r in rows] == ["b", "a"]


def test_leaderboard_page_sorts_server_side(client, researcher, board_data):
    client.force_login(researcher)
    response = client.get(reverse("judging-leaderboard"), {"sort": "model"})
    html = response.content.decode()
    assert response.status_code == 200
    assert html.index('data-model="Alpha"') < html.index('data-model="Beta"') < html.index('data-model="Gamma"')
    response = client.get(reverse("judging-leaderboard"), {"sort": "-model"})
    html = response.content.decode()
    assert html.index('data-model="Gamma"') < html.index('data-model="Alpha"')
    assert 'aria-sort="descending"' in html
    assert 'id="leaderboard-chart-data"' in html and "leaderboard-chart" in html
    chart = json.loads(html.split('id="leaderboard-chart-data" type="application/json">')[1].split("</script>")[0])
    assert chart["labels"] == ["Gamma", "Beta", "Alpha"]
    assert [d["label"] for d in chart["datasets"]][:2] == ["Average", "Organ"]
    alpha = next(r for r in selectors.leaderboard().rows if r["model"] == "Alpha")
    assert f"{alpha['average']:.1f}" in html
    assert "4/4" in html  # Alpha's coverage


# --------------------------------------------------------------------------------------------------- exports


def test_exports_csv_markdown_json(client, researcher, board_data):
    client.force_login(researcher)
    board = selectors.leaderboard(sort="model")
    data = client.get(reverse("judging-leaderboard-export", args=["json"]), {"sort": "model"}).json()
    assert list(data["models"]) == ["Alpha", "Beta", "Gamma"]
    report = benchmark_report()["models"]
    for name, row in data["models"].items():
        for key in ("valid_tasks", "average", "levels", "dimensions", "malformed_tasks"):
            assert row[key] == report[name][key]
    assert data["models"]["Gamma"]["flagged_tasks"] == 1 and data["models"]["Gamma"]["coverage"] == 0.5

    response = client.get(reverse("judging-leaderboard-export", args=["csv"]), {"sort": "model"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["model"] for r in rows] == ["Alpha", "Beta", "Gamma"]
    assert float(rows[0]["average"]) == board.rows[0]["average"]
    assert float(rows[0]["scientific"]) == board.rows[0]["dimensions"]["scientific"]
    assert rows[2]["malformed_tasks"] == "2 3 277" and rows[2]["covered"] == "2"

    text = client.get(reverse("judging-leaderboard-export", args=["md"])).content.decode()
    assert "| Model | Average | Organ | Cellular | Subcellular |" in text
    assert "| Model | Scientific | Visual | Instruction |" in text
    alpha = board.rows[0]
    assert (f"| Alpha | {alpha['average']:.1f} | {alpha['levels']['Organ-level']:.1f} | "
            f"{alpha['levels']['Cellular-level']:.1f} | n/a |") in text
    assert "| Gamma | judge-1 | 3 | 2/4 | 1 | 3 |" in text
    assert client.get("/judging/leaderboard.xml").status_code == 404


# ----------------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("name", ["judging-leaderboard", "judging-consistency", "judging-consistency-json"])
def test_results_pages_are_for_researchers_and_admins(client, expert, researcher, admin_user, board_data, name):
    url = reverse(name)
    client.force_login(expert)
    assert client.get(url).status_code == 403
    for user in (researcher, admin_user):
        client.force_login(user)
        assert client.get(url).status_code == 200
    client.logout()
    assert client.get(url).status_code == 302


def test_detail_pages_forbidden_to_experts(client, expert, board_data, tasks):
    run = board_data["alpha"]
    client.force_login(expert)
    for url in (reverse("judging-model", args=[run.model_id]), reverse("judging-task", args=[1]),
                reverse("judging-judgement", args=[run.pk, 1]),
                reverse("judging-leaderboard-export", args=["csv"])):
        assert client.get(url).status_code == 403, url


# ---------------------------------------------------------------------------------------------- query counts


def _queries(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params or {})
    assert response.status_code == 200, response.content[:500]
    return len(captured)


@pytest.mark.parametrize("page", ["leaderboard", "export", "model", "task", "consistency"])
def test_query_counts_constant(client, researcher, tasks, page):
    client.force_login(researcher)

    def url():
        alpha = ModelUnderTest.objects.get(name="Alpha")
        return {"leaderboard": reverse("judging-leaderboard"),
                "export": reverse("judging-leaderboard-export", args=["json"]),
                "model": reverse("judging-model", args=[alpha.pk]),
                "task": reverse("judging-task", args=[1]),
                "consistency": reverse("judging-consistency")}[page]

    for i, name in enumerate(("Alpha", "Beta")):
        make_model_run(name, tasks[:2], model_no=i)
    small = _queries(client, url())
    for i, name in enumerate(("Gamma", "Delta", "Epsilon")):
        make_model_run(name, tasks, model_no=i + 2)
    make_model_run("Alpha", tasks, model_no=7)  # a newer run with more tasks
    assert _queries(client, url()) == small


# ------------------------------------------------------------------------------------------ model / task / judgement


def test_model_page_lists_tasks_and_filters_by_level(client, researcher, board_data):
    client.force_login(researcher)
    run = board_data["alpha"]
    html = client.get(reverse("judging-model", args=[run.model_id])).content.decode()
    for index in (1, 2, 3, 277):
        assert f'data-index="{index}"' in html
    assert f"{HAND_OVERALL:.1f}" in html  # 56.1
    assert reverse("judging-judgement", args=[run.pk, 1]) in html
    assert reverse("judging-task", args=[1]) in html
    html = client.get(reverse("judging-model", args=[run.model_id]), {"level": "Organ-level"}).content.decode()
    assert 'data-index="277"' in html and 'data-index="1"' not in html


def test_task_page_across_models(client, researcher, board_data):
    client.force_login(researcher)
    html = client.get(reverse("judging-task", args=[1])).content.decode()
    for name in ("Alpha", "Beta", "Gamma"):
        assert f'data-model="{name}"' in html
    assert f"{HAND_OVERALL:.1f}" in html
    assert reverse("judging-judgement", args=[board_data["alpha"].pk, 1]) in html
    assert client.get(reverse("judging-task", args=[9999])).status_code == 404


def test_judgement_page_shows_criteria_frames_reasoning_and_call(client, researcher, tasks):
    run = make_model_run("Alpha", tasks[:1], scores={1: HAND_SCORES}, frames=["judge-frames/a/0.jpg",
                                                                             "judge-frames/a/1.jpg"])
    call = LLMCall.objects.create(purpose="judge", model="judge-1", request_hash="x" * 64, status="ok",
                                  prompt_tokens=1234, completion_tokens=56, cost_usd="0.012345", latency_ms=789)
    Judgement.objects.filter(run=run, dimension="visual").update(
        llm_call=call, status="flagged", flag_reason="non-JSON answer after repair", scores=None,
        raw_response="I think it looks fine")
    client.force_login(researcher)
    response = client.get(reverse("judging-judgement", args=[run.pk, 1]))
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count("<img ") == 2 and "judge-frames/a/0.jpg" in html
    assert "reasoning 1 scientific" in html
    assert "−1 penalty" in html and "+1 bonus" in html
    assert "non-JSON answer after repair" in html and "I think it looks fine" in html
    assert "1234 prompt + 56 completion tokens" in html and "0.012345" in html and "789 ms" in html
    task = tasks[0]
    first = task.current_rubric.criteria.filter(dimension="scientific").order_by("position").first()
    assert first.description in html
    # no frames: blank, not broken
    bare = make_model_run("Beta", tasks[:1])
    html = client.get(reverse("judging-judgement", args=[bare.pk, 1])).content.decode()
    assert "No frames recorded" in html and "<img " not in html


def test_judgement_detail_maps_entries_by_key_number(tasks):
    # Task 2's instruction criteria are numbered 11, 22, ...: a 5-entry list reaches none of them (published walk).
    run = make_model_run("Alpha", [tasks[1]])
    detail = selectors.judgement_detail(run=run, task=tasks[1])
    instruction = next(d for d in detail["dimensions"] if d["dimension"] == "instruction")
    assert [row["reached"] for row in instruction["criteria"]] == [False] * 5
    assert [e["position"] for e in instruction["extra"]] == [1, 2, 3, 4, 5]
    assert instruction["score"] == 0.0 and instruction["problems"]
    scientific = next(d for d in detail["dimensions"] if d["dimension"] == "scientific")
    assert [row["entry"] for row in scientific["criteria"]] == pattern(2, 0, "scientific", 5)
