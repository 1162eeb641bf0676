"""Importing the MicroWorldBench public release: `manage.py import_benchmark DIR` and `services.benchmark_import`.

The real release (rubrics/fixtures/microworldbench/) is imported once for the whole module, inside a transaction that
is rolled back; the tests read a snapshot of what it stored. Everything else runs on small synthetic release folders
built from the first entries of the real files, with one thing broken.
"""
from __future__ import annotations

import copy
import functools
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import Max
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rubrics
from rubrics import release_format, services
from rubrics.models import BenchmarkTask, Criterion, RubricVersion
from rubrics.release_format import ReleaseFormatError

FIXTURE_DIR = Path(rubrics.__file__).resolve().parent / "fixtures" / "microworldbench"
DRAFT = "MWBenchRubrics.json"
RELEASED = "MWBenchRubrics_norm.json"
TASKS = "finaltasks.json"
FILES = (DRAFT, RELEASED, TASKS)
DIMENSIONS = ("scientific", "visual", "instruction")


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def run_import(directory) -> str:
    out = StringIO()
    call_command("import_benchmark", str(directory), stdout=out)
    return out.getvalue()


def db_state() -> dict:
    """Row counts and highest ids of the three tables an import writes, plus every stored weight/description."""
    return {
        "tasks": BenchmarkTask.objects.count(),
        "versions": RubricVersion.objects.count(),
        "criteria": Criterion.objects.count(),
        "max_ids": (
            BenchmarkTask.objects.aggregate(m=Max("id"))["m"],
            RubricVersion.objects.aggregate(m=Max("id"))["m"],
            Criterion.objects.aggregate(m=Max("id"))["m"],
        ),
        "content": sorted(
            Criterion.objects.values_list(
                "version__task__index", "version__label", "dimension", "position", "description", "weight"
            )
        ),
    }


@functools.lru_cache(maxsize=1)
def _real_files() -> dict[str, list]:
    return {name: json.loads((FIXTURE_DIR / name).read_text(encoding="utf-8")) for name in FILES}


def sample_release(indices=(1, 2, 3)) -> dict[str, list]:
    """The entries of the real release for `indices` (a deep copy, free to mutate), keyed by file name."""
    wanted = set(indices)
    return {name: copy.deepcopy([e for e in entries if e["index"] in wanted]) for name, entries in _real_files().items()}


class Raw(str):
    """File content written as is (not JSON-encoded)."""


MISSING = object()


