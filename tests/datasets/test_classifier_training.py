"""Classifier training from the experts' micro labels (datasets/classifier_versions.py): the labelled set, the
stratified split, training a real tiny VideoMAE (``build_tiny_videomae``, random weights, saved by the test) on
test-made H.264 clips (red: micro, blue: non-micro), the recorded metrics, activation, the pipeline's classify stage
loading the active version, least-sure-first ordering, the task, the command and the pages.

Helpers here (``clip_files``, ``media``, ``make_clip``, ``label``) are imported by test_snapshots.py too.
"""
from __future__ import annotations

import inspect
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import include, path

from annotation.models import ActionLog, Assignment, Decision, ReviewItem, Workflow
from datasets import classifier_versions as cv
from datasets import video_io
from datasets.models import ClassifierVersion, Clip, SourceVideo

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg is not installed")

# The site's URLs plus the snapshot/classifier pages, whether or not the site's urls.py includes them yet.
urlpatterns = [path("", include("microverse_site.urls")), path("", include("datasets.snapshot_urls"))]

RED_BGR = (0, 0, 220)
BLUE_BGR = (220, 0, 0)
CLIP_FRAMES, CLIP_FPS = 8, 8.0


# ---------------------------------------------------------------------------------------------------- helpers


def _noisy(bgr, seed: int):
    rng = np.random.default_rng(seed)
    base = np.array(bgr, dtype=np.int16)

    def draw(index: int, width: int, height: int) -> np.ndarray:
        return np.clip(base + rng.integers(-25, 26, (height, width, 3)), 0, 255).astype(np.uint8)

    return draw


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory) -> dict[str, list[Path]]:
    """12 red and 12 blue tiny H.264 clips (48x32, 8 frames), made once for the session."""
    folder = tmp_path_factory.mktemp("clip-files")
    files = {"red": [], "blue": []}
    for colour, bgr, offset in (("red", RED_BGR, 0), ("blue", BLUE_BGR, 1000)):
        for i in range(12):
            files[colour].append(video_io.make_test_video(folder / f"{colour}-{i}.mp4", frames=CLIP_FRAMES,
                                                          size=(48, 32), fps=CLIP_FPS,
                                                          draw=_noisy(bgr, offset + i)))
    return files


