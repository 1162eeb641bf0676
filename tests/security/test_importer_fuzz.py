"""Hypothesis fuzzing of the two importers: the benchmark release (``import_benchmark``) and published judge results
(``import_judgments``). A small valid input is mutated (random JSON values anywhere, deleted and renamed keys, wrong
types, cut or non-UTF-8 bytes); the command either imports or fails with its documented one-line error
(``CommandError``), and a failure changes no row of any table the importer writes (counted, not trusted to a
savepoint: each example runs in an outer savepoint only so that the next one starts from the same database).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db import connection
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st

from annotation.models import ActionLog
from judging.models import GeneratedVideo, Judgement, JudgeRun, ModelUnderTest
from judging.published import make_eval
from rubrics.models import BenchmarkTask, Criterion, RubricVersion
from tests.helpers import FIXTURE_DIR, RELEASE_FILES, write_release_subset

pytestmark = pytest.mark.django_db

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

JSON_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
               | st.sampled_from(["", "\x00", "Cellular-level", "d1", "s1", "w1", "index", "-1", "1e309"]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _paths(value, prefix=()):
    """Every (path to a container, key) of a JSON value, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield prefix, key
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield prefix, position
            yield from _paths(item, prefix + (position,))


def _at(value, path):
    for step in path:
        value = value[step]
    return value


def mutate(data, draw):
    """Apply one to three random mutations to decoded JSON `data` (in place where possible); returns the result."""
    for _ in range(draw(st.integers(1, 3))):
        places = list(_paths(data))
        operation = draw(st.sampled_from(["replace", "delete", "rename", "retype", "duplicate", "root"]))
        if operation == "root" or not places:
            return draw(JSON_VALUES)
        container_path, key = draw(st.sampled_from(places))
        container = _at(data, container_path)
        if operation == "replace":
            container[key] = draw(JSON_VALUES)
        elif operation == "delete":
            del container[key]
        elif operation == "rename" and isinstance(container, dict):
            container[draw(st.text(max_size=6))] = container.pop(key)
        elif operation == "retype":
            old = container[key]
            container[key] = (str(old) if not isinstance(old, str) else
                              draw(st.sampled_from([0, 1.5, None, True, [old], {"v": old}])))
        elif operation == "duplicate" and isinstance(container, list):
            container.append(json.loads(json.dumps(container[key], allow_nan=True)))
    return data


def encoded(data, draw) -> bytes:
    raw = json.dumps(data, ensure_ascii=draw(st.booleans()), allow_nan=True).encode("utf-8")
    damage = draw(st.sampled_from(["none", "none", "none", "cut", "bad-utf8", "bom"]))
    if damage == "cut":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif damage == "bad-utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\xff\xfe\xc3" + raw[at:]
    elif damage == "bom":
        raw = b"\xef\xbb\xbf" + raw
    return raw


def counts(*models) -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in models}


def _one_line(error: CommandError) -> None:
    message = str(error)
    assert message.strip() and "\n" not in message.strip(), message
    assert "Traceback" not in message


# --------------------------------------------------------------------------------------------- benchmark import

BENCHMARK_TABLES = (BenchmarkTask, RubricVersion, Criterion, ActionLog)


@pytest.fixture
def release(tmp_path) -> dict[str, list]:
    folder = write_release_subset(tmp_path / "valid", (1, 2, 277))
    return {name: json.loads((folder / name).read_text(encoding="utf-8")) for name in RELEASE_FILES}


@pytest.mark.parametrize("already_imported", [False, True])
@FUZZ
@given(data=st.data())
def test_the_benchmark_importer_imports_or_refuses_whole(release, tmp_path, already_imported, data):
    if already_imported and not BenchmarkTask.objects.exists():
        call_command("import_benchmark", str(write_release_subset(tmp_path / "first", (1, 2, 277))))
    folder = tmp_path / "fuzzed"
    folder.mkdir(exist_ok=True)
    target = data.draw(st.sampled_from(RELEASE_FILES), label="file")
    for name in RELEASE_FILES:
        content = json.loads(json.dumps(release[name]))
        raw = encoded(mutate(content, data.draw), data.draw) if name == target else json.dumps(content).encode()
        (folder / name).write_bytes(raw)
    with transaction.atomic():
        before = counts(*BENCHMARK_TABLES)
        try:
            call_command("import_benchmark", str(folder), stdout=_Sink())
        except CommandError as error:
            event("refused")
            _one_line(error)
            assert "nothing was imported" in str(error)
            assert counts(*BENCHMARK_TABLES) == before, f"a failed import changed rows: {error}"
        else:
            event("imported")
            _check_imported_tasks()
        transaction.set_rollback(True)


