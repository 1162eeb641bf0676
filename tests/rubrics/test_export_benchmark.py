"""Exporting rubrics in the published MWBenchRubrics format: `manage.py export_benchmark --version V --out FILE`.

The real release is imported once for the module, inside a transaction that is rolled back; every export the tests
look at is written while it is there.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

import rubrics
from rubrics import release_format
from rubrics.models import BenchmarkTask

FIXTURE_DIR = Path(rubrics.__file__).resolve().parent / "fixtures" / "microworldbench"
DRAFT = "MWBenchRubrics.json"
RELEASED = "MWBenchRubrics_norm.json"
TASKS = "finaltasks.json"


def export(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("export_benchmark", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@dataclass
class Exports:
    released: bytes
    released_again: bytes
    draft: bytes
    current: bytes
    stdout: str
    messages: dict[str, str]


@pytest.fixture(scope="module")
def exports(django_db_setup, django_db_blocker, tmp_path_factory) -> Exports:
    folder = tmp_path_factory.mktemp("exports")
    messages = {}
    with django_db_blocker.unblock(), transaction.atomic():
        assert BenchmarkTask.objects.count() == 0
        call_command("import_benchmark", str(FIXTURE_DIR), stdout=StringIO())
        for name, label in (("released", "released"), ("released_again", "released"), ("draft", "draft"),
                            ("current", "current")):
            out, messages[name] = export("--version", label, "--out", str(folder / f"{name}.json"))
            assert out == ""
        stdout, err = export("--version", "released", "--out", "-")
        assert err == ""
        transaction.set_rollback(True)
    return Exports(
        released=(folder / "released.json").read_bytes(),
        released_again=(folder / "released_again.json").read_bytes(),
        draft=(folder / "draft.json").read_bytes(),
        current=(folder / "current.json").read_bytes(),
        stdout=stdout,
        messages=messages,
    )


def _as_numbers(value):
    """A JSON value with key order kept (lists of pairs) and every weight w<N> turned into a float."""
    if isinstance(value, dict):
        return [
            (key, float(member) if key[:1] == "w" and key[1:].isdigit() else _as_numbers(member))
            for key, member in value.items()
        ]
    if isinstance(value, list):
        return [_as_numbers(member) for member in value]
    return value


def _published(name: str):
    return json.loads((FIXTURE_DIR / name).read_text(encoding="utf-8"))


def test_released_export_gives_back_the_normalised_file(exports):
    exported = json.loads(exports.released.decode("utf-8"))
    published = _published(RELEASED)
    assert len(exported) == 459
    assert [e["index"] for e in exported] == [e["index"] for e in published]
    assert _as_numbers(exported) == _as_numbers(published)
    # Weights are always numbers in the export (the release mixes "1.0", "1." and 1.0).
    weights = [v for e in exported for d in ("scientific", "visual", "instruction")
               for k, v in e[f"rubrics_{d}"].items() if k[0] == "w"]
    assert len(weights) == 6884 and all(type(w) is float for w in weights)
    assert sum(1 for w in weights if w == 0.0) == 884


def test_draft_export_gives_back_the_drafted_file(exports):
    exported = json.loads(exports.draft.decode("utf-8"))
    assert len(exported) == 459
    assert _as_numbers(exported) == _as_numbers(_published(DRAFT))
    assert list(exported[0]) == ["index", "task", "requirement", "rubrics_scientific", "rubrics_visual",
                                 "rubrics_instruction"]


def test_export_keeps_key_numbers(exports):
    exported = {e["index"]: e for e in json.loads(exports.released.decode("utf-8"))}
    assert list(exported[2]["rubrics_instruction"])[:3] == ["d11", "s11", "w11"]
    assert len(exported[277]["rubrics_instruction"]) == 3 * 4


def test_export_reports_what_it_wrote(exports):
    assert exports.messages["released"].startswith("Wrote 459 tasks and 6884 criteria (released) to ")
    assert exports.messages["draft"].startswith("Wrote 459 tasks and 6884 criteria (draft) to ")


def test_export_is_deterministic(exports):
    assert exports.released == exports.released_again
    assert exports.released != exports.draft


def test_current_is_the_released_version_after_an_import(exports):
    assert exports.current == exports.released


def test_export_to_standard_output(exports):
    assert exports.stdout.encode("utf-8") == exports.released
    assert exports.stdout.endswith("]\n")
    assert "任务" in exports.stdout  # Chinese keys written as text, not \u escapes


def test_exported_files_read_back_as_the_same_release(exports):
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        (folder / DRAFT).write_bytes(exports.draft)
        (folder / RELEASED).write_bytes(exports.released)
        (folder / TASKS).write_bytes((FIXTURE_DIR / TASKS).read_bytes())
        assert release_format.read_release(folder) == release_format.read_release(FIXTURE_DIR)


@pytest.mark.django_db
@pytest.mark.parametrize("label", ["released", "draft", "current"])
@pytest.mark.parametrize("to_stdout", [False, True], ids=["file", "stdout"])
def test_export_without_tasks_fails(tmp_path, label, to_stdout):
    target = "-" if to_stdout else str(tmp_path / "out.json")
    with pytest.raises(CommandError) as raised:
        export("--version", label, "--out", target)
    assert str(raised.value) == f"No task has a '{label}' rubric version; import the benchmark first."
    assert not (tmp_path / "out.json").exists()


@pytest.mark.django_db
def test_export_rejects_an_unknown_version(tmp_path):
    with pytest.raises(CommandError, match="invalid choice: 'final'"):
        export("--version", "final", "--out", str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


@pytest.mark.django_db
def test_export_needs_an_output(tmp_path):
    with pytest.raises(CommandError, match="--out"):
        export("--version", "released")
