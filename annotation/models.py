"""Review machinery shared by every expert workflow: items, panels (assignments), decisions and the action log."""
from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models


class Workflow(models.TextChoices):
    TASK_VOTING = "task_voting", "Task voting"
    RUBRIC_REVISION = "rubric_revision", "Rubric revision"
    CLIP_VERIFICATION = "clip_verification", "Clip verification"
    CAPTION_CHECK = "caption_check", "Caption checking"
    HUMAN_EVAL = "human_eval", "Human evaluation (scoring generated videos)"
    PAIRWISE = "pairwise", "Blind pairwise preference"


class WorkflowConfig(models.Model):
    """Panel size and quorum per workflow; a workflow without a row uses REVIEW_PANEL_SIZE / REVIEW_QUORUM."""

    workflow = models.CharField(max_length=40, choices=Workflow.choices, unique=True)
    panel_size = models.PositiveSmallIntegerField()
    quorum = models.PositiveSmallIntegerField()

    def __str__(self):
        return f"{self.workflow}: {self.quorum} of {self.panel_size}"


class ReviewItem(models.Model):
    """One thing a panel decides on (a candidate task, a rubric revision round, a clip, a caption)."""

    class Status(models.TextChoices):
        OPEN = "open"
        ACCEPTED = "accepted"
        REJECTED = "rejected"
        CLOSED = "closed"

    workflow = models.CharField(max_length=40, choices=Workflow.choices, db_index=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT)
    object_id = models.PositiveBigIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "content_type", "object_id"], name="review_item_unique_target")
        ]
        indexes = [models.Index(fields=["workflow", "status"])]

    def __str__(self):
        return f"{self.workflow} #{self.pk}"


class Assignment(models.Model):
    """An expert's place on an item's panel, and the item's place in that expert's queue."""

    class Status(models.TextChoices):
        ASSIGNED = "assigned"
        DONE = "done"
        PASSED = "passed"  # "outside my expertise": the item is reassigned to someone else

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="assignments")
    # A copy of item.workflow (which never changes): an expert's queue for one workflow is then read from this
    # table's own index, not by joining tens of thousands of assignments to their items.
    workflow = models.CharField(max_length=40, choices=Workflow.choices, editable=False)
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ASSIGNED)
    position = models.PositiveIntegerField(default=0, help_text="Order in the expert's queue.")
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "expert"], name="assignment_unique_expert")]
        indexes = [models.Index(fields=["expert", "status", "position"]),
                   # the next waiting item, and the queue's order (previous / next, progress)
                   models.Index(fields=["expert", "workflow", "status", "position"], name="assignment_queue"),
                   models.Index(fields=["expert", "workflow", "position"], name="assignment_queue_order")]

    def save(self, *args, **kwargs):
        if not self.workflow:
            self.workflow = self.item.workflow
        super().save(*args, **kwargs)


class Decision(models.Model):
    """One expert's decision on one item (unique per expert and item; changes are logged, not duplicated)."""

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="decisions")
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions")
    value = models.CharField(max_length=20, help_text="keep / reject (or the workflow's own labels).")
    reason = models.CharField(max_length=40, blank=True)
    comment = models.TextField(blank=True)
    extra = models.JSONField(default=dict, blank=True, help_text="Workflow-specific labels, e.g. micro / non-micro.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "expert"], name="decision_unique_expert")]


class ActionLogQuerySet(models.QuerySet):
    """Bulk update and delete go straight to SQL, past Model.save()/delete(); refuse them here too."""

    def update(self, **kwargs):
        raise ValidationError("The action log is append-only.")

    def delete(self):
        raise ValidationError("The action log is append-only.")


class ActionLog(models.Model):
    """Append-only record of every expert and admin action: who did what, on which item, before/after, and why.

    Rows are written in the same transaction as the action they record. The model refuses updates and deletes; on
    PostgreSQL a trigger refuses them in the database as well.
    """

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    verb = models.CharField(max_length=40, db_index=True)
    workflow = models.CharField(max_length=40, blank=True, db_index=True)
    item = models.ForeignKey(ReviewItem, null=True, blank=True, on_delete=models.PROTECT, related_name="log")
    target_type = models.CharField(max_length=60, blank=True)
    target_id = models.CharField(max_length=60, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = ActionLogQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        # newest first, as the log page lists it (many rows share a timestamp when written in one transaction)
        indexes = [models.Index(fields=["actor", "verb"]),
                   models.Index(fields=["-created_at", "-id"], name="actionlog_newest_first")]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError("The action log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("The action log is append-only.")