def write_release(directory: Path, release: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in release.items():
        path = directory / name
        if content is MISSING:
            continue
        if isinstance(content, Raw):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return directory


def entry(release: dict, name: str, index: int) -> dict:
    (found,) = [e for e in release[name] if e["index"] == index]
    return found


# --------------------------------------------------------------------------------------------------------------------
# The real release, imported once
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RealImport:
    output: str
    second_output: str
    state: dict
    second_state: dict
    tasks: dict[int, dict]
    versions: list[dict]
    criteria: list[dict]


@pytest.fixture(scope="module")
def real_import(django_db_setup, django_db_blocker) -> RealImport:
    with django_db_blocker.unblock(), transaction.atomic():
        assert BenchmarkTask.objects.count() == 0
        output = run_import(FIXTURE_DIR)
        state = db_state()
        tasks = {t["index"]: t for t in BenchmarkTask.objects.values()}
        versions = list(
            RubricVersion.objects.values("id", "task__index", "number", "label", "parent_id", "task__current_rubric_id")
        )
        criteria = list(
            Criterion.objects.values(
                "version__task__index", "version__label", "dimension", "position", "key_number", "description",
                "polarity", "weight",
            )
        )
        second_output = run_import(FIXTURE_DIR)
        second_state = db_state()
        transaction.set_rollback(True)
    return RealImport(output, second_output, state, second_state, tasks, versions, criteria)


def test_real_release_task_and_level_counts(real_import):
    assert len(real_import.tasks) == 459
    assert sorted(real_import.tasks) == list(range(1, 460))
    levels = Counter(t["level"] for t in real_import.tasks.values())
    assert levels == {"Cellular-level": 238, "Organ-level": 189, "Subcellular-level": 32}


def test_real_release_import_prints_the_counts(real_import):
    out = real_import.output
    assert "Imported 459 tasks (0 already present)." in out
    assert re.search(r"^\s*Cellular\s+238$", out, re.M)
    assert re.search(r"^\s*Organ\s+189$", out, re.M)
    assert re.search(r"^\s*Subcellular\s+32$", out, re.M)
    assert re.search(r"^\s*Total\s+459$", out, re.M)
    assert "criteria in 'draft' versions: 6884" in out
    assert "criteria in 'released' versions: 6884" in out


def test_real_release_criterion_counts(real_import):
    by_label = Counter(c["version__label"] for c in real_import.criteria)
    assert by_label == {"draft": 6884, "released": 6884}
    assert real_import.state["criteria"] == 2 * 6884
    assert real_import.state["versions"] == 2 * 459


def test_real_release_each_task_has_draft_then_released_version(real_import):
    by_task: dict[int, dict[str, dict]] = {}
    for v in real_import.versions:
        by_task.setdefault(v["task__index"], {})[v["label"]] = v
    assert len(by_task) == 459
    for index, versions in by_task.items():
        assert set(versions) == {"draft", "released"}, index
        draft, released = versions["draft"], versions["released"]
        assert (draft["number"], released["number"]) == (1, 2)
        assert draft["parent_id"] is None
        assert released["parent_id"] == draft["id"]
        assert released["task__current_rubric_id"] == released["id"]


def test_real_release_every_task_has_all_three_dimensions(real_import):
    per_dimension = Counter((c["version__task__index"], c["version__label"], c["dimension"]) for c in real_import.criteria)
    assert len(per_dimension) == 459 * 2 * 3
    sizes = Counter(per_dimension.values())
    assert sizes == {5: 459 * 2 * 3 - 2, 4: 2}
    assert per_dimension[(277, "draft", "instruction")] == 4
    assert per_dimension[(277, "released", "instruction")] == 4


def test_real_release_weights(real_import):
    zero = Counter(c["version__label"] for c in real_import.criteria if c["weight"] == 0.0)
    assert zero["released"] == 884
    assert zero["draft"] == 0
    released_weights = Counter(c["weight"] for c in real_import.criteria if c["version__label"] == "released")
    assert set(released_weights) == {0.0, 0.2, 0.5, 1.0}
    draft_weights = Counter(c["weight"] for c in real_import.criteria if c["version__label"] == "draft")
    assert set(draft_weights) == {0.5, 0.7, 1.0, 1.5, 2.0, 3.0}
    assert all(isinstance(c["weight"], float) for c in real_import.criteria)
    polarity = Counter((c["version__label"], c["polarity"]) for c in real_import.criteria)
    assert polarity == {("draft", 1): 6289, ("draft", -1): 595, ("released", 1): 6289, ("released", -1): 595}


def test_real_release_criteria_match_the_files(real_import):
    """Every stored criterion equals its d/s/w triple in the file (weights as numbers, "+1"/"-1" as ints)."""
    stored = {
        (c["version__task__index"], c["version__label"], c["dimension"], c["key_number"]): c
        for c in real_import.criteria
    }
    seen = 0
    for label, name in (("draft", DRAFT), ("released", RELEASED)):
        for e in _real_files()[name]:
            for dimension in DIMENSIONS:
                rubric = e[f"rubrics_{dimension}"]
                numbers = sorted({int(k[1:]) for k in rubric})
                for number in numbers:
                    c = stored[(e["index"], label, dimension, number)]
                    assert c["description"] == rubric[f"d{number}"]
                    assert c["polarity"] == int(rubric[f"s{number}"])
                    assert c["weight"] == float(rubric[f"w{number}"])
                    seen += 1
    assert seen == len(stored) == 2 * 6884


def test_real_release_key_numbers_are_kept_and_order_the_criteria(real_import):
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for c in real_import.criteria:
        key = (c["version__task__index"], c["version__label"], c["dimension"])
        groups.setdefault(key, []).append((c["position"], c["key_number"]))
    for key, pairs in groups.items():
        pairs.sort()
        positions = [p for p, _ in pairs]
        numbers = [n for _, n in pairs]
        assert positions == list(range(1, len(pairs) + 1)), key
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), key
    non_sequential = [k for k, pairs in groups.items() if [n for _, n in pairs] != list(range(1, len(pairs) + 1))]
    assert Counter(label for _, label, _ in non_sequential) == {"draft": 55, "released": 55}
    assert sorted(n for _, n in groups[(2, "released", "instruction")]) == [11, 22, 33, 44, 55]
    assert sorted(n for _, n in groups[(2, "released", "scientific")]) == [1, 2, 3, 4, 5]


