"""Inter-rater agreement per workflow: the admin page, the API and ``manage.py agreement``, on decisions written to
the database. The numbers are checked against the reference libraries and against a hand-worked example."""
import io
import json
import math
from unittest import mock

import krippendorff
import numpy as np
import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from annotation import agreement, agreement_data, services
from annotation.models import Assignment, Decision, Workflow
from rubrics.models import CandidateTask

pytestmark = pytest.mark.django_db

PAGE_URL = "/manage/agreement/"
K, R = "keep", "reject"


def api_url(workflow):
    return f"/api/agreement/{workflow}/"


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def make_panel(workflow: str, labels: dict) -> list:
    """One review item per column of `labels` ({expert: [label or None per item]}), with an assignment and a
    Decision row for every label (None: that expert did not decide the item). Returns the items."""
    n_items = len(next(iter(labels.values())))
    items = [services.review_item_open(workflow=workflow,
                                       target=CandidateTask.objects.create(source_title=f"{workflow} video {n}"))
             for n in range(n_items)]
    for expert, row in labels.items():
        for item, label in zip(items, row):
            if label is not None:
                Assignment.objects.create(item=item, expert=expert, status=Assignment.Status.DONE)
                Decision.objects.create(item=item, expert=expert, value=label)
    return items


# 3 experts x 10 items; expert3 did not decide item 10, so Fleiss' kappa (complete panels of 3) uses 9 items.
TEN = {
    "expert1": [K, K, K, K, K, K, R, R, R, R],
    "expert2": [K, K, K, K, K, R, R, R, K, R],
    "expert3": [K, K, K, R, K, K, R, K, R, None],
}


@pytest.fixture
def ten_items(expert, expert2, expert3):
    users = {"expert1": expert, "expert2": expert2, "expert3": expert3}
    return make_panel(Workflow.TASK_VOTING, {users[name]: row for name, row in TEN.items()})


# Hand-checked: 3 experts x 4 items.
#
#   item       1  2  3  4
#   expert1    K  K  R  R
#   expert2    K  K  R  K
#   expert3    K  R  R  R
#
# Cohen 1-2: agree on 1, 2, 3 -> po = 3/4. expert1 2K/2R, expert2 3K/1R -> pe = .5*.75 + .5*.25 = .5
#            kappa = (.75 - .5) / (1 - .5) = 0.5; percent agreement 75.
# Cohen 1-3: agree on 1, 3, 4 -> po = 3/4. expert3 1K/3R -> pe = .5*.25 + .5*.75 = .5 -> kappa = 0.5; 75 %.
# Cohen 2-3: agree on 1, 3 -> po = 1/2. pe = .75*.25 + .25*.75 = .375 -> kappa = .125 / .625 = 0.2; 50 %.
# Fleiss (n = 3 per item): counts (K, R) per item = (3,0), (2,1), (0,3), (1,2).
#   P_i = (sum n_ij^2 - 3) / (3*2) = 1, 1/3, 1, 1/3 -> P-bar = 2/3; p_K = 6/12 = .5 = p_R -> Pe = .5
#   kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3.
# Krippendorff (nominal): coincidences, each pair weighted 1/(m-1) = 1/2 per item:
#   o_KK = 3 (item 1) + 1 (item 2) = 4; o_RR = 3 (item 3) + 1 (item 4) = 4; o_KR = o_RK = 1 + 1 = 2; n = 12,
#   n_K = n_R = 6. D_o = 4/12 = 1/3; D_e = 2*6*6 / (12*11) = 6/11; alpha = 1 - (1/3)/(6/11) = 1 - 11/18 = 7/18.
# Percent agreement: share of agreeing pairs per item = 1, 1/3, 1, 1/3 -> mean 2/3 = 66.7 %.
FOUR = {
    "expert1": [K, K, R, R],
    "expert2": [K, K, R, K],
    "expert3": [K, R, R, R],
}


@pytest.fixture
def four_items(expert, expert2, expert3):
    users = {"expert1": expert, "expert2": expert2, "expert3": expert3}
    return make_panel(Workflow.CLIP_VERIFICATION, {users[name]: row for name, row in FOUR.items()})


def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


# ------------------------------------------------------------------------------------------------------- numbers


