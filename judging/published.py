"""The published judge-results file, ``<model>_result.json`` (``eval/video_evaluator.py`` of
FreedomIntelligence/MicroVerse writes it, ``eval/calculate_scores.py`` reads it). Plain Python, no Django.

The file is a JSON list of one entry per judged video::

    [{"index": 17, "video_path": "Wan2.1/17.mp4",
      "scientific_eval": {"raw_response": "...", "parsed_result": {"scores": [1, 0, 1, 1, 0], "reasoning": "..."}},
      "visual_eval": {...}, "instruction_eval": {...}}, ...]

Reading is tolerant of what a judge can get wrong, and keeps it as it is so that the published calculation
(``rubrics.scoring``) can score and flag it: a missing ``*_eval``, a ``parsed_result`` that is null, scores that are
not a list, too short or too long, or hold something other than 0/1. It is strict about the file's structure, and says
what is wrong in one line (:class:`PublishedFormatError`): not JSON, not a list, an entry that is not an object, has
no integer ``index``, or repeats an index.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DIMENSIONS = ("scientific", "visual", "instruction")
EVAL_KEYS = {dim: f"{dim}_eval" for dim in DIMENSIONS}


class PublishedFormatError(ValueError):
    """The file is not a results file; the message says why in one line."""


@dataclass(frozen=True)
class PublishedEntry:
    """One video's entry. ``evals`` maps each dimension present in the entry to its ``*_eval`` value as read (a
    dimension absent from the entry is absent here); ``extra`` keeps any other keys of the entry."""

    index: int
    video_path: object = ""
    evals: dict[str, object] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def parsed_result(self, dimension: str) -> object:
        """The dimension's ``parsed_result`` (None when the dimension, or its parsed result, is missing)."""
        value = self.evals.get(dimension)
        return value.get("parsed_result") if isinstance(value, Mapping) else None

    def scores(self, dimension: str) -> object:
        """The score list as the published calculation reads it: ``parsed_result["scores"]`` as it is (any JSON
        value), or None when the dimension, its parsed result or its scores are missing (left out)."""
        parsed = self.parsed_result(dimension)
        if not isinstance(parsed, Mapping) or not parsed:
            return None
        return parsed.get("scores")

    def reasoning(self, dimension: str) -> str:
        parsed = self.parsed_result(dimension)
        value = parsed.get("reasoning") if isinstance(parsed, Mapping) else None
        return value if isinstance(value, str) else ("" if value is None else json.dumps(value, ensure_ascii=False))

    def raw_response(self, dimension: str) -> str:
        value = self.evals.get(dimension)
        raw = value.get("raw_response") if isinstance(value, Mapping) else None
        return raw if isinstance(raw, str) else ("" if raw is None else json.dumps(raw, ensure_ascii=False))


def _where(position: int, entry: object) -> str:
    index = entry.get("index") if isinstance(entry, Mapping) else None
    return f"entry {position}" + (f" (index {index!r})" if index is not None else "")


def parse_results(data: object) -> list[PublishedEntry]:
    """Entries from already-decoded JSON (see the module docstring for what is refused)."""
    if not isinstance(data, list):
        raise PublishedFormatError(f"the results file must be a JSON list of entries, not a {type(data).__name__}")
    entries: list[PublishedEntry] = []
    seen: dict[int, int] = {}
    for position, item in enumerate(data, start=1):
        if not isinstance(item, Mapping):
            raise PublishedFormatError(f"entry {position} is a {type(item).__name__}, not an object")
        if "index" not in item:
            raise PublishedFormatError(f"entry {position} has no \"index\"")
        index = item["index"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise PublishedFormatError(f"entry {position} has index {json.dumps(index)}: it must be a whole "
                                       "number >= 0")
        if index in seen:
            raise PublishedFormatError(f"index {index} appears twice (entries {seen[index]} and {position})")
        seen[index] = position
        evals = {dim: item[key] for dim, key in EVAL_KEYS.items() if key in item}
        extra = {k: v for k, v in item.items() if k not in ("index", "video_path", *EVAL_KEYS.values())}
        entries.append(PublishedEntry(index=index, video_path=item.get("video_path", ""), evals=evals, extra=extra))
    return entries


def loads_results(text: str | bytes) -> list[PublishedEntry]:
    """Entries of a results file's text."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PublishedFormatError(f"the results file is not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PublishedFormatError(f"the results file is not JSON: {exc.msg} at line {exc.lineno} column "
                                   f"{exc.colno}") from None
    return parse_results(data)


def read_results(path: str | Path) -> list[PublishedEntry]:
    """Entries of the results file at `path`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PublishedFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    return loads_results(raw)


def make_eval(*, raw_response: str, scores: object = None, reasoning: str = "", parsed: bool = True) -> dict:
    """A ``*_eval`` value: ``{"raw_response", "parsed_result": {"scores", "reasoning"}}``, or with
    ``"parsed_result": null`` when `parsed` is false (the judge's answer had no usable JSON)."""
    return {"raw_response": raw_response,
            "parsed_result": {"scores": scores, "reasoning": reasoning} if parsed else None}


def entry_to_json(entry: PublishedEntry) -> dict:
    data: dict[str, object] = {"index": entry.index, "video_path": entry.video_path}
    for dim in DIMENSIONS:
        if dim in entry.evals:
            data[EVAL_KEYS[dim]] = entry.evals[dim]
    data.update(entry.extra)
    return data


def dumps_results(entries: Iterable[PublishedEntry]) -> str:
    """The file's text: entries sorted by index, ``indent=2``, non-ASCII kept (as the published evaluator writes)."""
    ordered = sorted(entries, key=lambda e: e.index)
    return json.dumps([entry_to_json(e) for e in ordered], ensure_ascii=False, indent=2) + "\n"


def write_results(path: str | Path, entries: Iterable[PublishedEntry]) -> None:
    Path(path).write_text(dumps_results(entries), encoding="utf-8")