def test_real_release_task_metadata(real_import):
    task1 = real_import.tasks[1]
    assert task1["source_url"] == "https://www.youtube.com/watch?v=nBkNs1oNIdw"
    assert task1["source_title"].startswith("How a Stroke Happens")
    assert task1["classification_confidence"] == 9
    assert task1["level"] == "Cellular-level"
    assert task1["prompt"].startswith("Within the human brain vasculature under the microscope")
    assert task1["source_metadata"]["类别"] == "器官"
    confidences = [t["classification_confidence"] for t in real_import.tasks.values()]
    assert all(type(c) is int and 1 <= c <= 10 for c in confidences)
    assert sum(1 for t in real_import.tasks.values() if t["source_url"].startswith("https://")) == 459


def test_real_release_second_import_changes_nothing(real_import):
    assert "Nothing to do: all 459 tasks are already imported and unchanged." in real_import.second_output
    assert "Imported" not in real_import.second_output
    assert re.search(r"^\s*Total\s+459$", real_import.second_output, re.M)
    assert "criteria in 'released' versions: 6884" in real_import.second_output
    assert real_import.second_state == real_import.state


# --------------------------------------------------------------------------------------------------------------------
# Small synthetic releases
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_synthetic_release_imports(tmp_path):
    out = run_import(write_release(tmp_path, sample_release()))
    assert "Imported 3 tasks (0 already present)." in out
    assert re.search(r"^\s*Total\s+3$", out, re.M)
    assert "criteria in 'draft' versions: 45" in out
    assert list(BenchmarkTask.objects.values_list("index", flat=True)) == [1, 2, 3]
    assert Criterion.objects.filter(version__label="released").count() == 45
    task2 = BenchmarkTask.objects.get(index=2)
    instruction = task2.current_rubric.criteria.filter(dimension="instruction").order_by("position")
    assert [c.key_number for c in instruction] == [11, 22, 33, 44, 55]


@pytest.mark.django_db
def test_import_adds_only_the_new_tasks(tmp_path):
    run_import(write_release(tmp_path / "a", sample_release([1, 2])))
    before = db_state()
    out = run_import(write_release(tmp_path / "b", sample_release([1, 2, 3])))
    assert "Imported 1 tasks (2 already present)." in out
    after = db_state()
    assert (after["tasks"], after["versions"], after["criteria"]) == (3, 6, 90)
    assert set(before["content"]) < set(after["content"])  # tasks 1 and 2 untouched, task 3 added


def _break_weight(value):
    def mutate(release):
        entry(release, RELEASED, 2)["rubrics_scientific"]["w3"] = value

    return mutate


def _break_polarity(value):
    def mutate(release):
        entry(release, DRAFT, 3)["rubrics_visual"]["s2"] = value

    return mutate


def _missing_file(release):
    release[TASKS] = MISSING


def _not_json(release):
    release[RELEASED] = Raw('[{"index": 1,')


def _not_a_list(release):
    release[DRAFT] = {"index": 1}


def _empty_list(release):
    release[DRAFT] = []


def _entry_not_object(release):
    release[TASKS][1] = "task 2"