def test_triples_are_expert_item_value(ten_items):
    triples = agreement_data.decision_triples(Workflow.TASK_VOTING)
    assert len(triples) == 29
    assert ("expert2", ten_items[5].pk, R) in triples
    assert not any(rater == "expert3" and item == ten_items[9].pk for rater, item, _ in triples)
    assert agreement_data.decision_triples(Workflow.CLIP_VERIFICATION) == []


def test_numbers_equal_the_reference_libraries(client, admin_user, ten_items):
    report = admin_client(client, admin_user).get(api_url(Workflow.TASK_VOTING)).json()
    assert report["workflow"] == Workflow.TASK_VOTING and report["panel_size"] == 3
    assert report["raters"] == ["expert1", "expert2", "expert3"]
    assert report["n_ratings"] == 29 and report["n_items"] == 10

    pairs = {(p["rater_a"], p["rater_b"]): p for p in report["pairwise"]}
    for a, b in [("expert1", "expert2"), ("expert1", "expert3"), ("expert2", "expert3")]:
        shared = [(x, y) for x, y in zip(TEN[a], TEN[b]) if x is not None and y is not None]
        x, y = zip(*shared)
        assert pairs[(a, b)]["n_items"] == len(shared)
        assert pairs[(a, b)]["kappa"] == pytest.approx(cohen_kappa_score(x, y), abs=1e-12)
        assert pairs[(a, b)]["percent_agreement"] == pytest.approx(100 * np.mean(np.array(x) == np.array(y)))
        low, high = pairs[(a, b)]["ci_low"], pairs[(a, b)]["ci_high"]
        assert -1 <= low <= pairs[(a, b)]["kappa"] <= high <= 1

    code = {K: 0, R: 1}
    complete = [[code[TEN[r][i]] for r in TEN] for i in range(10) if all(TEN[r][i] is not None for r in TEN)]
    table, _ = aggregate_raters(np.array(complete), n_cat=2)
    assert report["fleiss"]["n_items"] == 9 and report["fleiss"]["n_raters_per_item"] == 3
    assert report["fleiss"]["kappa"] == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-12)

    reliability = np.array([[np.nan if v is None else code[v] for v in TEN[r]] for r in TEN], dtype=float)
    assert report["krippendorff"]["n_items"] == 10 and report["krippendorff"]["n_raters"] == 3
    assert report["krippendorff"]["alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=reliability, level_of_measurement="nominal"), abs=1e-12)
    assert report["fleiss"]["ci_low"] <= report["fleiss"]["kappa"] <= report["fleiss"]["ci_high"]
    assert report["bootstrap"]["resamples"] == agreement_data.DEFAULT_BOOTSTRAP
    assert report["bootstrap"]["seed"] == agreement_data.DEFAULT_SEED


def test_hand_checked_three_expert_example(client, admin_user, four_items):
    response = admin_client(client, admin_user).get(PAGE_URL, {"workflow": Workflow.CLIP_VERIFICATION})
    assert response.status_code == 200
    report = response.context["report"]
    kappas = {(p["rater_a"], p["rater_b"]): (p["kappa"], p["n_items"], p["percent_agreement"])
              for p in report["pairwise"]}
    assert kappas[("expert1", "expert2")] == (pytest.approx(0.5), 4, pytest.approx(75.0))
    assert kappas[("expert1", "expert3")] == (pytest.approx(0.5), 4, pytest.approx(75.0))
    assert kappas[("expert2", "expert3")] == (pytest.approx(0.2), 4, pytest.approx(50.0))
    assert report["fleiss"]["kappa"] == pytest.approx(1 / 3) and report["fleiss"]["n_items"] == 4
    assert report["krippendorff"]["alpha"] == pytest.approx(7 / 18) and report["krippendorff"]["n_items"] == 4
    assert report["percent_agreement"] == {"n_items": 4, "value": pytest.approx(200 / 3)}

    html = response.content.decode()
    # the matrix (Table 6 layout): symmetric cells with the value and n, coloured by kappa
    matrix = response.context["matrix"]
    assert [row["rater"] for row in matrix] == ["expert1", "expert2", "expert3"]
    assert matrix[1]["cells"][2]["kappa"] == matrix[2]["cells"][1]["kappa"] == pytest.approx(0.2)
    assert matrix[0]["cells"][0] == {"diagonal": True, "rater": "expert1"}
    assert html.count('class="kappa-cell"') == 6
    assert 'data-a="expert2" data-b="expert3" data-kappa="0.200000" data-n="4"' in html
    assert '<span class="k">0.50</span><span class="n">n = 4</span>' in html
    assert matrix[0]["cells"][1]["background"] != matrix[1]["cells"][2]["background"]
    # the pairwise table and the overall statistics
    assert '<td class="num">0.200</td>' in html and "50.0 %" in html
    assert "0.333" in html and "0.389" in html and "66.7 %" in html


def test_only_the_chosen_workflows_decisions_count(client, admin_user, ten_items, four_items):
    client = admin_client(client, admin_user)
    assert client.get(api_url(Workflow.CLIP_VERIFICATION)).json()["n_ratings"] == 12
    assert client.get(api_url(Workflow.TASK_VOTING)).json()["n_ratings"] == 29
    empty = client.get(PAGE_URL, {"workflow": Workflow.CAPTION_CHECK})
    assert empty.status_code == 200 and 'id="no-decisions"' in empty.content.decode()
    assert client.get(api_url(Workflow.CAPTION_CHECK)).json()["pairwise"] == []


def test_decisions_submitted_through_the_service_count(client, admin_user, expert, expert2, expert3):
    """The real path: a panel of three, each expert submitting (the third vote after the 2-of-3 quorum counts)."""
    labels = [(K, K, R), (R, R, R), (K, R, K)]
    for n, votes in enumerate(labels):
        item = services.review_item_open(workflow=Workflow.TASK_VOTING,
                                         target=CandidateTask.objects.create(source_title=f"real {n}"))
        services.panel_assign(item=item, experts=[expert, expert2, expert3], assigned_by=admin_user)
        for user, value in zip((expert, expert2, expert3), votes):
            services.decision_submit(item=item, expert=user, value=value)
    report = admin_client(client, admin_user).get(api_url(Workflow.TASK_VOTING)).json()
    assert report["n_ratings"] == 9 and report["fleiss"]["n_items"] == 3
    expected = agreement.agreement_report(
        [(u.username, i, v) for i, votes in enumerate(labels) for u, v in zip((expert, expert2, expert3), votes)],
        panel_size=3)
    for key in ("fleiss", "krippendorff", "percent_agreement"):
        assert report[key] == pytest.approx(expected[key])


# --------------------------------------------------------------------------------------------- command == API


def command_json(*args):
    out = io.StringIO()
    call_command("agreement", *args, stdout=out)
    return json.loads(out.getvalue())


def test_command_json_equals_api_json(client, admin_user, ten_items):
    client = admin_client(client, admin_user)
    api = client.get(api_url(Workflow.TASK_VOTING)).json()
    cache.clear()  # the command computes afresh
    assert command_json("--workflow", Workflow.TASK_VOTING, "--json") == api
    custom = client.get(api_url(Workflow.TASK_VOTING), {"bootstrap": 200, "seed": 7}).json()
    assert command_json("--workflow", Workflow.TASK_VOTING, "--json", "--bootstrap", "200", "--seed", "7") == custom
    assert custom["bootstrap"]["resamples"] == 200 and custom["bootstrap"]["seed"] == 7
    assert custom["pairwise"][0]["ci_low"] != api["pairwise"][0]["ci_low"] or \
        custom["fleiss"]["ci_low"] != api["fleiss"]["ci_low"]
    assert custom["pairwise"][0]["kappa"] == api["pairwise"][0]["kappa"]


def test_command_prints_a_readable_report(four_items):
    out = io.StringIO()
    call_command("agreement", "--workflow", Workflow.CLIP_VERIFICATION, "--bootstrap", "100", stdout=out)
    text = out.getvalue()
    assert "12 decisions on 4 items by 3 experts" in text
    assert "expert2              expert3                  4   0.200" in text
    assert "Fleiss' kappa (complete panels of 3, n=4): 0.333" in text
    assert "Krippendorff's alpha (nominal, n=4 items, 3 raters): 0.389" in text
    assert "Percent agreement (n=4): 66.7" in text


def test_bad_workflow_and_options_are_refused(client, admin_user):
    client = admin_client(client, admin_user)
    assert client.get(api_url("no_such_workflow")).status_code == 404
    assert client.get(api_url(Workflow.TASK_VOTING), {"bootstrap": "many"}).status_code == 400
    assert client.get(api_url(Workflow.TASK_VOTING), {"bootstrap": 10**6}).status_code == 400
    assert client.get(api_url(Workflow.TASK_VOTING), {"seed": -1}).status_code == 400
    with pytest.raises(CommandError):
        call_command("agreement", "--workflow", "no_such_workflow")
    with pytest.raises(CommandError):
        call_command("agreement", "--workflow", Workflow.TASK_VOTING, "--bootstrap", "-5")
    assert client.get(PAGE_URL, {"workflow": "nonsense"}).context["workflow"] == Workflow.TASK_VOTING


def test_api_is_read_only(client, admin_user):
    client = admin_client(client, admin_user)
    for method in ("post", "put", "patch", "delete"):
        assert getattr(client, method)(api_url(Workflow.TASK_VOTING)).status_code == 405


# --------------------------------------------------------------------------------------------------- permissions


def test_anonymous_goes_to_login_and_others_are_refused(client, expert, researcher):
    response = client.get(PAGE_URL)
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert client.get(api_url(Workflow.TASK_VOTING)).status_code in (401, 403)
    for user in (expert, researcher):
        client.force_login(user)
        assert client.get(PAGE_URL).status_code == 403
        assert client.get(api_url(Workflow.TASK_VOTING)).status_code == 403


# --------------------------------------------------------------------------------------------------------- cache


def test_report_is_cached_until_the_decisions_change(client, admin_user, expert, ten_items):
    client = admin_client(client, admin_user)
    with mock.patch("annotation.agreement.agreement_report", wraps=agreement.agreement_report) as computed:
        first = client.get(PAGE_URL, {"workflow": Workflow.TASK_VOTING}).context["report"]
        with CaptureQueriesContext(connection) as captured:
            again = client.get(PAGE_URL, {"workflow": Workflow.TASK_VOTING}).context["report"]
        assert computed.call_count == 1 and again == first
        # a hit reads only the fingerprint (and the workflow's panel size), never the decisions themselves
        assert not any("expert__username" in q["sql"] or '"annotation_decision"."value"' in q["sql"]
                       for q in captured.captured_queries)

        decision = Decision.objects.get(item=ten_items[3], expert__username="expert3")
        decision.value = K  # expert3 now agrees with the others on item 4
        decision.save()
        changed = client.get(PAGE_URL, {"workflow": Workflow.TASK_VOTING}).context["report"]
        assert computed.call_count == 2
        assert changed["fleiss"]["kappa"] > first["fleiss"]["kappa"]

        Decision.objects.filter(item=ten_items[0], expert=expert).delete()
        fewer = client.get(api_url(Workflow.TASK_VOTING)).json()
        assert computed.call_count == 3 and fewer["n_ratings"] == 28


def test_fingerprint_moves_with_every_change(ten_items, expert):
    before = agreement_data.decisions_fingerprint(Workflow.TASK_VOTING)
    assert before.startswith("29:")
    Decision.objects.filter(item=ten_items[0], expert=expert).update(value=R)  # update() leaves updated_at alone
    assert agreement_data.decisions_fingerprint(Workflow.TASK_VOTING) == before  # (documented limit)
    decision = Decision.objects.get(item=ten_items[0], expert=expert)
    decision.save()
    assert agreement_data.decisions_fingerprint(Workflow.TASK_VOTING) != before
    assert agreement_data.decisions_fingerprint(Workflow.CAPTION_CHECK) == "0:0:-"


def test_values_are_json_safe_when_kappa_is_undefined(client, admin_user, expert, expert2):
    make_panel(Workflow.CAPTION_CHECK, {expert: [K, K, K], expert2: [K, K, K]})
    response = admin_client(client, admin_user).get(api_url(Workflow.CAPTION_CHECK))
    text = response.content.decode()
    assert "NaN" not in text
    report = json.loads(text)
    assert report["pairwise"][0]["kappa"] is None and report["pairwise"][0]["percent_agreement"] == 100.0
    page = client.get(PAGE_URL, {"workflow": Workflow.CAPTION_CHECK})
    assert '<span class="k">n/a</span>' in page.content.decode()
    assert not math.isnan(report["percent_agreement"]["value"])
