"""``manage.py seed_scale``: a realistic database at scale, fast, for the load benchmark and the scale tests.

    python manage.py seed_scale --experts 10 --candidates 8000 --tasks 459 --clips 100000 \\
        --decisions 500000 --log-rows 1000000 [--seed S] [--password PW] [--force]

What it makes (deterministic for a given ``--seed``):

* users ``scale-expert01`` ... (group expert), ``scale-admin`` (admin), ``scale-researcher`` (researcher), all with
  ``--password``;
* ``--tasks`` benchmark tasks with one "released" rubric version of 15 criteria each (5 per dimension);
* ``--candidates`` candidate tasks, each a task-voting review item with a panel of 3 experts (balanced, rotating);
* source videos (about 100 clips each, 1 in 10 refused by an admission rule) with their four stage runs done, and
  ``--clips`` clips (kept / dropped by borders, text or the classifier, with raw measurements);
* ``--decisions`` decisions: task voting first (9 in 10 candidates decided by a full panel, the rest open with 0, 1
  or 2 votes in turn, so every expert has a queue waiting), then clip verification on the clips, then caption checking on
  captions of kept clips made as needed; expert labels agree with a latent truth 85 % of the time;
* ``--log-rows`` action-log rows: one "decide" per decision, the panels' outcomes, the assignments, then rubric
  operations, spread over the last 90 days.

Rows are written with explicit primary keys in batches: PostgreSQL ``COPY`` (psycopg 3), ``executemany`` elsewhere;
the sequences are reset afterwards. No model ``save()`` runs and no signal fires (the action log's append-only
trigger refuses only UPDATE and DELETE). It refuses to run on a database that already holds review items, candidate
tasks, clips or action-log rows unless ``--force`` (then it adds another set beside them; usernames are reused).
Prints the time of each step.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError
from django.core.management.color import no_style
from django.db import connection, models, transaction
from django.utils import timezone

from annotation.models import ActionLog, Assignment, Decision, ReviewItem, Workflow
from datasets.models import Caption, Clip, SourceVideo, StageRun
from microverse_site.roles import ADMIN, EXPERT, RESEARCHER
from rubrics.models import BenchmarkTask, CandidateTask, Criterion, Level, RubricVersion

PANEL = 3
DECIDED_SHARE = 0.9  # of each workflow's items: decided by a full panel; the rest stay open with 0-2 votes
CLIPS_PER_VIDEO = 100
CRITERIA_PER_DIMENSION = 5
AGREE = 0.85
LEVEL_SHARES = ((Level.CELLULAR, 238), (Level.ORGAN, 189), (Level.SUBCELLULAR, 32))
STAGES = [s for s, _ in StageRun.Stage.choices]
WORDS = ("cell", "mitosis", "membrane", "cilia", "neuron", "axon", "blood", "flow", "capillary", "bacteria",
         "colony", "biofilm", "chloroplast", "cytoplasm", "streaming", "vesicle", "transport", "embryo", "zebrafish",
         "heart", "beat", "tissue", "macrophage", "phagocytosis", "microtubule", "spindle", "organoid", "growth")
RUBRIC_VERBS = ("proposal_delete", "proposal_modify", "proposal_weight", "proposal_supplement")


class Command(BaseCommand):
    help = "Seed a realistic database at scale (experts, candidates, tasks with rubrics, clips, decisions, log)."

    def add_arguments(self, parser):
        parser.add_argument("--experts", type=int, default=10)
        parser.add_argument("--candidates", type=int, default=8000)
        parser.add_argument("--tasks", type=int, default=459)
        parser.add_argument("--clips", type=int, default=100_000)
        parser.add_argument("--decisions", type=int, default=500_000)
        parser.add_argument("--log-rows", type=int, default=1_000_000)
        parser.add_argument("--videos", type=int, default=None,
                            help=f"admitted source videos the clips come from (default: one per {CLIPS_PER_VIDEO} clips)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--password", default="scale-password-123",
                            help="password of the seeded users (default: scale-password-123)")
        parser.add_argument("--batch", type=int, default=20_000, help="rows per batch (default 20000)")
        parser.add_argument("--force", action="store_true", help="seed even if the database is not empty")

    # ------------------------------------------------------------------------------------------------------ main

    def handle(self, *args, **opts):
        for name in ("experts", "candidates", "tasks", "clips", "decisions", "log_rows"):
            if opts[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} must not be negative")
        if opts["experts"] < PANEL and (opts["candidates"] or opts["clips"]):
            raise CommandError(f"--experts must be at least {PANEL} (the panel size)")
        capacity = PANEL * (opts["candidates"] + 2 * opts["clips"])  # clip verification + one caption per clip
        if opts["decisions"] > capacity:
            raise CommandError(f"--decisions {opts['decisions']} is more than {capacity}, what 3-expert panels on "
                               f"the candidates, clips and one caption per clip can hold")
        if not opts["force"] and self._not_empty():
            raise CommandError("The database already holds review data; seed_scale refuses to add to it "
                               "(use --force to add another set beside it).")
        self.rng = random.Random(opts["seed"])
        self.batch = max(1, opts["batch"])
        self.now = timezone.now()
        self.tag = hashlib.sha256(f"{opts['seed']}:{time.time_ns()}".encode()).hexdigest()[:10]
        self.counts: dict[str, int] = {}
        started = time.perf_counter()
        with transaction.atomic():
            self._step("users", self._users, opts)
            self._step("benchmark tasks and rubrics", self._tasks, opts["tasks"])
            self._step("candidate tasks", self._candidates, opts["candidates"])
            self._step("videos, stage runs and clips", self._clips, opts["clips"], opts["videos"])
            self._step("review items, assignments, decisions", self._reviews, opts["decisions"])
            self._step("action log", self._log, opts["log_rows"])
            self._step("sequences", self._reset_sequences)
        if connection.vendor == "postgresql":
            self._step("analyze", self._analyze)
        total = time.perf_counter() - started
        summary = ", ".join(f"{n} {k}" for k, n in self.counts.items())
        self.stdout.write(self.style.SUCCESS(f"seeded in {total:.1f} s: {summary}"))

    def _not_empty(self) -> bool:
        return any(m.objects.exists() for m in (ReviewItem, CandidateTask, Clip, ActionLog, Decision))

    def _step(self, label, function, *args):
        started = time.perf_counter()
        function(*args)
        self.stdout.write(f"  {label}: {time.perf_counter() - started:.1f} s")
        self.stdout.flush()

    # ------------------------------------------------------------------------------------------------- writing

    def _next_id(self, model) -> int:
        return (model.objects.aggregate(top=models.Max("pk"))["top"] or 0) + 1

    def _write(self, model, columns: list[str], rows) -> int:
        """Insert `rows` (tuples in the order of `columns`, model field names) into the model's table, in batches.
        Returns the count."""
        fields = [model._meta.get_field(name) for name in columns]
        table = connection.ops.quote_name(model._meta.db_table)
        names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        json_columns = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
        time_columns = [i for i, f in enumerate(fields) if isinstance(f, models.DateTimeField)]
        written = 0
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                raw = cursor.cursor  # psycopg 3
                with raw.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        if json_columns:
                            row = list(row)
                            for i in json_columns:
                                row[i] = None if row[i] is None else json.dumps(row[i])
                        copy.write_row(row)
                        written += 1
                return written
            placeholders = ", ".join(["%s"] * len(fields))
            sql = f"INSERT INTO {table} ({names}) VALUES ({placeholders})"
            chunk = []
            for row in rows:
                row = list(row)
                for i in json_columns:
                    row[i] = None if row[i] is None else json.dumps(row[i])
                for i in time_columns:
                    row[i] = connection.ops.adapt_datetimefield_value(row[i])
                chunk.append(row)
                if len(chunk) >= self.batch:
                    cursor.executemany(sql, chunk)
                    written += len(chunk)
                    chunk = []
            if chunk:
                cursor.executemany(sql, chunk)
                written += len(chunk)
        return written

    def _count(self, name: str, n: int):
        self.counts[name] = self.counts.get(name, 0) + n

    def _reset_sequences(self):
        models_ = [BenchmarkTask, RubricVersion, Criterion, CandidateTask, SourceVideo, StageRun, Clip, Caption,
                   ReviewItem, Assignment, Decision, ActionLog]
        statements = connection.ops.sequence_reset_sql(no_style(), models_)
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)

    def _analyze(self):
        with connection.cursor() as cursor:
            for model in (CandidateTask, Clip, Caption, ReviewItem, Assignment, Decision, ActionLog):
                cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")

    def _when(self, fraction: float):
        """A moment in the last 90 days: fraction 0 is 90 days ago, 1 is now."""
        return self.now - timedelta(days=90) * (1 - min(1.0, max(0.0, fraction)))

    def _text(self, words: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(words))

    # --------------------------------------------------------------------------------------------------- users

    def _users(self, opts):
        User = get_user_model()
        groups = {name: Group.objects.get_or_create(name=name)[0] for name in (EXPERT, ADMIN, RESEARCHER)}
        wanted = [(f"scale-expert{n:02d}", EXPERT) for n in range(1, opts["experts"] + 1)]
        wanted += [("scale-admin", ADMIN), ("scale-researcher", RESEARCHER)]
        probe = User(username="probe")
        probe.set_password(opts["password"])  # one hash for every seeded user (the same password)
        self.experts = []
        for username, role in wanted:
            user, created = User.objects.get_or_create(username=username,
                                                       defaults={"email": f"{username}@example.org"})
            if created or not user.check_password(opts["password"]):
                user.password = probe.password
                user.save(update_fields=["password"])
            user.groups.add(groups[role])
            if role == EXPERT:
                self.experts.append(user)
            elif role == ADMIN:
                self.admin = user
        self._count("users", len(wanted))

    # ---------------------------------------------------------------------------------------------------- tasks

    def _tasks(self, n: int):
        self.task_ids = []
        if not n:
            return
        t0, v0, c0 = self._next_id(BenchmarkTask), self._next_id(RubricVersion), self._next_id(Criterion)
        index0 = (BenchmarkTask.objects.aggregate(top=models.Max("index"))["top"] or 0) + 1
        total_share = sum(s for _, s in LEVEL_SHARES)
        levels = []
        for level, share in LEVEL_SHARES:
            levels += [level] * round(n * share / total_share)
        levels = (levels + [Level.CELLULAR] * n)[:n]
        self.rng.shuffle(levels)
        rows = [(t0 + i, index0 + i, f"A microscopy video of {self._text(6)}.", f"Show {self._text(8)}.",
                 levels[i], f"channel_{i}", f"https://example.org/v/{self.tag}/{i}", f"Source {i}", {}, self.now)
                for i in range(n)]
        self._count("tasks", self._write(BenchmarkTask, ["id", "index", "prompt", "requirement", "level",
                                                          "source_id", "source_url", "source_title",
                                                          "source_metadata", "created_at"], rows))
        self._write(RubricVersion, ["id", "task", "number", "label", "note", "created_at"],
                    ((v0 + i, t0 + i, 1, "released", "seeded", self.now) for i in range(n)))
        dimensions = [d for d, _ in Criterion._meta.get_field("dimension").choices]

        def criteria():
            cid = c0
            for i in range(n):
                key = 1
                for dimension in dimensions:
                    for position in range(1, CRITERIA_PER_DIMENSION + 1):
                        yield (cid, v0 + i, dimension, position, key, f"The video shows {self._text(7)}.",
                               1 if self.rng.random() < 0.8 else -1, self.rng.choice((1.0, 2.0, 3.0, 5.0)))
                        cid += 1
                        key += 1

        self._count("criteria", self._write(Criterion, ["id", "version", "dimension", "position", "key_number",
                                                        "description", "polarity", "weight"], criteria()))
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {BenchmarkTask._meta.db_table} SET current_rubric_id = id + %s "
                           f"WHERE id >= %s AND id < %s", [v0 - t0, t0, t0 + n])
        self.task_ids = list(range(t0, t0 + n))

    # ----------------------------------------------------------------------------------------------- candidates

    def _candidates(self, n: int):
        self.candidate_ids = []
        if not n:
            return
        c0 = self._next_id(CandidateTask)
        levels = [level for level, _ in LEVEL_SHARES]
        rows = ((c0 + i, f"Candidate video {i}: {self._text(4)}", self._text(20),
                 f"https://example.org/c/{self.tag}/{i}", f"A microscopy video of {self._text(6)}.",
                 self.rng.choice(levels), CandidateTask.Status.VOTING, "", f"scale-{self.tag}", self._when(i / n))
                for i in range(n))
        self._count("candidates", self._write(CandidateTask, [
            "id", "source_title", "source_description", "source_url", "prompt", "level", "status",
            "generation_error", "import_batch", "created_at"], rows))
        self.candidate_ids = list(range(c0, c0 + n))

    # ---------------------------------------------------------------------------------------------------- clips

    def _clips(self, n: int, n_videos: int | None):
        self.clip_ids, self.kept_clip_ids = [], []
        if not n:
            return
        admitted = max(1, min(n, n_videos or math.ceil(n / CLIPS_PER_VIDEO)))
        refused = admitted // 9
        v0, s0, k0 = self._next_id(SourceVideo), self._next_id(StageRun), self._next_id(Clip)
        videos, runs = [], []
        for i in range(admitted + refused):
            is_refused = i >= admitted
            reason = ""
            if is_refused:
                reason = self.rng.choice(("license “All rights reserved” does not permit reuse",
                                          "height 480 is below 720", "license “CC BY-ND” does not permit reuse"))
            height = 480 if "height" in reason else self.rng.choice((720, 1080, 1080, 2160))
            duration = self.rng.uniform(60, 1800)
            videos.append((v0 + i, f"Scale video {i}: {self._text(4)}", self._text(12), "CC BY",
                           f"https://example.org/s/{self.tag}/{i}", self.rng.randint(0, 2_000_000),
                           self.rng.randint(0, 50_000), self.rng.randint(0, 3_000), f"videos/scale/{self.tag}/{i}.mp4",
                           f"{i}.mp4", 50_000_000, hashlib.sha256(f"{self.tag}:{i}".encode()).hexdigest(),
                           height * 16 // 9, height, 25.0, int(duration * 25), duration, "h264",
                           SourceVideo.Admission.REFUSED if is_refused else SourceVideo.Admission.ADMITTED, reason,
                           self._when(i / (admitted + refused))))
        self._count("videos", self._write(SourceVideo, [
            "id", "title", "description", "license", "source_url", "views", "likes", "comments", "file",
            "original_name", "size_bytes", "sha256", "width", "height", "fps", "frame_count", "duration", "codec",
            "admission", "admission_reason", "created_at"], videos))
        per_video = [n // admitted + (1 if i < n % admitted else 0) for i in range(admitted)]
        sid = s0
        for i in range(admitted):
            for stage in STAGES:
                runs.append((sid, v0 + i, stage, StageRun.Status.DONE, 1.0, per_video[i] + 3, per_video[i], "", 1,
                             self.now, self.now, self.now))
                sid += 1
        self._count("stage runs", self._write(StageRun, [
            "id", "video", "stage", "status", "progress", "clips_in", "clips_out", "error", "attempts", "started_at",
            "finished_at", "updated_at"], runs))

        kept = []

        def clip_rows():
            cid = k0
            for i in range(admitted):
                frame = 0
                for position in range(per_video[i]):
                    length = self.rng.randint(50, 400)
                    p_micro = self.rng.random()
                    borders = [self.rng.choice((0.0, 0.0, 0.0, 0.01, 0.12)) for _ in range(4)]
                    text_area = self.rng.choice((0.0, 0.0, 0.0, 0.001, 0.02))
                    verdict, stage, reason = Clip.Verdict.KEPT, "", ""
                    if p_micro < 0.2:
                        verdict, stage, reason = Clip.Verdict.DROPPED, "classify", f"p(micro) {p_micro:.2f} < 0.5"
                    elif max(borders) > 0.05:
                        verdict, stage, reason = (Clip.Verdict.DROPPED, "borders",
                                                  f"top border {max(borders):.2f} > 0.05")
                    elif text_area > 0.005:
                        verdict, stage, reason = (Clip.Verdict.DROPPED, "text",
                                                  f"text area {text_area:.3f} > 0.005")
                    if verdict == Clip.Verdict.KEPT:
                        kept.append(cid)
                    yield (cid, v0 + i, position, frame, frame + length, 25.0, f"clips/scale/{self.tag}/{cid}.mp4",
                           f"clips/scale/{self.tag}/{cid}.jpg", "", "colour-structure-v1", p_micro, "seeded",
                           *borders, text_area, "", verdict, stage, reason, self.now)
                    frame += length
                    cid += 1

        self._count("clips", self._write(Clip, [
            "id", "video", "position", "start_frame", "end_frame", "fps", "file", "thumbnail", "sample_frames",
            "embedder", "micro_probability", "classifier_version", "border_top", "border_bottom", "border_left",
            "border_right", "text_area_fraction", "text_found", "verdict", "stopped_at_stage", "stop_reason",
            "created_at"], clip_rows()))
        self.clip_ids = list(range(k0, k0 + n))
        self.kept_clip_ids = kept

    # -------------------------------------------------------------------------------------------------- reviews

    @staticmethod
    def _full(items: int) -> int:
        return int(items * DECIDED_SHARE)

    @classmethod
    def _capacity(cls, items: int) -> int:
        """Decisions a workflow of `items` takes before its open items fill up: full panels on DECIDED_SHARE of the
        items, then 0, 1 or 2 votes in turn on the open ones."""
        full = cls._full(items)
        cycles, rest = divmod(items - full, PANEL)
        return full * PANEL + cycles * sum(range(PANEL)) + sum(range(rest))

    @classmethod
    def _plan(cls, items: int, decisions: int) -> list[int]:
        """Decisions per item: full panels on up to DECIDED_SHARE of the items, then 0, 1, 2, 0, ... on the open
        ones; whatever is left completes the open panels."""
        plan = [0] * items
        left = decisions
        full = min(cls._full(items), left // PANEL)
        for i in range(full):
            plan[i] = PANEL
        left -= full * PANEL
        for j, i in enumerate(range(full, items)):
            if left <= 0:
                break
            plan[i] = min(left, j % PANEL)
            left -= plan[i]
        for i in range(items):  # more decisions than that: complete the open panels too
            if left <= 0:
                break
            extra = min(left, PANEL - plan[i])
            plan[i] += extra
            left -= extra
        return plan

    def _reviews(self, decisions: int):
        self.items_by_workflow: dict[str, int] = {}
        self.decided_items: list[tuple[int, str, str, int]] = []  # (item id, workflow, outcome, keeps)
        self.decision_rows = []  # (decision id, item id, expert id, value, when-fraction, workflow)
        self.assignment_rows = []
        if not self.experts:
            return
        left = decisions
        tv_items = len(self.candidate_ids)
        tv = min(left, self._capacity(tv_items))
        left -= tv
        n_clips = len(self.clip_ids)
        cv = min(left, self._capacity(n_clips))
        left -= cv
        if left > PANEL * n_clips:  # more than one caption per clip holds: fill the clips' panels first
            extra = min(left - PANEL * n_clips, PANEL * n_clips - cv)
            cv, left = cv + extra, left - extra
        caption_clips = []
        if left:
            low, need = 1, n_clips  # the fewest captions whose capacity holds what is left
            while low < need:
                middle = (low + need) // 2
                low, need = (low, middle) if self._capacity(middle) >= left else (middle + 1, need)
            kept = set(self.kept_clip_ids)
            caption_clips = (self.kept_clip_ids + [c for c in self.clip_ids if c not in kept])[:need]
        caption_ids = self._captions(caption_clips)
        self.item_id = self._next_id(ReviewItem)
        self.assignment_id = self._next_id(Assignment)
        self.decision_id = self._next_id(Decision)
        self.positions = {e.pk: (Assignment.objects.filter(expert=e).aggregate(top=models.Max("position"))["top"]
                                 or 0) for e in self.experts}
        self.load = 0
        self._workflow(Workflow.TASK_VOTING, CandidateTask, self.candidate_ids, tv, ("keep", "reject"))
        self._workflow(Workflow.CLIP_VERIFICATION, Clip, self.clip_ids, cv, ("keep", "reject"))
        self._workflow(Workflow.CAPTION_CHECK, Caption, caption_ids, left, ("approve", "reject", "edit"))
        self._candidate_outcomes()

    def _captions(self, clip_ids: list[int]) -> list[int]:
        if not clip_ids:
            return []
        c0 = self._next_id(Caption)
        rows = ((c0 + i, clip, 1, f"A microscopy clip: {self._text(18)}.", Caption.Source.LLM,
                 Caption.Status.CHECKING, "", self.now) for i, clip in enumerate(clip_ids))
        self._count("captions", self._write(Caption, ["id", "clip", "version", "text", "source", "status",
                                                      "reject_reason", "created_at"], rows))
        return list(range(c0, c0 + len(clip_ids)))

    def _workflow(self, workflow: str, model, target_ids: list[int], decisions: int, labels: tuple[str, ...]):
        if not target_ids:
            return
        content_type = ContentType.objects.get_for_model(model)
        plan = self._plan(len(target_ids), decisions)
        n_experts = len(self.experts)
        items, assignments, rows = [], [], []
        for i, (target, n_decisions) in enumerate(zip(target_ids, plan)):
            item_id = self.item_id
            self.item_id += 1
            truth = labels[0] if self.rng.random() < 0.6 else self.rng.choice(labels[1:])
            panel = [self.experts[(self.load + k) % n_experts] for k in range(PANEL)]
            self.load += 1
            votes = []
            when = i / max(1, len(target_ids))
            for k, expert in enumerate(panel):
                self.positions[expert.pk] += 1
                decided = k < n_decisions
                assignments.append((self.assignment_id, item_id, workflow, expert.pk,
                                    Assignment.Status.DONE if decided else Assignment.Status.ASSIGNED,
                                    self.positions[expert.pk], self.admin.pk, self._when(when),
                                    self._when(when) if decided else None))
                self.assignment_id += 1
                if decided:
                    value = truth if self.rng.random() < AGREE else self.rng.choice([v for v in labels if v != truth])
                    votes.append(value)
                    extra = {"micro": value == "keep"} if workflow == Workflow.CLIP_VERIFICATION else {}
                    reason = "not_microscale" if workflow == Workflow.CLIP_VERIFICATION and value == "reject" else ""
                    rows.append((self.decision_id, item_id, expert.pk, value, reason, "", extra, self._when(when),
                                 self._when(when)))
                    self.decision_rows.append((self.decision_id, item_id, expert.pk, value, when, workflow))
                    self.decision_id += 1
            outcome, status = "open", ReviewItem.Status.OPEN
            keeps = sum(v in ("keep", "approve") for v in votes)
            if len(votes) >= 2 and (keeps >= 2 or len(votes) - keeps >= 2):
                outcome = "accepted" if keeps >= 2 else "rejected"
                status = ReviewItem.Status.ACCEPTED if keeps >= 2 else ReviewItem.Status.REJECTED
                self.decided_items.append((item_id, workflow, outcome, keeps))
            items.append((item_id, workflow, content_type.pk, target, status,
                          self._when(when) if status != ReviewItem.Status.OPEN else None, self._when(when)))
            self.assignment_rows.append((item_id, workflow, [e.pk for e in panel], when))
        self._count(f"{workflow} items", self._write(ReviewItem, [
            "id", "workflow", "content_type", "object_id", "status", "decided_at", "created_at"], items))
        self._count("assignments", self._write(Assignment, [
            "id", "item", "workflow", "expert", "status", "position", "assigned_by", "assigned_at", "completed_at"],
            assignments))
        self._count("decisions", self._write(Decision, [
            "id", "item", "expert", "value", "reason", "comment", "extra", "created_at", "updated_at"], rows))
        self.items_by_workflow[workflow] = len(items)

    def _candidate_outcomes(self):
        """Candidates whose panel decided: accepted ones linked to the seeded tasks (as many as there are), rejected
        ones marked; in one statement per status."""
        accepted = [item for item, workflow, outcome, _ in self.decided_items
                    if workflow == Workflow.TASK_VOTING and outcome == "accepted"]
        rejected = [item for item, workflow, outcome, _ in self.decided_items
                    if workflow == Workflow.TASK_VOTING and outcome == "rejected"]
        table = ReviewItem._meta.db_table
        candidates = CandidateTask._meta.db_table
        with connection.cursor() as cursor:
            for status, item_ids in ((CandidateTask.Status.ACCEPTED, accepted),
                                     (CandidateTask.Status.REJECTED, rejected)):
                for start in range(0, len(item_ids), 5000):
                    chunk = item_ids[start:start + 5000]
                    cursor.execute(
                        f"UPDATE {candidates} SET status = %s WHERE id IN (SELECT object_id FROM {table} "
                        f"WHERE id IN ({', '.join(['%s'] * len(chunk))}))", [status, *chunk])
        pairs = list(zip(ReviewItem.objects.filter(pk__in=accepted[:len(self.task_ids)]).order_by("pk")
                         .values_list("object_id", flat=True), self.task_ids))
        with connection.cursor() as cursor:
            for candidate_id, task_id in pairs:
                cursor.execute(f"UPDATE {candidates} SET task_id = %s WHERE id = %s", [task_id, candidate_id])

    # ------------------------------------------------------------------------------------------------------ log

    def _log(self, n: int):
        if not n:
            return
        l0 = self._next_id(ActionLog)
        usernames = {e.pk: e.username for e in self.experts}
        target_types = {Workflow.TASK_VOTING: "candidatetask", Workflow.CLIP_VERIFICATION: "clip",
                        Workflow.CAPTION_CHECK: "caption"}

        def rows():
            made = 0
            # one "decide" per decision, the panels' outcomes, the assignments, then rubric operations
            for _, item, expert, value, when, workflow in self.decision_rows:
                if made >= n:
                    return
                yield (expert, "decide", workflow, item, target_types[workflow], "", None, {"value": value}, "",
                       "", when)
                made += 1
            for item, workflow, outcome, keeps in self.decided_items:
                if made >= n:
                    return
                yield (None, f"item_{outcome}", workflow, item, target_types[workflow], "", None,
                       {"keeps": keeps, "rule": "2 of 3"}, "", "", 1.0)
                made += 1
            for item, workflow, panel, when in self.assignment_rows:
                for expert in panel:
                    if made >= n:
                        return
                    yield (self.admin.pk, "assign", workflow, item, target_types[workflow], "", None,
                           {"expert": usernames[expert]}, "", "", when)
                    made += 1
            experts = [e.pk for e in self.experts] or [self.admin.pk]
            task_ids = self.task_ids or [0]
            while made < n:
                verb = self.rng.choice(RUBRIC_VERBS)
                yield (self.rng.choice(experts), verb, Workflow.RUBRIC_REVISION, None, "benchmarktask",
                       str(self.rng.choice(task_ids)), None, {"criterion": self.rng.randint(1, 15)},
                       f"Because {self._text(8)}.", "", self.rng.random())
                made += 1

        def with_ids():
            for i, row in enumerate(rows()):
                yield (l0 + i, *row[:-1], self._when(row[-1]))

        self._count("log rows", self._write(ActionLog, [
            "id", "actor", "verb", "workflow", "item", "target_type", "target_id", "before", "after", "rationale",
            "request_id", "created_at"], with_ids()))