def _no_index(release):
    del release[DRAFT][1]["index"]


def _string_index(release):
    release[DRAFT][1]["index"] = "2"


def _duplicate_index(release):
    release[DRAFT][2]["index"] = 2


def _only_in_finaltasks(release):
    extra = copy.deepcopy(release[TASKS][0])
    extra["index"] = 99
    release[TASKS].append(extra)


def _missing_from_norm(release):
    release[RELEASED] = [e for e in release[RELEASED] if e["index"] != 3]


def _dimension_missing(release):
    del entry(release, DRAFT, 1)["rubrics_visual"]


def _unknown_key(release):
    entry(release, RELEASED, 2)["rubrics_instruction"]["x1"] = "something"


def _incomplete_triple(release):
    del entry(release, DRAFT, 1)["rubrics_scientific"]["w3"]


def _unknown_level(release):
    entry(release, TASKS, 3)["final_label"] = "Tissue-level"


def _bad_confidence(release):
    entry(release, TASKS, 2)["classification_confidence"] = "very"


def _prompt_differs(release):
    entry(release, RELEASED, 2)["任务"] += " (edited)"


def _empty_description(release):
    entry(release, RELEASED, 1)["rubrics_visual"]["d4"] = "  "


def _index_too_large(release):
    for name in FILES:
        entry(release, name, 3)["index"] = 2**31


def _key_number_too_large(release):
    rubric = entry(release, RELEASED, 1)["rubrics_scientific"]
    for letter in "dsw":
        rubric[f"{letter}{2**31}"] = rubric.pop(f"{letter}5")


def _newline_in_key(release):
    entry(release, DRAFT, 1)["rubrics_visual"]["d1\n"] = "Another description."


def _nul_in_prompt(release):
    entry(release, DRAFT, 2)["task"] += "\x00"
    entry(release, RELEASED, 2)["任务"] += "\x00"


def _nul_in_metadata(release):
    entry(release, TASKS, 1)["本地文件"] = {"path": ["videos/1.mp4\x00"]}


# (id, mutation, start of the message, a phrase it contains)
BAD_RELEASES = [
    ("missing-file", _missing_file, "finaltasks.json: file not found", ""),
    ("not-json", _not_json, "MWBenchRubrics_norm.json: not valid JSON", "line 1"),
    ("top-level-not-list", _not_a_list, "MWBenchRubrics.json: expected a JSON list of tasks", "dict"),
    ("empty-list", _empty_list, "MWBenchRubrics.json: the file holds no tasks", ""),
    ("entry-not-object", _entry_not_object, "finaltasks.json: entry 2 is not a JSON object", ""),
    ("no-index", _no_index, "MWBenchRubrics.json: field index: entry 2 has no index", ""),
    ("string-index", _string_index, "MWBenchRubrics.json: field index: entry 2: index '2'", "positive integer"),
    ("weight-abc", _break_weight("abc"), "MWBenchRubrics_norm.json: task 2: field rubrics_scientific.w3:", "'abc'"),
    ("weight-null", _break_weight(None), "MWBenchRubrics_norm.json: task 2: field rubrics_scientific.w3:", "None"),
    ("weight-true", _break_weight(True), "MWBenchRubrics_norm.json: task 2: field rubrics_scientific.w3:", "True"),
    ("weight-negative", _break_weight(-0.5), "MWBenchRubrics_norm.json: task 2: field rubrics_scientific.w3:",
     "negative"),
    ("weight-negative-text", _break_weight("-1.0"), "MWBenchRubrics_norm.json: task 2: field rubrics_scientific.w3:",
     "negative"),
    ("polarity-plus-2", _break_polarity("+2"), "MWBenchRubrics.json: task 3: field rubrics_visual.s2:", "'+2'"),
    ("polarity-zero", _break_polarity(0), "MWBenchRubrics.json: task 3: field rubrics_visual.s2:", "+1 or -1"),
    ("duplicate-index", _duplicate_index, "MWBenchRubrics.json: task 2: field index: duplicate index", ""),
    ("only-in-finaltasks", _only_in_finaltasks, "finaltasks.json: index sets differ", "tasks 99 that"),
    ("missing-from-norm", _missing_from_norm, "MWBenchRubrics_norm.json: index sets differ", "missing tasks 3"),
    ("dimension-missing", _dimension_missing, "MWBenchRubrics.json: task 1: field rubrics_visual:", "missing"),
    ("unknown-key", _unknown_key, "MWBenchRubrics_norm.json: task 2: field rubrics_instruction.x1:", "unexpected key"),
    ("incomplete-triple", _incomplete_triple, "MWBenchRubrics.json: task 1: field rubrics_scientific.w3: missing", ""),
    ("unknown-level", _unknown_level, "finaltasks.json: task 3: field final_label:", "'Tissue-level'"),
    ("bad-confidence", _bad_confidence, "finaltasks.json: task 2: field classification_confidence:", "'very'"),
    ("prompt-differs", _prompt_differs, "MWBenchRubrics_norm.json: task 2:", "differs from MWBenchRubrics.json"),
    ("empty-description", _empty_description, "MWBenchRubrics_norm.json: task 1: field rubrics_visual.d4:", "empty"),
    # Values the database would refuse (PostgreSQL integer, NUL characters in text and JSON).
    ("index-too-large", _index_too_large, "MWBenchRubrics.json: field index: entry 3: index 2147483648 is not", ""),
    ("key-number-too-large", _key_number_too_large,
     "MWBenchRubrics_norm.json: task 1: field rubrics_scientific.d2147483648:", "larger than 2147483647"),
    ("newline-in-key", _newline_in_key, "MWBenchRubrics.json: task 1: field 'rubrics_visual.d1\\n':", "unexpected key"),
    ("nul-in-prompt", _nul_in_prompt, "MWBenchRubrics.json: task 2: field task:", "NUL character"),
    ("nul-in-metadata", _nul_in_metadata, "finaltasks.json: task 1: field 本地文件.path[0]:", "NUL character"),
]


