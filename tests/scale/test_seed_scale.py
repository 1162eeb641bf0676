"""``manage.py seed_scale`` at a tiny scale: exactly the requested counts, consistent rows, refusal on a non-empty
database without --force."""
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count

from annotation.models import ActionLog, Assignment, Decision, ReviewItem, Workflow
from datasets.models import Clip, SourceVideo, StageRun
from rubrics.models import BenchmarkTask, CandidateTask, Criterion

pytestmark = pytest.mark.django_db

ARGS = ["--experts", "4", "--candidates", "40", "--tasks", "7", "--clips", "150", "--decisions", "400",
        "--log-rows", "900", "--seed", "3", "--batch", "64"]


def run(*args):
    out = io.StringIO()
    call_command("seed_scale", *args, stdout=out)
    return out.getvalue()


def test_tiny_scale_gives_the_requested_counts():
    output = run(*ARGS)
    assert "seeded in" in output and "action log:" in output  # prints the time of each step

    experts = get_user_model().objects.filter(groups__name="expert", username__startswith="scale-expert")
    assert experts.count() == 4
    assert get_user_model().objects.filter(username="scale-admin", groups__name="admin").exists()
    assert CandidateTask.objects.count() == 40
    assert BenchmarkTask.objects.count() == 7
    assert all(t.current_rubric is not None and t.current_rubric.task_id == t.pk
               for t in BenchmarkTask.objects.select_related("current_rubric"))
    assert Criterion.objects.count() == 7 * 15
    assert Clip.objects.count() == 150
    assert Decision.objects.count() == 400
    assert ActionLog.objects.count() == 900

    # every decision has its panel assignment, done; at most one decision per expert and item (the constraint)
    assert not Decision.objects.exclude(item__assignments__expert=models_f("expert")).exists()
    panels = ReviewItem.objects.annotate(n=Count("assignments")).values_list("n", flat=True)
    assert set(panels) == {3}
    done = Assignment.objects.filter(status=Assignment.Status.DONE).count()
    assert done == 400
    # every expert has items waiting in the task-voting queue (the load benchmark works them)
    for expert in experts:
        assert Assignment.objects.filter(expert=expert, status=Assignment.Status.ASSIGNED,
                                         item__workflow=Workflow.TASK_VOTING).exists()
    # decided panels have their outcome; task-voting candidates follow it
    decided = ReviewItem.objects.exclude(status=ReviewItem.Status.OPEN)
    assert decided.exists() and not decided.filter(decided_at__isnull=True).exists()
    assert CandidateTask.objects.filter(status=CandidateTask.Status.ACCEPTED).count() == ReviewItem.objects.filter(
        workflow=Workflow.TASK_VOTING, status=ReviewItem.Status.ACCEPTED).count()
    # admitted videos have their four stage runs done; refused ones none
    admitted = SourceVideo.objects.filter(admission=SourceVideo.Admission.ADMITTED)
    assert StageRun.objects.filter(status=StageRun.Status.DONE).count() == 4 * admitted.count()
    assert not Clip.objects.exclude(video__admission=SourceVideo.Admission.ADMITTED).exists()
    # the log counts one "decide" per decision
    assert ActionLog.objects.filter(verb="decide").count() == 400


def models_f(name):
    from django.db.models import F

    return F(name)


def test_refuses_a_non_empty_database_unless_forced():
    run(*ARGS)
    with pytest.raises(CommandError, match="--force"):
        run(*ARGS)
    run(*ARGS, "--force")
    assert Decision.objects.count() == 800 and Clip.objects.count() == 300
    assert get_user_model().objects.filter(username__startswith="scale-expert").count() == 4


def test_impossible_counts_are_refused():
    with pytest.raises(CommandError, match="more than"):
        run("--experts", "3", "--candidates", "2", "--tasks", "0", "--clips", "1", "--decisions", "100",
            "--log-rows", "0")
    with pytest.raises(CommandError, match="at least 3"):
        run("--experts", "2", "--candidates", "2", "--tasks", "0", "--clips", "0", "--decisions", "0",
            "--log-rows", "0")
