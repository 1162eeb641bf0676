"""The MLLM judge's prompt, one per task and rubric dimension, and the validator for its answer.

Plain Python (no Django import): ``judging.runs`` builds the inputs from the database and calls
``microverse_site.llm.chat(messages=judge_messages(...), validate=lambda text: validate_judgement(text, n))``.

The prompt follows the published evaluator (``eval/video_evaluator.py`` of FreedomIntelligence/MicroVerse) in our own
words: the task prompt, its detailed requirement, that dimension's criteria numbered 1..n in key order and marked
POSITIVE (+) or PENALTY (-) with their weights, the frames in time order as image parts (base64 JPEG data URLs), and a
request for strict JSON ``{"scores": [0/1 per criterion], "reasoning": "..."}``. Unlike the published prompt, every
criterion is listed (the published one stops at key number 9) and the number of scores is stated.

:data:`PROMPT_VERSION` names this wording; a run records it, and any change to the text must bump it (identical
requests are answered from the recorded LLM calls, so the version is part of what makes a request new).
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

PROMPT_VERSION = "v1"

DIMENSION_TITLES = {
    "scientific": "Scientific Accuracy",
    "visual": "Visual Quality",
    "instruction": "Instruction Following",
}

SYSTEM = (
    "You are an expert judge of scientific animations of the microscopic world (organs and tissues seen up close, "
    "cells, organelles and molecules). You score a generated video against a checklist of criteria, looking only at "
    "the frames you are given, and you answer with strict JSON."
)


@dataclass(frozen=True)
class PromptCriterion:
    """One criterion as the judge sees it. ``polarity`` is +1 (positive point) or -1 (penalty point)."""

    description: str
    polarity: int
    weight: float


def _weight(weight: float) -> str:
    return f"{float(weight):g}"


def criteria_text(criteria: Sequence[PromptCriterion]) -> str:
    """The numbered checklist: ``1. [POSITIVE (+), weight 1] ...`` / ``2. [PENALTY (−), weight 0.5] ...``."""
    lines = []
    for number, criterion in enumerate(criteria, start=1):
        mark = "POSITIVE (+)" if criterion.polarity > 0 else "PENALTY (−)"
        description = " ".join(str(criterion.description).split())
        lines.append(f"{number}. [{mark}, weight {_weight(criterion.weight)}] {description}")
    return "\n".join(lines)


def judge_text(*, prompt: str, requirement: str, dimension: str, criteria: Sequence[PromptCriterion],
               n_frames: int) -> str:
    """The text part of the judge's request for one dimension."""
    if dimension not in DIMENSION_TITLES:
        raise ValueError(f"unknown dimension {dimension!r}")
    if not criteria:
        raise ValueError("a judge prompt needs at least one criterion")
    title = DIMENSION_TITLES[dimension]
    n = len(criteria)
    return (
        f"Evaluate this generated video of the microscopic world in the dimension **{title}**.\n\n"
        f"**Task (the prompt the video was generated from):**\n{prompt.strip()}\n\n"
        f"**Detailed requirements:**\n{requirement.strip()}\n\n"
        f"**{title} criteria ({n}):**\n{criteria_text(criteria)}\n\n"
        "**How to score:**\n"
        f"1. The {n_frames} images are frames of the video, evenly spaced, in time order.\n"
        "2. Judge every criterion on its own, in the order listed: 1 or 0.\n"
        "3. POSITIVE (+) criterion: 1 if the video meets it, 0 if it does not.\n"
        "4. PENALTY (−) criterion: 1 if the video shows the problem it describes, 0 if it does not.\n"
        "5. Explain each judgement briefly in the reasoning.\n\n"
        "**Answer with this JSON object and nothing else:**\n"
        '{"scores": [' + ", ".join(["0 or 1"] * n) + '], "reasoning": "why, criterion by criterion"}\n'
        f'"scores" must hold exactly {n} entries, one per criterion in the order listed, each the integer 0 or 1.'
    )


def image_part(jpeg: bytes) -> dict:
    """A chat-completions image part holding a JPEG as a base64 data URL."""
    return {"type": "image_url",
            "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")}}


def judge_messages(*, prompt: str, requirement: str, dimension: str, criteria: Sequence[PromptCriterion],
                   frames: Sequence[bytes]) -> list[dict]:
    """The chat messages for one judge call: a system message, then the text and one image part per frame."""
    text = judge_text(prompt=prompt, requirement=requirement, dimension=dimension, criteria=criteria,
                      n_frames=len(frames))
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [{"type": "text", "text": text}, *(image_part(frame) for frame in frames)]},
    ]


_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)\n?\s*```", re.DOTALL)


def _json_object(text: str) -> dict:
    text = (text or "").strip()
    if not text:
        raise ValueError("the answer is empty; answer with the JSON object")
    fence = _FENCE.fullmatch(text)
    if fence:
        text = fence.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         "answer with the JSON object only") from None
    if not isinstance(data, dict):
        raise ValueError('the answer must be a JSON object {"scores": [...], "reasoning": "..."}')
    return data


def validate_judgement(text: str, n_criteria: int) -> tuple[list[int], str]:
    """``(scores, reasoning)`` from the judge's answer, or ``ValueError`` with a reason the judge can act on.

    Well formed: the whole answer is one JSON object (a surrounding ``` fence is tolerated) whose ``"scores"`` is a
    list of exactly `n_criteria` entries, each the integer 0 or 1 (``true``/``false``, ``1.0`` and ``"1"`` are
    refused), and whose ``"reasoning"`` is a string (missing: "")."""
    data = _json_object(text)
    if "scores" not in data:
        raise ValueError('the JSON object has no "scores" list')
    scores = data["scores"]
    if not isinstance(scores, list):
        raise ValueError(f'"scores" must be a list of {n_criteria} integers 0 or 1, not {type(scores).__name__}')
    if len(scores) != n_criteria:
        raise ValueError(f'"scores" has {len(scores)} entries but there are {n_criteria} criteria; '
                         f"give exactly {n_criteria}, one per criterion in order")
    for position, entry in enumerate(scores, start=1):
        if isinstance(entry, bool) or not isinstance(entry, int) or entry not in (0, 1):
            raise ValueError(f'"scores" entry {position} is {json.dumps(entry)}; every entry must be the integer '
                             "0 or 1")
    reasoning = data.get("reasoning", "")
    if reasoning is None:
        reasoning = ""
    if not isinstance(reasoning, str):
        raise ValueError('"reasoning" must be a string')
    return list(scores), reasoning.strip()