def _bad_release_dir(tmp_path: Path, mutate) -> Path:
    release = sample_release()
    mutate(release)
    return write_release(tmp_path / "bad", release)


def _check_message(message: str, start: str, phrase: str) -> None:
    assert "\n" not in message
    assert message.startswith(start), message
    assert phrase in message, message


@pytest.mark.django_db
@pytest.mark.parametrize("mutate,start,phrase", [c[1:] for c in BAD_RELEASES], ids=[c[0] for c in BAD_RELEASES])
def test_bad_release_fails_in_the_command_and_imports_nothing(tmp_path, mutate, start, phrase):
    directory = _bad_release_dir(tmp_path, mutate)
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("import_benchmark", str(directory), stdout=out)
    _check_message(str(raised.value), start, phrase)
    assert str(raised.value).endswith("(nothing was imported)")
    assert out.getvalue() == ""
    assert (BenchmarkTask.objects.count(), RubricVersion.objects.count(), Criterion.objects.count()) == (0, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("mutate,start,phrase", [c[1:] for c in BAD_RELEASES], ids=[c[0] for c in BAD_RELEASES])
def test_bad_release_fails_in_the_service_and_changes_nothing(tmp_path, mutate, start, phrase):
    services.benchmark_import(directory=write_release(tmp_path / "good", sample_release([4, 5, 6])))
    before = db_state()
    assert before["tasks"] == 3
    with pytest.raises(ReleaseFormatError) as raised:
        services.benchmark_import(directory=_bad_release_dir(tmp_path, mutate))
    _check_message(str(raised.value), start, phrase)
    assert db_state() == before


@pytest.mark.django_db
def test_missing_directory(tmp_path):
    with pytest.raises(CommandError, match=r"^MWBenchRubrics\.json: file not found in .*nowhere"):
        call_command("import_benchmark", str(tmp_path / "nowhere"), stdout=StringIO())
    assert BenchmarkTask.objects.count() == 0


@pytest.mark.django_db
def test_failure_on_the_last_task_leaves_nothing_of_the_earlier_ones(tmp_path):
    release = sample_release()
    last = release[RELEASED][-1]
    assert last["index"] == 3
    last["rubrics_instruction"]["w5"] = "heavy"
    with pytest.raises(CommandError, match=r"^MWBenchRubrics_norm\.json: task 3: field rubrics_instruction\.w5: "):
        call_command("import_benchmark", str(write_release(tmp_path, release)), stdout=StringIO())
    assert (BenchmarkTask.objects.count(), RubricVersion.objects.count(), Criterion.objects.count()) == (0, 0, 0)


@pytest.mark.django_db
def test_conflict_on_the_last_task_leaves_nothing_of_the_earlier_ones(tmp_path):
    """Tasks 1 and 2 are new, task 3 is already in the database with other weights: nothing is written."""
    changed = sample_release([3])
    entry(changed, RELEASED, 3)["rubrics_visual"]["w1"] = 0.2
    services.benchmark_import(directory=write_release(tmp_path / "first", changed))
    before = db_state()
    with pytest.raises(CommandError, match=r"^task 3: already imported with different content.*nothing was imported"):
        call_command("import_benchmark", str(write_release(tmp_path / "full", sample_release())), stdout=StringIO())
    assert db_state() == before
    assert list(BenchmarkTask.objects.values_list("index", flat=True)) == [3]


@pytest.mark.django_db
def test_failure_while_writing_rolls_everything_back(tmp_path, monkeypatch):
    """A database error in the last write of an import (after tasks, versions and criteria were inserted)."""

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(BenchmarkTask.objects, "bulk_update", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        services.benchmark_import(directory=write_release(tmp_path, sample_release()))
    assert (BenchmarkTask.objects.count(), RubricVersion.objects.count(), Criterion.objects.count()) == (0, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda r: entry(r, RELEASED, 2)["rubrics_scientific"].update(d1="Another description."),
                     id="description"),
        pytest.param(lambda r: entry(r, DRAFT, 2)["rubrics_instruction"].update(w22="3.0"), id="draft-weight"),
        pytest.param(lambda r: entry(r, RELEASED, 2)["rubrics_visual"].update(s1="-1"), id="polarity"),
        pytest.param(lambda r: entry(r, TASKS, 2).update(final_label="Subcellular-level"), id="level"),
        pytest.param(lambda r: [entry(r, n, 2).__setitem__(k, "Another prompt.") for n, k in
                                ((DRAFT, "task"), (RELEASED, "任务"))], id="prompt"),
    ],
)
def test_reimport_with_different_content_is_a_conflict_and_changes_nothing(tmp_path, mutate):
    services.benchmark_import(directory=write_release(tmp_path / "v1", sample_release()))
    before = db_state()
    release = sample_release()
    mutate(release)
    changed_dir = write_release(tmp_path / "v2", release)
    with pytest.raises(services.ImportConflict, match=r"^task 2: already imported with different content"):
        services.benchmark_import(directory=changed_dir)
    assert db_state() == before
    with pytest.raises(CommandError, match=r"^task 2: already imported with different content.*\(nothing was imported\)$"):
        call_command("import_benchmark", str(changed_dir), stdout=StringIO())
    assert db_state() == before


