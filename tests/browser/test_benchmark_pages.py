"""What people do in the browser: headless Chromium (Debian's) driven by Playwright against live_server."""
import pytest

from tests.helpers import import_release_subset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tasks(tmp_path):
    # Real tasks, among them task 1 and task 277 (the one with four instruction criteria).
    return import_release_subset(tmp_path / "release", indices=range(1, 31))


def test_expert_finds_task_1_by_search_and_reads_its_rubric(page_for, expert, live_server, tasks):
    page = page_for(expert)
    page.goto(live_server.url + "/tasks/")
    page.keyboard.press("/")  # the search box has the focus without the mouse
    page.keyboard.type("thrombotic obstruction")
    page.wait_for_selector(".count:has-text('1 task matching')")
    page.keyboard.press("Escape")
    page.keyboard.press("j")  # focus the first result
    page.keyboard.press("Enter")
    page.wait_for_url("**/tasks/1/")
    assert page.locator("h1").inner_text().startswith("Task 1")
    assert "red blood cells" in page.locator(".prompt-text").inner_text()
    assert page.locator("table.rubric tbody tr").count() == 15
    assert page.locator("table.rubric[data-dimension=scientific] tbody tr").count() == 5
    assert "current" in page.locator("#rubric-heading").inner_text()
    # switch to the draft version and compare without a page reload
    page.evaluate("window.__marker = 'same-page'")
    page.select_option("#id_compare", "1")
    page.wait_for_selector(".diff")
    assert "weight" in page.locator(".diff").inner_text()  # draft weights became the tiered ones
    page.select_option("#id_version", "1")
    page.wait_for_selector("#rubric-heading:has-text('draft')")
    assert page.evaluate("window.__marker") == "same-page"


def test_researcher_cannot_reach_an_admin_page(page_for, researcher, live_server, tasks):
    page = page_for(researcher)
    response = page.goto(live_server.url + "/manage/users/")
    assert response.status == 403
    assert "Not allowed" in page.content()
    assert page.locator("nav >> text=Users & roles").count() == 0


def test_overview_draws_the_level_chart(page_for, admin_user, live_server, tasks):
    page = page_for(admin_user)
    page.goto(live_server.url + "/benchmark/")
    rows = page.locator("#level-counts tbody tr")
    assert rows.count() == 4
    page.wait_for_function("window.Chart && Chart.getChart('level-chart') !== undefined")
    values = page.evaluate("Chart.getChart('level-chart').data.datasets[0].data")
    assert sum(values) == 30
