"""Reading and writing the MicroWorldBench public release files (plain Python, no Django).

The release is three JSON files (see fixtures/microworldbench/ and the data README): the drafted rubrics
(MWBenchRubrics.json), the same rubrics with tiered weights (MWBenchRubrics_norm.json, Chinese text keys) and the task
metadata (finaltasks.json). Reading validates everything before anything is stored, so a malformed file imports
nothing; each problem is reported on one line naming the file, the task index and the field.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rubrics.scoring import DIMENSIONS, LEVELS, parse_polarity, parse_weight

DRAFT_FILE = "MWBenchRubrics.json"
RELEASED_FILE = "MWBenchRubrics_norm.json"
TASKS_FILE = "finaltasks.json"

# The text keys differ between the two rubric files.
TEXT_KEYS = {
    "draft": ("task", "requirement"),
    "released": ("任务", "具体要求"),
}
RUBRIC_FILES = {"draft": DRAFT_FILE, "released": RELEASED_FILE}
# ASCII digits without leading zeros and nothing after them, so that two keys never share a number ("d1"/"d01",
# "d1"/"d1\n", "d1"/"d\u0661" would otherwise overwrite each other silently).
_RUBRIC_KEY = re.compile(r"^([dsw])(0|[1-9][0-9]*)\Z")
# Index and key numbers are stored in integer columns; PostgreSQL's integer stops here.
MAX_NUMBER = 2_147_483_647
_SOURCE_URL = re.compile(r"_(https?://\S+)$")
_CHANNEL_PREFIX = re.compile(r"^https?://[^\s_]+?/@[^_/]+_")


class ReleaseFormatError(ValueError):
    """One problem in a release file, as a one-line message: `file: task N: field F: what is wrong`."""

    def __init__(self, file: str, message: str, *, index: object = None, field: str | None = None):
        parts = [file]
        if index is not None:
            parts.append(f"task {index}")
        if field:
            # Keys come from the file; one with a newline or other control character is shown quoted and escaped.
            parts.append(f"field {field if field.isprintable() else repr(field)}")
        parts.append(message)
        super().__init__(": ".join(parts))


@dataclass(frozen=True)
class ReleaseCriterion:
    dimension: str
    position: int
    key_number: int
    description: str
    polarity: int
    weight: float


@dataclass(frozen=True)
class ReleaseTask:
    index: int
    prompt: str
    requirement: str
    level: str
    source_id: str
    source_url: str
    source_title: str
    classification_confidence: int | None
    source_metadata: dict = field(compare=False)
    draft: tuple[ReleaseCriterion, ...]
    released: tuple[ReleaseCriterion, ...]


def read_release(directory: str | Path) -> list[ReleaseTask]:
    """Validate and join the three files in `directory`; raise ReleaseFormatError on the first problem."""
    directory = Path(directory)
    draft = _index_entries(DRAFT_FILE, _load_list(directory, DRAFT_FILE))
    released = _index_entries(RELEASED_FILE, _load_list(directory, RELEASED_FILE))
    meta = _index_entries(TASKS_FILE, _load_list(directory, TASKS_FILE))
    _check_same_indices({DRAFT_FILE: draft, RELEASED_FILE: released, TASKS_FILE: meta})

    tasks = []
    for index in sorted(draft):
        prompt, requirement = _texts(DRAFT_FILE, draft[index], "draft", index)
        released_prompt, released_requirement = _texts(RELEASED_FILE, released[index], "released", index)
        if (released_prompt, released_requirement) != (prompt, requirement):
            raise ReleaseFormatError(RELEASED_FILE, f"prompt or requirement differs from {DRAFT_FILE}", index=index)
        tasks.append(
            ReleaseTask(
                index=index,
                prompt=prompt,
                requirement=requirement,
                draft=_criteria(DRAFT_FILE, draft[index], index),
                released=_criteria(RELEASED_FILE, released[index], index),
                **_task_metadata(meta[index], index),
            )
        )
    return tasks


def _load_list(directory: Path, name: str) -> list:
    path = directory / name
    if not path.is_file():
        raise ReleaseFormatError(name, f"file not found in {directory}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ReleaseFormatError(name, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ReleaseFormatError(name, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, list):
        raise ReleaseFormatError(name, f"expected a JSON list of tasks, found {type(data).__name__}")
    if not data:
        raise ReleaseFormatError(name, "the file holds no tasks")
    return data


def _index_entries(name: str, entries: list) -> dict[int, dict]:
    by_index: dict[int, dict] = {}
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ReleaseFormatError(name, f"entry {position} is not a JSON object")
        if "index" not in entry:
            raise ReleaseFormatError(name, f"entry {position} has no index", field="index")
        index = entry["index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_NUMBER:
            raise ReleaseFormatError(name, f"entry {position}: index {index!r} is not a positive integer "
                                     f"(at most {MAX_NUMBER})", field="index")
        if index in by_index:
            raise ReleaseFormatError(name, "duplicate index", index=index, field="index")
        _reject_nul(name, entry, index, "")
        by_index[index] = entry
    return by_index


def _reject_nul(name: str, value: object, index: int, where: str) -> None:
    """PostgreSQL cannot store NUL characters in text or JSON; say where one is instead of failing in the database."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ReleaseFormatError(name, "contains a NUL character (\\u0000)", index=index, field=where or None)
    elif isinstance(value, dict):
        for key, member in value.items():
            field_name = f"{where}.{key}" if where else key
            if "\x00" in key:
                raise ReleaseFormatError(name, "a key contains a NUL character (\\u0000)", index=index,
                                         field=where or None)
            _reject_nul(name, member, index, field_name)
    elif isinstance(value, list):
        for position, member in enumerate(value):
            _reject_nul(name, member, index, f"{where}[{position}]")