def _check_imported_tasks() -> None:
    """What an accepted release left: every task with a current version holding criteria of sane weights."""
    for task in BenchmarkTask.objects.select_related("current_rubric"):
        assert task.current_rubric is not None, task.index
        for weight, polarity in task.current_rubric.criteria.values_list("weight", "polarity"):
            assert math.isfinite(weight) and polarity in (-1, 1), (task.index, weight, polarity)


class _Sink:
    def write(self, *_args, **_kwargs):
        pass

    def flush(self):
        pass


# --------------------------------------------------------------------------------------------- judgement import

JUDGING_TABLES = (ModelUnderTest, GeneratedVideo, JudgeRun, Judgement, ActionLog)
# Known: a failed import leaves the model under test it registered (import_judgments registers the model before the
# import's transaction; see test_a_results_file_naming_unknown_tasks_changes_nothing). The fuzz checks the rest.
JUDGING_TABLES_CHECKED = (GeneratedVideo, JudgeRun, Judgement, ActionLog)


@pytest.fixture
def results(tmp_path) -> list[dict]:
    """The release's tasks 1, 2, 277 imported, and a valid results file for them."""
    call_command("import_benchmark", str(write_release_subset(tmp_path / "release", (1, 2, 277))), stdout=_Sink())
    entries = []
    for task in BenchmarkTask.objects.select_related("current_rubric").order_by("index"):
        entry = {"index": task.index, "video_path": f"Wan2.1/{task.index}.mp4"}
        for dim in ("scientific", "visual", "instruction"):
            n = task.current_rubric.criteria.filter(dimension=dim).count()
            entry[f"{dim}_eval"] = make_eval(raw_response='{"scores": [...]}', scores=[1] * n, reasoning="fine")
        entries.append(entry)
    return entries


def test_the_valid_results_file_imports(results, tmp_path):
    path = tmp_path / "Wan2.1_result.json"
    path.write_text(json.dumps(results))
    call_command("import_judgments", str(path), "--model", "Wan2.1", stdout=_Sink())
    assert Judgement.objects.filter(status="scored").count() == 9


@FUZZ
@given(data=st.data())
def test_the_judgement_importer_imports_or_refuses_whole(results, tmp_path, data):
    path = tmp_path / "fuzzed_result.json"
    path.write_bytes(encoded(mutate(json.loads(json.dumps(results)), data.draw), data.draw))
    model = data.draw(st.sampled_from(["Wan2.1", "MicroVerse-1.3B"]) | st.text(min_size=1, max_size=30),
                      label="model")
    release = data.draw(st.sampled_from(["released", "draft", "current", "no-such-label"]), label="release")
    with transaction.atomic():
        before = counts(*JUDGING_TABLES_CHECKED)
        try:
            call_command("import_judgments", str(path), "--model", model, "--release", release, stdout=_Sink())
        except CommandError as error:
            event("refused")
            _one_line(error)
            assert counts(*JUDGING_TABLES_CHECKED) == before, f"a failed import changed rows: {error}"
            assert not ModelUnderTest.objects.filter(judge_runs__isnull=False).exists()
        else:
            event("imported")
            assert JudgeRun.objects.count() == before["JudgeRun"] + 1
        transaction.set_rollback(True)


def test_a_results_file_naming_unknown_tasks_changes_nothing(results, tmp_path):
    """The simplest failure: no model under test, video or run is left behind."""
    path = tmp_path / "bad_result.json"
    path.write_text(json.dumps(results + [{"index": 999, "scientific_eval": None}]))
    before = counts(*JUDGING_TABLES)
    with pytest.raises(CommandError, match="not in the benchmark"):
        call_command("import_judgments", str(path), "--model", "BrandNewModel", stdout=_Sink())
    assert counts(*JUDGING_TABLES) == before
    assert not ModelUnderTest.objects.filter(name="BrandNewModel").exists()


assert FIXTURE_DIR.is_dir() and Path(FIXTURE_DIR, RELEASE_FILES[0]).is_file()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite stores NUL characters; PostgreSQL refuses them")
@pytest.mark.parametrize("where", ["model", "entry"])
def test_a_nul_character_is_refused_with_the_one_line_error(results, tmp_path, where):
    path = tmp_path / "nul_result.json"
    if where == "entry":
        results[0]["scientific_eval"]["raw_response"] = "before\x00after"
    path.write_text(json.dumps(results))
    with pytest.raises(CommandError):
        call_command("import_judgments", str(path), "--model", "Nul\x00Model" if where == "model" else "Wan2.1",
                     stdout=_Sink())
