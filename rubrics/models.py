"""Benchmark tasks and their rubrics. A rubric is a chain of immutable versions; the task points at the current one."""
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class Level(models.TextChoices):
    ORGAN = "Organ-level", "Organ"
    CELLULAR = "Cellular-level", "Cellular"
    SUBCELLULAR = "Subcellular-level", "Subcellular"


class Dimension(models.TextChoices):
    SCIENTIFIC = "scientific", "Scientific"
    VISUAL = "visual", "Visual"
    INSTRUCTION = "instruction", "Instruction following"


class BenchmarkTask(models.Model):
    index = models.PositiveIntegerField(unique=True)
    prompt = models.TextField()
    requirement = models.TextField()
    level = models.CharField(max_length=20, choices=Level.choices, db_index=True)
    source_id = models.TextField(blank=True, help_text="The release's source id: channel, title and URL.")
    source_url = models.URLField(max_length=500, blank=True)
    source_title = models.TextField(blank=True)
    classification_confidence = models.PositiveSmallIntegerField(null=True, blank=True)
    source_metadata = models.JSONField(default=dict, blank=True, help_text="Other fields of finaltasks.json, kept as is.")
    current_rubric = models.ForeignKey(
        "RubricVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["index"]

    def __str__(self):
        return f"Task {self.index}"


class RubricVersion(models.Model):
    """One immutable version of a task's rubric. Saved once with its criteria; never edited afterwards."""

    task = models.ForeignKey(BenchmarkTask, on_delete=models.CASCADE, related_name="rubric_versions")
    number = models.PositiveIntegerField()
    label = models.CharField(max_length=40, help_text='"draft", "released", or the name of a revision.')
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task__index", "number"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="rubric_version_number_unique"),
            models.UniqueConstraint(fields=["task", "label"], name="rubric_version_label_unique"),
        ]

    def __str__(self):
        return f"Task {self.task.index} rubric v{self.number} ({self.label})"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.pop("_allow_update", False):
            raise ValidationError("Rubric versions are immutable; create a new version instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Rubric versions are kept forever.")


class Criterion(models.Model):
    version = models.ForeignKey(RubricVersion, on_delete=models.CASCADE, related_name="criteria")
    dimension = models.CharField(max_length=20, choices=Dimension.choices)
    position = models.PositiveSmallIntegerField(help_text="Order within the dimension, from 1.")
    key_number = models.PositiveIntegerField(help_text="The release's key number (d1/s1/w1 -> 1, d11 -> 11).")
    description = models.TextField()
    polarity = models.SmallIntegerField(choices=[(1, "+1 (bonus)"), (-1, "-1 (penalty)")])
    weight = models.FloatField()

    class Meta:
        ordering = ["version_id", "dimension", "position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "dimension", "position"], name="criterion_position_unique"),
            models.CheckConstraint(condition=models.Q(polarity__in=[1, -1]), name="criterion_polarity_pm1"),
            models.CheckConstraint(condition=models.Q(weight__gte=0), name="criterion_weight_nonnegative"),
        ]

    def __str__(self):
        return f"{self.dimension} #{self.position}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValidationError("Criteria belong to an immutable rubric version.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Criteria belong to an immutable rubric version.")


class BenchmarkExport(models.Model):
    """A rubric file written by a worker in the published format, kept in storage for download."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    style = models.CharField(max_length=20, choices=[("released", "released"), ("draft", "draft")])
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    file = models.FileField(upload_to="exports/", blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    task_count = models.PositiveIntegerField(default=0)
    criterion_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    @property
    def is_final(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.FAILED}


class CandidateTask(models.Model):
    """A candidate benchmark task from a source video's metadata; task voting turns it into a BenchmarkTask."""

    class Status(models.TextChoices):
        PENDING = "pending", "waiting for the LLM"
        GENERATING = "generating"
        VOTING = "voting", "in task voting"
        ACCEPTED = "accepted"
        REJECTED = "rejected"
        FAILED = "failed", "generation failed"

    source_title = models.TextField()
    source_description = models.TextField(blank=True)
    source_url = models.URLField(max_length=500, blank=True)
    prompt = models.TextField(blank=True)
    level = models.CharField(max_length=20, choices=Level.choices, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    generation_error = models.TextField(blank=True)
    import_batch = models.CharField(max_length=64, blank=True, db_index=True)
    task = models.OneToOneField(BenchmarkTask, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="candidate")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"Candidate {self.pk}: {self.source_title[:60]}"


class RevisionRound(models.Model):
    """A panel's independent revision of one rubric version; aggregation turns it into a new version."""

    class Status(models.TextChoices):
        OPEN = "open"
        ADJUDICATION = "adjudication", "waiting for adjudication"
        DONE = "done"

    task = models.ForeignKey(BenchmarkTask, on_delete=models.CASCADE, related_name="revision_rounds")
    base_version = models.ForeignKey(RubricVersion, on_delete=models.PROTECT, related_name="revision_rounds")
    status = models.CharField(max_length=14, choices=Status.choices, default=Status.OPEN, db_index=True)
    result_version = models.ForeignKey(RubricVersion, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="produced_by_rounds")
    created_at = models.DateTimeField(auto_now_add=True)
    aggregated_at = models.DateTimeField(null=True, blank=True)


class RevisionProposal(models.Model):
    """One expert's proposed operation on a rubric, with its required rationale."""

    class Op(models.TextChoices):
        DELETE = "delete", "Delete"
        MODIFY = "modify", "Modify description"
        WEIGHT = "weight", "Adjust weight / polarity"
        SUPPLEMENT = "supplement", "Supplement (add a criterion)"

    class Status(models.TextChoices):
        DRAFT = "draft"
        SUBMITTED = "submitted"

    round = models.ForeignKey(RevisionRound, on_delete=models.CASCADE, related_name="proposals")
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rubric_proposals")
    op = models.CharField(max_length=12, choices=Op.choices)
    criterion = models.ForeignKey(Criterion, null=True, blank=True, on_delete=models.PROTECT,
                                  help_text="The base version's criterion (empty for a supplement).")
    dimension = models.CharField(max_length=20, choices=Dimension.choices, blank=True)
    description = models.TextField(blank=True)
    polarity = models.SmallIntegerField(null=True, blank=True)
    weight = models.FloatField(null=True, blank=True)
    rationale = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["round_id", "expert_id", "id"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(rationale=""), name="proposal_rationale_required"),
        ]


class RevisionAdjudication(models.Model):
    """A minority or conflicting proposal group that an admin accepts or rejects, with a rationale."""

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    round = models.ForeignKey(RevisionRound, on_delete=models.CASCADE, related_name="adjudications")
    op = models.CharField(max_length=12, choices=RevisionProposal.Op.choices)
    criterion = models.ForeignKey(Criterion, null=True, blank=True, on_delete=models.PROTECT)
    reason = models.CharField(max_length=200)
    proposals = models.ManyToManyField(RevisionProposal, related_name="adjudications")
    chosen_proposal = models.ForeignKey(RevisionProposal, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    rationale = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)


class RubricChange(models.Model):
    """One change a rubric version made to its parent, linked to the proposals (and adjudication) behind it."""

    version = models.ForeignKey(RubricVersion, on_delete=models.CASCADE, related_name="changes")
    op = models.CharField(max_length=12, choices=RevisionProposal.Op.choices)
    dimension = models.CharField(max_length=20, choices=Dimension.choices)
    key_number = models.PositiveIntegerField()
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    proposals = models.ManyToManyField(RevisionProposal, related_name="applied_as")
    adjudication = models.ForeignKey(RevisionAdjudication, null=True, blank=True, on_delete=models.PROTECT)