def _check_same_indices(files: dict[str, dict[int, dict]]) -> None:
    (first_name, first), *others = files.items()
    for name, entries in others:
        missing = sorted(set(first) - set(entries))
        extra = sorted(set(entries) - set(first))
        if missing or extra:
            what = []
            if missing:
                what.append(f"missing tasks {_short_list(missing)} that {first_name} has")
            if extra:
                what.append(f"tasks {_short_list(extra)} that {first_name} lacks")
            raise ReleaseFormatError(name, "index sets differ: " + "; ".join(what))


def _short_list(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:5])
    return shown + (f" (+{len(values) - 5} more)" if len(values) > 5 else "")


def _texts(name: str, entry: dict, style: str, index: int) -> tuple[str, str]:
    texts = []
    for key in TEXT_KEYS[style]:
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ReleaseFormatError(name, "missing or empty text", index=index, field=key)
        texts.append(value)
    return texts[0], texts[1]


def _criteria(name: str, entry: dict, index: int) -> tuple[ReleaseCriterion, ...]:
    criteria: list[ReleaseCriterion] = []
    for dimension in DIMENSIONS:
        key = f"rubrics_{dimension}"
        rubric = entry.get(key)
        if not isinstance(rubric, dict) or not rubric:
            raise ReleaseFormatError(name, "missing or not a non-empty object", index=index, field=key)
        parts: dict[int, dict[str, object]] = {}
        for item_key, value in rubric.items():
            match = _RUBRIC_KEY.match(item_key)
            if not match:
                raise ReleaseFormatError(name, "unexpected key (expected d<N>, s<N>, w<N>)", index=index,
                                         field=f"{key}.{item_key}")
            if int(match.group(2)) > MAX_NUMBER:
                raise ReleaseFormatError(name, f"key number larger than {MAX_NUMBER}", index=index,
                                         field=f"{key}.{item_key}")
            parts.setdefault(int(match.group(2)), {})[match.group(1)] = value
        for position, number in enumerate(sorted(parts), start=1):
            triple = parts[number]
            for letter in "dsw":
                if letter not in triple:
                    raise ReleaseFormatError(name, "missing", index=index, field=f"{key}.{letter}{number}")
            description = triple["d"]
            if not isinstance(description, str) or not description.strip():
                raise ReleaseFormatError(name, "description is empty or not text", index=index,
                                         field=f"{key}.d{number}")
            try:
                polarity = parse_polarity(triple["s"])
            except ValueError as exc:
                raise ReleaseFormatError(name, str(exc), index=index, field=f"{key}.s{number}") from None
            try:
                weight = parse_weight(triple["w"])
            except ValueError as exc:
                raise ReleaseFormatError(name, str(exc), index=index, field=f"{key}.w{number}") from None
            criteria.append(ReleaseCriterion(dimension, position, number, description, polarity, weight))
    return tuple(criteria)


def _task_metadata(entry: dict, index: int) -> dict:
    level = entry.get("final_label")
    if level not in LEVELS:
        raise ReleaseFormatError(TASKS_FILE, f"level {level!r} is not one of {', '.join(LEVELS)}", index=index,
                                 field="final_label")
    source_id = entry.get("id", "")
    if not isinstance(source_id, str):
        raise ReleaseFormatError(TASKS_FILE, "not text", index=index, field="id")
    confidence = entry.get("classification_confidence")
    if confidence in (None, ""):
        confidence_value = None
    else:
        try:
            confidence_value = int(str(confidence).strip())
        except ValueError:
            confidence_value = -1
        if not 1 <= confidence_value <= 10:
            raise ReleaseFormatError(TASKS_FILE, f"{confidence!r} is not an integer from 1 to 10", index=index,
                                     field="classification_confidence")
    url_match = _SOURCE_URL.search(source_id)
    source_url = url_match.group(1) if url_match else ""
    title = source_id[: url_match.start()] if url_match else source_id
    title = _CHANNEL_PREFIX.sub("", title, count=1)
    kept = {k: v for k, v in entry.items() if k not in {"index", "id", "final_label", "classification_confidence"}}
    return {
        "level": level,
        "source_id": source_id,
        "source_url": source_url[:500],
        "source_title": title,
        "classification_confidence": confidence_value,
        "source_metadata": kept,
    }


def render_rubrics_file(tasks: list[dict], *, style: str) -> list[dict]:
    """The published MWBenchRubrics layout for `tasks` (dicts with index, prompt, requirement and criteria).

    `style` is "draft" (MWBenchRubrics.json: English text keys) or "released" (MWBenchRubrics_norm.json: Chinese ones).
    Each criterion is a mapping with dimension, key_number, description, polarity and weight.
    """
    task_key, requirement_key = TEXT_KEYS[style]
    rendered = []
    for task in tasks:
        entry: dict[str, object] = {"index": task["index"], task_key: task["prompt"], requirement_key: task["requirement"]}
        for dimension in DIMENSIONS:
            rubric: dict[str, object] = {}
            for criterion in task["criteria"]:
                if criterion["dimension"] != dimension:
                    continue
                number = criterion["key_number"]
                rubric[f"d{number}"] = criterion["description"]
                rubric[f"s{number}"] = "+1" if criterion["polarity"] > 0 else "-1"
                rubric[f"w{number}"] = float(criterion["weight"])
            entry[f"rubrics_{dimension}"] = rubric
        rendered.append(entry)
    return rendered


def dump_json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