# --------------------------------------------------------------------------------------------------------------------
# The parser alone (no database)
# --------------------------------------------------------------------------------------------------------------------


def _read(release: dict) -> list[release_format.ReleaseTask]:
    with tempfile.TemporaryDirectory() as directory:
        return release_format.read_release(write_release(Path(directory), release))


@pytest.mark.parametrize(
    "rubric",
    [
        pytest.param({"d1": "A", "s1": "+1", "w1": 1.0, "d01": "B", "s01": "+1", "w01": 0.5}, id="d1-and-d01"),
        pytest.param({"d1": "A", "s1": "+1", "w1": 1.0, "d1\n": "B"}, id="trailing-newline"),
        pytest.param({"d1": "A", "s1": "+1", "w1": 1.0, "d\u0661": "B", "s\u0661": "-1", "w\u0661": 0.5},
                     id="arabic-indic-digit"),
    ],
)
def test_rubric_keys_that_would_collide_are_rejected(rubric):
    release = sample_release([1])
    entry(release, DRAFT, 1)["rubrics_visual"] = rubric
    with pytest.raises(ReleaseFormatError, match=r"^MWBenchRubrics\.json: task 1: field '?rubrics_visual\.[^:]*: unexpected key"):
        _read(release)


def _paths(value, prefix=()):
    """Every place in a JSON value: the value itself and, recursively, each member."""
    yield prefix
    if isinstance(value, dict):
        for key, member in value.items():
            yield from _paths(member, prefix + (key,))
    elif isinstance(value, list):
        for position, member in enumerate(value):
            yield from _paths(member, prefix + (position,))


