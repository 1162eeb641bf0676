"""Three experts vote on a candidate task with the keyboard, each in their own browser (headless Chromium)."""
import pytest

from annotation import services
from annotation.models import Decision, ReviewItem
from rubrics.models import BenchmarkTask, CandidateTask, Level

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUEUE = "/review/task_voting/"
SECRET = "Expert one's private remark about the fission"


@pytest.fixture
def candidates(expert, expert2, expert3, admin_user):
    made = []
    for n, level in ((1, Level.SUBCELLULAR), (2, Level.CELLULAR)):
        candidate = CandidateTask.objects.create(
            status=CandidateTask.Status.VOTING, level=level,
            prompt=f"Candidate {n}: under a confocal microscope, a mitochondrion constricts and divides in two.",
            source_title=f"Mitochondrial fission in real time ({n})", source_url=f"https://example.org/fission/{n}")
        item = services.review_item_open(workflow="task_voting", target=candidate)
        services.panel_assign(item=item, experts=[expert, expert2, expert3], assigned_by=admin_user)
        made.append((candidate, item))
    return made


def mark(page):
    page.evaluate("window.__sameDocument = 'yes'")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument") == "yes"


def test_three_experts_vote_with_the_keyboard_blind_and_without_reloads(page_for, expert, expert2, expert3,
                                                                        make_user, candidates):
    (c1, i1), (c2, i2) = candidates
    expert4 = make_user("expert4", "expert")

    # expert1: comment (c), leave the box (Esc), keep (a); the next item arrives without a page load
    one = page_for(expert)
    one.goto(QUEUE)
    assert one.locator(".progress-label").inner_text() == "0 of 2"
    assert c1.prompt in one.locator("#candidate-prompt").inner_text()
    assert one.locator(".source a").get_attribute("href") == c1.source_url
    assert one.locator("#keymap").is_visible()
    mark(one)
    one.keyboard.press("?")
    assert one.locator("#keymap-details").evaluate("d => d.open") is True
    one.keyboard.press("c")
    one.wait_for_function("document.activeElement && document.activeElement.id === 'id_comment'")
    one.keyboard.type(SECRET)
    one.keyboard.press("Escape")
    one.keyboard.press("a")
    one.wait_for_selector(".progress-label:text-is('1 of 2')")
    assert c2.prompt in one.locator("#candidate-prompt").inner_text()
    assert "Saved: keep" in one.locator("#flash").inner_text()
    assert same_document(one)
    assert Decision.objects.get(item=i1, expert=expert).comment == SECRET

    # expert3 opens the queue now, before the decision
    three = page_for(expert3)
    three.goto(QUEUE)
    assert c1.prompt in three.locator("#candidate-prompt").inner_text()
    mark(three)

    # expert2 sees nothing of expert1's vote before voting
    two = page_for(expert2)
    two.goto(QUEUE)
    panel = two.locator("#review-panel").inner_text()
    assert c1.prompt in panel
    assert "expert1" not in panel and SECRET not in two.content()
    assert two.locator(".vote-other").count() == 0
    assert "hidden until you vote" in panel
    mark(two)
    two.keyboard.press("a")  # the second keep: accepted
    two.wait_for_selector("#flash .outcome-accepted")
    flash = two.locator("#flash").inner_text()
    assert "expert1" in flash and SECRET in flash  # after one's own vote, the others' votes are shown
    assert same_document(two)

    c1.refresh_from_db()
    task = BenchmarkTask.objects.get(candidate=c1)
    assert c1.status == CandidateTask.Status.ACCEPTED and task.prompt == c1.prompt
    assert ReviewItem.objects.get(pk=i1.pk).status == ReviewItem.Status.ACCEPTED
    assert f"#{task.index}" in flash

    # expert2 goes back (p) to the decided item: both votes shown; forward again (n)
    two.keyboard.press("p")
    two.wait_for_selector(f"#review-panel[data-item='{i1.pk}']")
    assert two.locator(".vote-other").count() == 1
    assert "accepted" in two.locator("#item-decided").inner_text()
    two.keyboard.press("n")
    two.wait_for_selector(f"#review-panel[data-item='{i2.pk}']")
    assert same_document(two)

    # expert3's queue: going to the next item and back shows the first as decided, without saying which way
    three.keyboard.press("n")
    three.wait_for_selector(f"#review-panel[data-item='{i2.pk}']")
    three.keyboard.press("p")
    three.wait_for_selector(f"#review-panel[data-item='{i1.pk}'][data-state='decided']")
    panel = three.locator("#review-panel").inner_text()
    assert "already decided" in panel
    assert "accepted" not in panel and "expert1" not in panel and SECRET not in panel
    assert same_document(three)

    # expert3 passes the second item (x): it goes to expert4 and leaves expert3's queue
    three.keyboard.press("n")
    three.wait_for_selector(f"#review-panel[data-item='{i2.pk}']")
    three.keyboard.press("x")
    three.wait_for_selector("#flash:has-text('Passed')")
    assert three.locator(".progress-label").inner_text() == "0 of 1"
    assert expert4.assignments.filter(item=i2).exists()
    assert same_document(three)
    assert BenchmarkTask.objects.count() == 1
