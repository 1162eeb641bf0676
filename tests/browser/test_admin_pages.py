"""Admin pages in a real browser: the action log (filter by expert, the rubric-operation chart) and the agreement
matrix."""
import pytest
from django.core.cache import cache

from annotation import services
from annotation.models import Workflow
from tests.annotation.test_agreement_pages import FOUR, make_panel

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def test_action_log_filters_by_expert_and_draws_the_chart(page_for, admin_user, expert, expert2, live_server):
    for verb, n in (("proposal_delete", 2), ("proposal_supplement", 1)):
        for k in range(n):
            services.log_action(actor=expert, verb=verb, workflow=Workflow.RUBRIC_REVISION, rationale=f"{verb} {k}")
    for k in range(3):
        services.log_action(actor=expert2, verb="proposal_weight", workflow=Workflow.RUBRIC_REVISION,
                            before={"weight": 1.0}, after={"weight": 0.5}, rationale=f"too strong {k}")
    services.log_action(actor=admin_user, verb="auto_assign", workflow=Workflow.TASK_VOTING, after={"assignments": 9})

    page = page_for(admin_user)
    page.goto("/manage/log/")
    assert page.locator("#log-rows tbody tr").count() == 7
    page.wait_for_function("window.Chart && Chart.getChart('ops-chart') !== undefined")
    chart = page.evaluate("""(() => { const c = Chart.getChart('ops-chart');
        return {labels: c.data.labels, series: c.data.datasets.map(d => [d.label, d.data])}; })()""")
    assert chart == {"labels": ["expert1", "expert2"], "series": [
        ["Delete", [2, 0]], ["Modify", [0, 0]], ["Adjust weight", [0, 3]], ["Supplement", [1, 0]]]}
    assert page.locator("#ops-counts tbody tr[data-expert=expert2] td").all_inner_texts() == ["0", "0", "3", "0", "3"]

    page.select_option("#id_expert", label="expert2")
    with page.expect_navigation():
        page.locator("#log-filter button[type=submit]").click()
    assert "expert=" in page.url
    whos = page.locator("#log-rows tbody td.who").all_inner_texts()
    assert whos == ["expert2"] * 3
    assert "too strong 2" in page.locator("#log-rows").inner_text()
    page.wait_for_function("window.Chart && Chart.getChart('ops-chart') !== undefined")
    assert page.evaluate("Chart.getChart('ops-chart').data.labels") == ["expert2"]
    assert "expert=" in page.locator("#csv-export").get_attribute("href")


def test_agreement_page_shows_the_kappa_matrix(page_for, admin_user, expert, expert2, expert3, live_server):
    users = {"expert1": expert, "expert2": expert2, "expert3": expert3}
    make_panel(Workflow.CLIP_VERIFICATION, {users[name]: row for name, row in FOUR.items()})

    page = page_for(admin_user)
    page.goto("/manage/agreement/")
    assert page.locator("#no-decisions").count() == 1  # task voting has no decisions
    with page.expect_navigation():
        page.select_option("#id_workflow", Workflow.CLIP_VERIFICATION)  # submits on change
    cells = page.locator("#kappa-matrix td.kappa-cell")
    assert cells.count() == 6
    cell = page.locator("#kappa-matrix td.kappa-cell[data-a=expert2][data-b=expert3]")
    assert cell.locator(".k").inner_text() == "0.20" and cell.locator(".n").inner_text() == "n = 4"
    strong = page.locator("#kappa-matrix td.kappa-cell[data-a=expert1][data-b=expert2]")
    assert strong.locator(".k").inner_text() == "0.50"
    # the colour encodes the value: a stronger kappa is a darker cell
    assert cell.evaluate("e => getComputedStyle(e).backgroundColor") != \
        strong.evaluate("e => getComputedStyle(e).backgroundColor")
    assert page.locator("#kappa-matrix td.diagonal").count() == 3
    assert page.locator("#pairwise tbody tr").count() == 3
    assert page.locator("#fleiss").inner_text().startswith("0.333")
    assert page.locator("#alpha").inner_text().startswith("0.389")