@pytest.fixture
def media(settings, tmp_path):
    """Media, trained classifiers and snapshot exports under tmp_path; returns the settings fixture."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    settings.CLASSIFIERS_ROOT = str(tmp_path / "classifiers")
    settings.TRAINING = {**settings.TRAINING, "SNAPSHOT_ROOT": str(tmp_path / "snapshots")}
    settings.PIPELINE = {**settings.PIPELINE, "CLASSIFIER_DIR": "", "CLASSIFIER_THRESHOLD": 0.5}
    return settings


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models train fastest on one thread (a busy 2-core machine)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from datasets.classifier import build_tiny_videomae

    return build_tiny_videomae(tmp_path_factory.mktemp("models") / "tiny-base", seed=0)


def make_video(title: str = "Source") -> SourceVideo:
    return SourceVideo.objects.create(title=title, description=f"About {title}", file=f"videos/{title}.mp4",
                                      sha256=uuid.uuid4().hex * 2, width=48, height=32, fps=CLIP_FPS,
                                      frame_count=10000, duration=10000 / CLIP_FPS)


def make_clip(video: SourceVideo, source: Path, *, position: int | None = None) -> Clip:
    """A clip of ``video`` whose stored file is a copy of ``source``."""
    position = video.clips.count() if position is None else position
    with source.open("rb") as handle:
        name = default_storage.save(f"clips/test/{video.pk}-{position}-{source.name}", handle)
    return Clip.objects.create(video=video, position=position, start_frame=position * 100,
                               end_frame=position * 100 + CLIP_FRAMES, fps=CLIP_FPS, file=name, embedder="test")


def label(clip: Clip, experts, micro_labels, *, value: str = "keep",
          status: str = ReviewItem.Status.ACCEPTED) -> ReviewItem:
    """The clip's verification item with one Decision per expert; ``micro_labels[i]`` is expert i's micro label
    (None: the expert gave none)."""
    item, _ = ReviewItem.objects.get_or_create(workflow=Workflow.CLIP_VERIFICATION,
                                               content_type=ContentType.objects.get_for_model(Clip),
                                               object_id=clip.pk, defaults={"status": status})
    for expert, micro in zip(experts, micro_labels):
        Assignment.objects.get_or_create(item=item, expert=expert, defaults={"status": Assignment.Status.DONE})
        Decision.objects.create(item=item, expert=expert, value=value,
                                extra={} if micro is None else {"micro": micro})
    return item


@pytest.fixture
def experts(expert, expert2, expert3):
    return [expert, expert2, expert3]


@pytest.fixture
def labelled_clips(media, clip_files, experts):
    """10 red clips labelled micro and 10 blue labelled non-micro (majorities of 3 or 2 experts, some split 2-1),
    one tie and one unlabelled clip."""
    video = make_video("Red and blue")
    clips = {"red": [], "blue": []}
    for i in range(10):
        red, blue = make_clip(video, clip_files["red"][i]), make_clip(video, clip_files["blue"][i])
        label(red, experts, [True, True, i % 3 != 0])
        label(blue, experts[:2] if i % 2 else experts, [False, False, i % 4 == 0])
        clips["red"].append(red)
        clips["blue"].append(blue)
    clips["tie"] = make_clip(video, clip_files["red"][10])
    label(clips["tie"], experts[:2], [True, False])
    clips["unlabelled"] = make_clip(video, clip_files["blue"][10])
    label(clips["unlabelled"], experts, [None, None, None])
    return clips


def train_tiny(base: Path, *, user=None, epochs: int = 8, seed: int = 0) -> ClassifierVersion:
    # lr 1e-3 (not the paper's 5e-5): a randomly initialised tiny model needs it to learn in a few epochs.
    return cv.classifier_train(base_dir=str(base), lr=1e-3, epochs=epochs, seed=seed, user=user)


# ------------------------------------------------------------------------------------------ labels and split


@pytest.mark.django_db
def test_labelled_set_takes_the_experts_majority_and_leaves_ties_out(media, clip_files, experts):
    video = make_video()
    a, b, c, d, e = (make_clip(video, clip_files["red"][i]) for i in range(5))
    label(a, experts, [True, True, False])
    label(b, experts[:2], [True, False])  # tie
    label(c, experts, [False, None, True, ])  # one label each way, one expert gave none: tie
    label(d, experts, [False, False, True])
    ReviewItem.objects.create(workflow=Workflow.CAPTION_CHECK, content_type=ContentType.objects.get_for_model(Clip),
                              object_id=e.pk)
    Decision.objects.create(item=ReviewItem.objects.get(workflow=Workflow.CAPTION_CHECK), expert=experts[0],
                            value="keep", extra={"micro": True})  # another workflow: not a micro label
    rejected = make_clip(video, clip_files["blue"][0])
    label(rejected, experts, [False, False, False], value="reject", status=ReviewItem.Status.REJECTED)
    labelled = cv.labelled_set()
    assert [(x.clip_id, x.micro, x.votes, x.majority) for x in labelled] == [
        (a.pk, True, 3, 2), (d.pk, False, 3, 2), (rejected.pk, False, 3, 3)]


def test_split_is_stratified_80_20_and_seeded():
    labelled = [cv.LabelledClip(clip_id=i, micro=i % 2 == 0, votes=3, majority=3) for i in range(1, 21)]
    train, test = cv.split_labelled(labelled, seed=7)
    assert (len(train), len(test)) == (16, 4)
    assert sum(c.micro for c in test) == 2 and sum(c.micro for c in train) == 8
    assert {c.clip_id for c in train} | {c.clip_id for c in test} == set(range(1, 21))
    assert cv.split_labelled(labelled, seed=7) == (train, test)
    with pytest.raises(cv.ClassifierTrainingError, match="Not enough expert labels"):
        cv.split_labelled(labelled[:5], seed=0)
    with pytest.raises(cv.ClassifierTrainingError, match="0 non-micro"):
        cv.split_labelled([c for c in labelled if c.micro], seed=0)


# --------------------------------------------------------------------------------------- the whole path


@pytest.mark.django_db
def test_train_record_metrics_activate_and_the_pipeline_loads_the_active_version(
        media, labelled_clips, tiny_base, admin_user, researcher):
    from datasets import classifier

    version = train_tiny(tiny_base, user=researcher)
    assert version.status == ClassifierVersion.Status.READY, version.error
    assert version.version == f"v{version.pk}"
    assert Path(version.path) == Path(media.CLASSIFIERS_ROOT) / version.version
    assert (Path(version.path) / "config.json").is_file()
    assert (version.train_count, version.test_count) == (16, 4)  # the tie and the unlabelled clip are left out
    assert version.config["lr"] == 1e-3 and version.config["epochs"] == 8 and version.config["seed"] == 0
    metrics = version.metrics
    assert {"accuracy", "precision", "recall", "f1", "confusion_matrix", "epoch_losses",
            "model_version"} <= set(metrics)
    matrix = metrics["confusion_matrix"]["matrix"]
    assert metrics["confusion_matrix"]["labels"] == ["non-micro", "micro"]
    assert sum(map(sum, matrix)) == version.test_count == 4
    assert sum(matrix[1]) == 2 and sum(matrix[0]) == 2  # stratified: 2 micro and 2 non-micro clips in the test
    assert metrics["accuracy"] >= 0.75, metrics  # red against blue separates easily
    assert len(metrics["epoch_losses"]) == 8 and metrics["epoch_losses"][-1] < metrics["epoch_losses"][0]
    test_ids = set(metrics["test_clip_ids"])
    train_ids = {clip_id for clip_id, _ in version.config["train"]}
    assert not test_ids & train_ids and labelled_clips["tie"].pk not in test_ids | train_ids
    assert ActionLog.objects.filter(verb="classifier_train", actor=researcher, target_id=str(version.pk)).exists()
    assert ActionLog.objects.filter(verb="classifier_ready", target_id=str(version.pk)).exists()

    # Before activation the classify stage reads PIPELINE["CLASSIFIER_DIR"] ("": unclassified).
    assert cv.active_classifier_dir() == ""
    with pytest.raises(PermissionDenied):
        cv.classifier_activate(version=version, user=researcher)
    cv.classifier_activate(version=version, user=admin_user)
    assert cv.active_classifier_dir() == version.path
    loaded = classifier.classifier_from_settings(cv.active_classifier_dir())
    assert loaded.version == metrics["model_version"] and loaded.version.startswith(f"{version.version}@")
    red = cv.clip_frames(labelled_clips["red"][0])
    blue = cv.clip_frames(labelled_clips["blue"][0])
    assert loaded.predict(red) > loaded.predict(blue)

    # A second version replaces it: one active at a time, both changes logged.
    second = train_tiny(tiny_base, user=researcher, epochs=1, seed=1)
    cv.classifier_activate(version=second, user=admin_user)
    assert list(ClassifierVersion.objects.filter(is_active=True)) == [second]
    assert cv.active_classifier_dir() == second.path
    log = ActionLog.objects.filter(verb="classifier_activate").order_by("id")
    assert [(e.before, e.after) for e in log] == [({"active": None}, {"active": version.version}),
                                                  ({"active": version.version}, {"active": second.version})]
    cv.classifier_deactivate(user=admin_user)
    assert cv.active_classifier_dir() == ""
    media.PIPELINE = {**media.PIPELINE, "CLASSIFIER_DIR": "/models/configured"}
    assert cv.active_classifier_dir() == "/models/configured"


def _pipeline_reads_active_version() -> bool:
    from datasets import pipeline

    return "active_classifier_dir" in inspect.getsource(pipeline)


@pytest.mark.django_db
@pytest.mark.skipif(not _pipeline_reads_active_version(),
                    reason="datasets/pipeline.py does not call classifier_versions.active_classifier_dir() yet "
                           "(the one-line change in _stage_tools is pending)")
def test_the_classify_stage_scores_clips_with_the_active_version(media, labelled_clips, tiny_base, admin_user,
                                                                 tmp_path):
    from datasets import pipeline
    from tests.datasets.test_pipeline import clean_video, ingest_video, pipeline_overrides, run_all

    media.PIPELINE = pipeline_overrides(CLASSIFIER_DIR="", CLASSIFIER_THRESHOLD=0.0)
    version = train_tiny(tiny_base, epochs=2)
    cv.classifier_activate(version=version, user=admin_user)
    video = ingest_video(clean_video(tmp_path))
    runs = run_all(video)
    assert runs[pipeline.Stage.CLASSIFY].status == "done", runs[pipeline.Stage.CLASSIFY].error
    clips = list(Clip.objects.filter(video=video))
    assert clips and all(c.micro_probability is not None for c in clips)
    assert {c.classifier_version for c in clips} == {version.metrics["model_version"]}


@pytest.mark.django_db
def test_a_failure_marks_the_version_failed_with_the_error(media, labelled_clips, tiny_base, tmp_path):
    base = tmp_path / "base-copy"
    shutil.copytree(tiny_base, base)
    version = cv.classifier_train_start(base_dir=str(base), lr=1e-3, epochs=1, seed=0)
    assert version.status == ClassifierVersion.Status.TRAINING
    shutil.rmtree(base)  # gone before the worker gets to it
    version = cv.classifier_train_run(version_id=version.pk)
    assert version.status == ClassifierVersion.Status.FAILED
    assert "does not exist" in version.error and not Path(version.path).exists()
    assert version.metrics == {}
    with pytest.raises(cv.ClassifierTrainingError, match="only a ready version"):
        cv.classifier_activate(version=version, user=None)
    assert cv.classifier_train_run(version_id=version.pk).status == ClassifierVersion.Status.FAILED  # idempotent


@pytest.mark.django_db
def test_training_that_cannot_start_registers_nothing(media, clip_files, experts, tiny_base, tmp_path):
    with pytest.raises(cv.ClassifierTrainingError, match="Not enough expert labels"):
        cv.classifier_train_start(base_dir=str(tiny_base))
    with pytest.raises(cv.ClassifierTrainingError, match="does not exist"):
        cv.classifier_train_start(base_dir=str(tmp_path / "nothing"))
    with pytest.raises(cv.ClassifierTrainingError, match="Give the base model"):
        cv.classifier_train_start(base_dir=" ")
    with pytest.raises(cv.ClassifierTrainingError, match="Epochs"):
        cv.classifier_train_start(base_dir=str(tiny_base), epochs=0)
    assert not ClassifierVersion.objects.exists()


@pytest.mark.django_db
def test_the_task_is_on_the_gpu_queue_and_idempotent(media, labelled_clips, tiny_base, monkeypatch):
    from datasets import classifier_tasks

    task = classifier_tasks.train_classifier
    sent = []
    monkeypatch.setattr(task, "apply_async", lambda args, **options: sent.append((args, options)))
    classifier_tasks.enqueue(42)
    assert task.name == "datasets.classifier_tasks.train_classifier" and sent == [((42,), {"queue": "gpu"})]
    monkeypatch.undo()
    version = cv.classifier_train_start(base_dir=str(tiny_base), lr=1e-3, epochs=1, seed=0)
    assert task(version.pk) == "ready"
    mtime = (Path(version.path) / "config.json").stat().st_mtime_ns
    assert task(version.pk) == "ready"  # a second delivery does nothing
    assert (Path(version.path) / "config.json").stat().st_mtime_ns == mtime


@pytest.mark.django_db
def test_train_classifier_command(media, labelled_clips, tiny_base, capsys):
    call_command("train_classifier", "--base", str(tiny_base), "--epochs", "1", "--lr", "1e-3", "--seed", "3",
                 "--activate")
    out = capsys.readouterr().out
    version = ClassifierVersion.objects.get()
    assert version.is_active and version.config["seed"] == 3
    assert f"Version {version.version}: training on 16 clips, testing on 4" in out
    assert "accuracy" in out and "confusion matrix" in out and version.metrics["model_version"] in out
    with pytest.raises(CommandError, match="does not exist"):
        call_command("train_classifier", "--base", "/nowhere/model")


# ------------------------------------------------------------------------------------------- least sure first


@pytest.mark.django_db
def test_uncertainty_order_serves_the_least_sure_clips_first(media, clip_files, expert):
    video = make_video()
    active = ClassifierVersion.objects.create(version="v-active", path="/m/v-active", base_dir="/m/base",
                                              status="ready", is_active=True,
                                              metrics={"model_version": "v-active@aaa"})
    spec = [(0.95, "v-active@aaa"), (0.75, "v-active@aaa"), (0.1, "v-active@aaa"), (0.25, "v-active@aaa"),
            (0.5, "other@bbb"), (None, ""), (0.98, "other@bbb")]
    clips = []
    for p, tag in spec:
        clip = make_clip(video, clip_files["red"][0])
        Clip.objects.filter(pk=clip.pk).update(micro_probability=p, classifier_version=tag)
        clips.append(clip)
    ordered = [c.pk for c in cv.uncertainty_order(Clip.objects.filter(video=video))]
    # active version's scores by |p - 0.5| (0.25 and 0.75 tie: by id), then other classifiers', unclassified last
    assert ordered == [clips[i].pk for i in (1, 3, 2, 0, 4, 6, 5)]

    for position, clip in enumerate(clips):
        item = ReviewItem.objects.create(workflow=Workflow.CLIP_VERIFICATION, object_id=clip.pk,
                                         content_type=ContentType.objects.get_for_model(Clip))
        Assignment.objects.create(item=item, expert=expert, position=position)
    from annotation import selectors

    queue = cv.uncertainty_order(selectors.queue(expert=expert, workflow=Workflow.CLIP_VERIFICATION))
    assert [a.item.object_id for a in queue] == ordered

    active.is_active = False
    active.save()
    no_active = [c.pk for c in cv.uncertainty_order(Clip.objects.filter(video=video))]
    assert no_active[-1] == clips[5].pk and no_active[:2] == [clips[4].pk, clips[1].pk]
    with pytest.raises(TypeError):
        cv.uncertainty_order(SourceVideo.objects.all())


# ------------------------------------------------------------------------------------------------------ pages


pages = pytest.mark.urls(__name__)


@pages
@pytest.mark.django_db
def test_classifier_page_permissions(client, media, expert, researcher, admin_user):
    version = ClassifierVersion.objects.create(
        version="v9", path="/m/v9", base_dir="/m/base", status="ready", train_count=16, test_count=4,
        config={"lr": 5e-5, "epochs": 10, "seed": 0},
        metrics={"accuracy": 0.75, "precision": 1.0, "recall": 0.5, "f1": 0.667, "epoch_losses": [0.7, 0.3],
                 "confusion_matrix": {"labels": ["non-micro", "micro"], "matrix": [[2, 0], [1, 1]]},
                 "model_version": "v9@abc"})
    assert client.get("/pipeline/classifiers/").status_code == 302  # anonymous: to the login page
    client.force_login(expert)
    assert client.get("/pipeline/classifiers/").status_code == 403
    assert client.post(f"/pipeline/classifiers/{version.pk}/activate/").status_code == 403
    assert client.post("/pipeline/classifiers/train/").status_code == 403

    client.force_login(researcher)
    page = client.get("/pipeline/classifiers/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "v9" in html and "0.750" in html and "0.667" in html and 'class="activate"' not in html
    assert client.post(f"/pipeline/classifiers/{version.pk}/activate/").status_code == 403
    assert not ClassifierVersion.objects.get(pk=version.pk).is_active

    client.force_login(admin_user)
    assert 'class="activate"' in client.get("/pipeline/classifiers/").content.decode()
    # the model directory does not exist: refused with a message, not activated
    response = client.post(f"/pipeline/classifiers/{version.pk}/activate/", follow=True)
    assert "is gone" in response.content.decode() and not ClassifierVersion.objects.get(pk=version.pk).is_active


@pages
@pytest.mark.django_db
def test_train_and_activate_from_the_pages(client, media, labelled_clips, tiny_base, researcher, admin_user,
                                           django_capture_on_commit_callbacks, monkeypatch):
    from datasets import classifier_tasks

    queued = []
    monkeypatch.setattr(classifier_tasks, "enqueue", lambda version_id: queued.append(version_id))
    client.force_login(researcher)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/pipeline/classifiers/train/",
                               {"base_dir": str(tiny_base), "lr": "0.001", "epochs": "1", "seed": "0"}, follow=True)
    version = ClassifierVersion.objects.get()
    assert queued == [version.pk] and version.status == "training"
    assert f"Version {version.version} queued" in response.content.decode()
    assert 'http-equiv="refresh"' in response.content.decode()
    classifier_tasks.train_classifier(version.pk)  # what the worker does

    response = client.post("/pipeline/classifiers/train/", {"base_dir": "/nowhere"}, follow=True)
    assert "does not exist" in response.content.decode() and ClassifierVersion.objects.count() == 1

    client.force_login(admin_user)
    response = client.post(f"/pipeline/classifiers/{version.pk}/activate/", follow=True)
    assert response.status_code == 200 and ClassifierVersion.objects.get(pk=version.pk).is_active
    assert f"Version <strong>{version.version}</strong>" in response.content.decode()