def _replace(value, path, new):
    if not path:
        return new
    *parents, last = path
    target = value
    for step in parents:
        target = target[step]
    target[last] = new
    return value


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["+1", "-1", "1", "+2", "0", "1.", "2", "0.0", "-0.0", "1e400", "NaN", "", " ",
                       "Organ-level", "d1", "https://example.org/x"])
)
JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
_ORIGINAL = sample_release()
_ORIGINAL_PARSED = _read(_ORIGINAL)


def _check_valid(tasks: list[release_format.ReleaseTask], release: dict) -> None:
    """A release that parsed: every rubric entry of the files is one criterion, all values in range."""
    files = {name: {e["index"]: e for e in release[name]} for name in (DRAFT, RELEASED)}
    assert sorted(t.index for t in tasks) == sorted(files[DRAFT])
    for task in tasks:
        assert task.level in ("Organ-level", "Cellular-level", "Subcellular-level")
        assert task.classification_confidence is None or 1 <= task.classification_confidence <= 10
        assert isinstance(task.prompt, str) and task.prompt.strip()
        for name, criteria in ((DRAFT, task.draft), (RELEASED, task.released)):
            for dimension in DIMENSIONS:
                mine = [c for c in criteria if c.dimension == dimension]
                assert 3 * len(mine) == len(files[name][task.index][f"rubrics_{dimension}"])
                assert [c.position for c in mine] == list(range(1, len(mine) + 1))
                assert [c.key_number for c in mine] == sorted({c.key_number for c in mine})
            for c in criteria:
                assert c.polarity in (1, -1)
                assert type(c.weight) is float and 0 <= c.weight < float("inf")
                assert isinstance(c.description, str) and c.description.strip()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_corruption_is_either_valid_or_a_release_format_error(data):
    release = copy.deepcopy(_ORIGINAL)
    name = data.draw(st.sampled_from(FILES), label="file")
    position = data.draw(st.integers(0, len(release[name]) - 1), label="task")
    path = data.draw(st.sampled_from(list(_paths(release[name][position]))), label="path")
    new = data.draw(JSON_VALUES, label="value")
    release[name][position] = _replace(release[name][position], path, new)
    try:
        tasks = _read(release)
    except ReleaseFormatError as exc:
        message = str(exc)
        assert "\n" not in message
        assert message.split(":", 1)[0] in FILES
        return
    _check_valid(tasks, release)
    if json.dumps(release, sort_keys=True) == json.dumps(_ORIGINAL, sort_keys=True):
        assert tasks == _ORIGINAL_PARSED


@pytest.mark.django_db
def test_a_changed_source_or_confidence_is_a_conflict_too(tmp_path):
    from rubrics import services
    from rubrics.models import BenchmarkTask
    from tests.helpers import write_release_subset

    folder = write_release_subset(tmp_path / "r", (1, 2))
    services.benchmark_import(directory=folder)
    meta_path = folder / "finaltasks.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta[1]["classification_confidence"] = "3"
    meta_path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(services.ImportConflict, match="task 2"):
        services.benchmark_import(directory=folder)
    assert BenchmarkTask.objects.get(index=2).classification_confidence != 3
