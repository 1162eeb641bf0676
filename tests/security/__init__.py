"""Attack and bad-input tests (issue 8): permission matrix, object access, schemathesis, hostile uploads, importer
fuzzing, secrets and login throttling.

:func:`build_world` makes the small world these tests share: one object of every kind a URL can name, with the
users of every role (an expert on the panels, another expert on none, an admin, a researcher, a user without a role).
Rows are created through the services where that is cheap and directly with the ORM where a service would need real
video files or a cluster.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

#: The roles of the permission matrix, in the order tables list them.
ANON, EXPERT, OTHER, ADMIN, RESEARCHER, NOROLE = "anon", "expert", "other_expert", "admin", "researcher", "norole"
ROLES = (ANON, EXPERT, OTHER, ADMIN, RESEARCHER, NOROLE)


@dataclass
class World:
    users: dict = field(default_factory=dict)  # role -> user (no entry for anonymous)
    ids: dict = field(default_factory=dict)  # name -> primary key / value to put in URLs
    objects: dict = field(default_factory=dict)  # name -> model instance


def build_world(tmp_path: Path, make_user) -> World:
    """Tasks 1-3 imported from the real release; a candidate in voting on a panel; a revision round with drafts of two
    experts and a pending adjudication; a finished export; a failed candidate; a source video with a stage run, a
    clip and a caption; a snapshot; a classifier version; a model under test with a generated video, a judge run
    with judgements, human-eval and pairwise items assigned to the panel expert; weights and a finished training job.

    Needs MEDIA_ROOT pointed at a temporary folder by the caller (the generated video and the export are files)."""
    from django.contrib.contenttypes.models import ContentType
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from annotation import services as review
    from annotation.models import Assignment, ReviewItem
    from datasets.models import Caption, ClassifierVersion, Clip, DatasetSnapshot, SnapshotItem, SourceVideo, StageRun
    from judging import human
    from judging.models import GeneratedVideo, Judgement, JudgeRun, ModelUnderTest
    from rubrics import revision
    from rubrics.models import (BenchmarkExport, BenchmarkTask, CandidateTask, Level, RevisionAdjudication,
                                RevisionProposal)
    from tests.helpers import import_release_subset
    from training_jobs.models import BaseModelWeights, TrainingJob

    world = World()
    users = world.users
    users[EXPERT] = make_user("expert1", "expert")
    users[OTHER] = make_user("expert2", "expert")
    helper3 = make_user("expert3", "expert")
    helper4 = make_user("expert4", "expert")
    users[ADMIN] = make_user("admin", "admin")
    users[RESEARCHER] = make_user("researcher", "researcher")
    users[NOROLE] = make_user("nobody", None)
    panel = [users[EXPERT], helper3, helper4]

    import_release_subset(tmp_path / "release", indices=(1, 2, 3))
    task1 = BenchmarkTask.objects.get(index=1)
    world.ids.update(task_index=1, user_id=users[NOROLE].pk)

    # Task voting: a candidate in voting on a panel without expert2; expert3 has voted already.
    candidate = CandidateTask.objects.create(
        status=CandidateTask.Status.VOTING, level=Level.CELLULAR, source_title="Mitochondrial fission",
        prompt="Mitochondria divide inside a HeLa cell under fluorescence.", source_url="https://example.org/v/1")
    item = review.review_item_open(workflow="task_voting", target=candidate)
    review.panel_assign(item=item, experts=panel, assigned_by=users[ADMIN])
    review.decision_submit(item=item, expert=helper3, value="keep", comment="SECRET-VOTE-COMMENT-of-expert3")
    world.ids.update(item_id=item.pk, workflow="task_voting")
    world.objects.update(candidate=candidate, item=item)
    failed = CandidateTask.objects.create(status=CandidateTask.Status.FAILED, source_title="A failed one",
                                          generation_error="the LLM said no")
    world.ids["candidate_id"] = failed.pk

    # Rubric revision: a round on task 1 with the panel; drafts of expert1 and expert3; an adjudication.
    round_ = revision.round_open(task=task1, by=users[ADMIN], experts=panel)
    criterion = task1.current_rubric.criteria.order_by("dimension", "position").first()
    mine = revision.proposal_save(round=round_, expert=users[EXPERT], op="modify", criterion_id=criterion.pk,
                                  description="DRAFT-OF-EXPERT1 a clearer description", rationale="expert1 reason",
                                  base_version_id=round_.base_version_id)
    theirs = revision.proposal_save(round=round_, expert=helper3, op="modify", criterion_id=criterion.pk,
                                    description="DRAFT-OF-EXPERT3 another description", rationale="expert3 reason",
                                    base_version_id=round_.base_version_id)
    adjudication = RevisionAdjudication.objects.create(round=round_, op="modify", criterion=criterion,
                                                       reason="conflicting modifications")
    adjudication.proposals.set([mine, theirs])
    world.ids.update(round_id=round_.pk, proposal_id=mine.pk, other_proposal_id=theirs.pk,
                     adjudication_id=adjudication.pk)
    world.objects.update(round=round_, proposal=mine, other_proposal=theirs, criterion=criterion)
    assert RevisionProposal.objects.filter(round=round_).count() == 2

    # A finished rubric export with its file.
    export = BenchmarkExport(style="released", status=BenchmarkExport.Status.DONE, task_count=3,
                             requested_by=users[RESEARCHER], finished_at=timezone.now())
    export.file.save("exports/released.json", ContentFile(b"[]"), save=False)
    export.sha256 = hashlib.sha256(b"[]").hexdigest()
    export.save()
    world.ids["export_id"] = export.pk

    # Pipeline: a source video (no real file needed for the pages), a finished split, a clip, a caption.
    video = SourceVideo.objects.create(
        title="A source video", license="CC BY", file="videos/ab/abc.mp4", original_name="cells.mp4",
        size_bytes=1234, sha256="ab" * 32, width=1280, height=720, fps=24, frame_count=48, duration=2.0,
        codec="h264", uploaded_by=users[RESEARCHER])
    StageRun.objects.create(video=video, stage=StageRun.Stage.SPLIT, status=StageRun.Status.DONE, progress=1,
                            clips_out=1, finished_at=timezone.now())
    clip = Clip.objects.create(video=video, position=0, start_frame=0, end_frame=48, fps=24,
                               embedder="colour-structure-v1", verdict=Clip.Verdict.KEPT)
    clip.file.save("clips/clip-0.mp4", ContentFile(b"\x00\x00\x00\x18ftypmp42" + bytes(64)), save=False)
    clip.thumbnail.save("clips/clip-0.jpg", ContentFile(b"\xff\xd8\xff\xe0" + bytes(32)), save=True)
    caption = Caption.objects.create(clip=clip, version=1, text="Mitochondria divide in a HeLa cell.",
                                     source=Caption.Source.LLM, status=Caption.Status.APPROVED)
    world.ids.update(video_id=video.pk, clip_id=clip.pk)
    snapshot = DatasetSnapshot.objects.create(name="snap-one", content_hash="0" * 64, clip_count=1,
                                              created_by=users[RESEARCHER])
    SnapshotItem.objects.create(snapshot=snapshot, clip=clip, caption=caption, position=0)
    classifier = ClassifierVersion.objects.create(version="clf-1", path=str(tmp_path / "clf-1"), base_dir="base",
                                                  status=ClassifierVersion.Status.READY)
    world.ids.update(snapshot_id=snapshot.pk, classifier_id=classifier.pk)

    # Judging: two models with a video each for task 1, an imported judge run, human-eval and pairwise items.
    alpha = ModelUnderTest.objects.create(name="SecretModelAlpha")
    beta = ModelUnderTest.objects.create(name="HiddenModelBeta")
    generated = {}
    for model in (alpha, beta):
        gv = GeneratedVideo(model=model, task=task1)
        gv.file.save(f"{model.name}/1.mp4", ContentFile(bytes(range(256)) * 8), save=True)
        generated[model.name] = gv
    run = JudgeRun.objects.create(model=alpha, judge_model="imported", status=JudgeRun.Status.DONE,
                                  started_at=timezone.now(), finished_at=timezone.now())
    version = task1.current_rubric
    for dim in ("scientific", "visual", "instruction"):
        Judgement.objects.create(run=run, task=task1, dimension=dim, rubric_version=version,
                                 video=generated["SecretModelAlpha"], status="flagged", flag_reason="no scores",
                                 raw_response="{}")
    world.ids.update(model_id=alpha.pk, run_id=run.pk)
    gv = generated["SecretModelAlpha"]
    human_item = ReviewItem.objects.create(workflow="human_eval",
                                           content_type=ContentType.objects.get_for_model(GeneratedVideo),
                                           object_id=gv.pk)
    Assignment.objects.create(item=human_item, expert=users[EXPERT], position=1)
    comparison = human.pairwise_create(task=task1, video_a=gv, video_b=generated["HiddenModelBeta"],
                                       experts=[users[EXPERT]], experts_per_item=1)
    pair_item = ReviewItem.objects.get(workflow="pairwise", object_id=comparison.pk)
    world.ids.update(human_item_id=human_item.pk, pair_item_id=pair_item.pk,
                     token=human.media_token(expert=users[EXPERT], video=gv))
    world.objects.update(generated_video=gv, human_item=human_item)

    # Training: registered weights and a finished job (no scheduler is asked about a final job).
    weights = BaseModelWeights.objects.create(name="Wan2.1-T2V-1.3B", path=str(tmp_path / "weights"))
    job = TrainingJob.objects.create(kind="finetune", name="job-one", backend="local", base_model=weights,
                                     state=TrainingJob.State.COMPLETED, work_dir=str(tmp_path / "job-one"),
                                     created_by=users[RESEARCHER], finished_at=timezone.now())
    world.ids["job_id"] = job.pk
    return world


def login(client, user) -> None:
    """Log `user` in on a Django test client (None: stay anonymous)."""
    client.logout()
    if user is not None:
        client.force_login(user)


def shared_world(django_db_setup, django_db_blocker, tmp_path_factory):
    """A generator for a module-scoped fixture: the world built once, inside a transaction that is rolled back at
    the end of the module (each test's own transaction nests inside it as a savepoint), with MEDIA_ROOT and the
    training folders in a temporary folder. Use as ``world = pytest.fixture(scope="module")(shared_world)``; tests
    still ask for ``db``."""
    from django.conf import settings
    from django.db import transaction
    from django.test.utils import override_settings

    from tests.conftest import make_user

    tmp_path = tmp_path_factory.mktemp("world")
    overrides = override_settings(
        MEDIA_ROOT=tmp_path / "media",
        STORAGES={**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}},
        TRAINING={**settings.TRAINING, "SNAPSHOT_ROOT": str(tmp_path / "snapshots"),
                  "WORK_ROOT": str(tmp_path / "jobs")},
    )
    with django_db_blocker.unblock(), overrides:
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            yield build_world(tmp_path, make_user)
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
