"""The paper's LLM instructions for benchmark tasks, as message templates, and the validators for their answers.

* Appendix A: a text-to-video task prompt from a source video's title, description and URL;
* Appendix B: the task's level (Organ-level / Cellular-level / Subcellular-level) with a confidence and a reason;
* Appendix G: a first rubric for a task: criteria per dimension (scientific, visual, instruction) with a description,
  a polarity (+1 bonus / -1 penalty) and a weight in the tiers 1.0 / 0.5 / 0.2.

The instructions are written in our own words, following the paper's descriptions. Each ``*_messages`` function returns
the chat messages; each ``validate_*`` function takes the model's answer text and returns the parsed value or raises
``ValueError`` with a reason short enough to show the model in a repair turn (``microverse_site.llm.chat``).
Only the choice values come from Django (``rubrics.models``); no database access.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from rubrics.models import Dimension, Level

# --------------------------------------------------------------------------------------- Appendix A: prompt

PROMPT_MIN_WORDS = 20
PROMPT_MAX_WORDS = 200
PROMPT_MAX_CHARS = 1500

TASK_PROMPT_SYSTEM = (
    "You write prompts for a text-to-video model that must show the microscopic world of biology and medicine: "
    "organs and tissues seen up close, cells, and the structures and molecules inside them. You are given the "
    "metadata of a real educational or scientific video (its title, its description and its URL). Write ONE prompt "
    "for a short video of the process or structure that the source video is about, seen at microscopic scale.\n"
    "Cover, in this order and in flowing prose:\n"
    "1. the main subject: what is being shown (the organ, tissue, cell type, organelle or molecule);\n"
    "2. the scene and the action: where it takes place and what moves, changes or interacts, as a continuous "
    "process the camera can follow;\n"
    "3. the details and textures: shapes, colours, translucency, surfaces and the look of the microscope view.\n"
    "Rules: write a single paragraph of about 40 to 120 words in English; no title, no bullet points, no numbered "
    "points, no line breaks, no quotation marks around it; describe only what can be seen, stay scientifically "
    "plausible, and do not mention the source video, its channel, its URL, hashtags or on-screen text. Answer with "
    "the paragraph only."
)

TASK_PROMPT_USER = (
    "Source video title: {title}\n"
    "Source video description: {description}\n"
    "Source video URL: {url}\n\n"
    "Write the prompt now: one paragraph, no bullet points."
)


def task_prompt_messages(*, title: str, description: str = "", url: str = "") -> list[dict]:
    return [
        {"role": "system", "content": TASK_PROMPT_SYSTEM},
        {"role": "user", "content": TASK_PROMPT_USER.format(title=_one_line(title) or "(none)",
                                                            description=_clip(description, 3000) or "(none)",
                                                            url=(url or "").strip() or "(none)")},
    ]


_BULLET = re.compile(r"^\s*(?:[-*•‣▪◦–—]|\d{1,2}[.)]|[a-zA-Z][.)])\s+")
_INLINE_BULLETS = re.compile(r"(?:^|\s)[•‣▪◦]\s")


def validate_paragraph(text: str, *, min_words: int, max_words: int, max_chars: int, short_hint: str = "",
                       long_hint: str = "") -> str:
    """One paragraph of plain prose within word bounds: no blank lines, lists, headings or markdown. Returns it with
    surrounding quotes dropped and its lines joined. The ValueError says what to fix (the repair prompt quotes it)."""
    text = (text or "").strip()
    if len(text) >= 2 and (text[0], text[-1]) in {('"', '"'), ("'", "'"), ("“", "”")}:
        text = text[1:-1].strip()
    if not text:
        raise ValueError("the answer is empty; write one paragraph")
    lines = text.splitlines()
    if any(not line.strip() for line in lines):
        raise ValueError("the answer has more than one paragraph; write exactly one paragraph with no blank lines")
    if any(_BULLET.match(line) for line in lines) or _INLINE_BULLETS.search(text):
        raise ValueError("the answer uses bullet points or a numbered list; write one paragraph of prose")
    if any(line.lstrip().startswith("#") for line in lines) or "**" in text or "```" in text:
        raise ValueError("the answer uses headings or markdown; write one plain paragraph")
    text = " ".join(line.strip() for line in lines)
    words = len(text.split())
    if words < min_words:
        raise ValueError(f"the paragraph has only {words} words; {short_hint or f'write {min_words} to {max_words}'}")
    if words > max_words or len(text) > max_chars:
        raise ValueError(f"the paragraph is too long ({words} words); "
                         f"{long_hint or f'write at most {max_words} words'}")
    return text


def validate_task_prompt(text: str) -> str:
    """One paragraph of prose, PROMPT_MIN_WORDS..PROMPT_MAX_WORDS words, without bullet points or headings."""
    return validate_paragraph(text, min_words=PROMPT_MIN_WORDS, max_words=PROMPT_MAX_WORDS,
                              max_chars=PROMPT_MAX_CHARS)


# ---------------------------------------------------------------------------------------- Appendix B: level

TASK_LEVEL_SYSTEM = (
    "You classify prompts for microscopic-world videos by the biological scale of their main subject. Choose "
    "exactly one level:\n"
    '- "Organ-level": organs, tissues, vessels or other multicellular structures, where the structure as a whole '
    "is the subject (for example blood flowing through a vessel, the layers of the skin, an alveolus filling with "
    "air);\n"
    '- "Cellular-level": individual cells and what they do (for example a neutrophil chasing a bacterium, a '
    "dividing cell, red blood cells squeezing through a capillary, a paramecium swimming);\n"
    '- "Subcellular-level": structures and molecules inside cells (for example organelles, the cytoskeleton, '
    "DNA replication, proteins, a virus binding a receptor).\n"
    "Judge by the main subject and the main action of the prompt, not by passing mentions. Give your confidence "
    "as a whole number from 1 (a guess) to 10 (certain) and a one-sentence reason.\n"
    'Answer with strict JSON only, no code fences and no other text: {"level": "Organ-level" or "Cellular-level" '
    'or "Subcellular-level", "confidence": <integer 1-10>, "reason": "<one sentence>"}'
)

TASK_LEVEL_USER = (
    "Prompt: {prompt}\n"
    "Source video title: {title}\n\n"
    "Classify the prompt's level. Answer with the JSON object only."
)


@dataclass(frozen=True)
class LevelAnswer:
    level: str
    confidence: int
    reason: str


def task_level_messages(*, prompt: str, title: str = "") -> list[dict]:
    return [
        {"role": "system", "content": TASK_LEVEL_SYSTEM},
        {"role": "user", "content": TASK_LEVEL_USER.format(prompt=_one_line(prompt),
                                                           title=_one_line(title) or "(none)")},
    ]


def level_from_label(value: str) -> str | None:
    """The Level value for "Organ-level", "organ", "Organ level", "Cellular", ... (None when it is none of them)."""
    if not isinstance(value, str):
        return None
    key = re.sub(r"[\s_-]+", " ", value.strip().lower())
    for level in Level:
        names = {level.value.lower().replace("-", " "), level.label.lower()}
        if key in names:
            return level.value
    return None


def validate_level(text: str) -> LevelAnswer:
    data = parse_json_object(text)
    missing = [key for key in ("level", "confidence", "reason") if key not in data]
    if missing:
        raise ValueError(f"the JSON object lacks {', '.join(repr(k) for k in missing)}")
    level = data["level"]
    if not isinstance(level, str) or level not in Level.values:
        raise ValueError(f'"level" must be exactly one of {", ".join(json.dumps(v) for v in Level.values)}, '
                         f"not {json.dumps(level)}")
    confidence = data["confidence"]
    if isinstance(confidence, float) and confidence.is_integer():
        confidence = int(confidence)
    if isinstance(confidence, bool) or not isinstance(confidence, int) or not 1 <= confidence <= 10:
        raise ValueError(f'"confidence" must be a whole number from 1 to 10, not {json.dumps(data["confidence"])}')
    reason = data["reason"]
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError('"reason" must be a non-empty string')
    return LevelAnswer(level=level, confidence=confidence, reason=reason.strip())


# --------------------------------------------------------------------------------------- Appendix G: rubric

RUBRIC_MIN_CRITERIA = 3
RUBRIC_MAX_CRITERIA = 8
WEIGHT_TIERS = (1.0, 0.5, 0.2)
DIMENSIONS = tuple(Dimension.values)  # scientific, visual, instruction

RUBRIC_SYSTEM = (
    "You are a biologist who writes scoring rubrics for videos generated from a prompt about the microscopic "
    "world. A judge will later look at frames of a generated video and mark each of your criteria as met (1) or "
    "not met (0), so every criterion must be one concrete, observable statement about this particular task.\n"
    "Write criteria in three dimensions:\n"
    '- "scientific": scientific correctness: the right morphology and relative scale of the structures, correct '
    "mechanisms, plausible motion and dynamics, no biological impossibilities;\n"
    '- "visual": visual quality: clarity and detail, convincing textures and lighting for a microscope view, '
    "smooth and temporally consistent motion, no artefacts, distortions, flicker or text;\n"
    '- "instruction": instruction following: the subject, the scene, the action and the details that the prompt '
    "asks for are all shown.\n"
    "For each criterion give:\n"
    '- "description": a short name, a colon, then one or two sentences saying what must be seen (or, for a '
    "penalty, what must not be seen);\n"
    '- "polarity": 1 for a desired property (a bonus when present), -1 for an error (a penalty when present);\n'
    '- "weight": 1.0 for a core requirement, 0.5 for a secondary one, 0.2 for an auxiliary detail.\n'
    "Write 5 criteria per dimension (at least 3, at most 8), mostly bonuses with at least one bonus in every "
    "dimension, and include a penalty where a typical mistake is worth catching.\n"
    "Answer with strict JSON only, no code fences and no other text, shaped like this:\n"
    '{"scientific": [{"description": "...", "polarity": 1, "weight": 1.0}, ...], '
    '"visual": [...], "instruction": [...]}'
)

RUBRIC_USER = (
    "Task prompt: {prompt}\n"
    "Detailed requirement: {requirement}\n"
    "Level: {level}\n\n"
    "Write the rubric now as the JSON object only."
)


@dataclass(frozen=True)
class DraftCriterion:
    description: str
    polarity: int
    weight: float


@dataclass(frozen=True)
class RubricDraft:
    criteria: dict[str, list[DraftCriterion]]  # dimension -> criteria, in order

    @property
    def total(self) -> int:
        return sum(len(items) for items in self.criteria.values())


def rubric_draft_messages(*, prompt: str, requirement: str = "", level: str = "") -> list[dict]:
    return [
        {"role": "system", "content": RUBRIC_SYSTEM},
        {"role": "user", "content": RUBRIC_USER.format(prompt=_one_line(prompt),
                                                       requirement=_clip(requirement, 4000) or "(none)",
                                                       level=level or "(not given)")},
    ]


def _polarity(value, where: str) -> int:
    if isinstance(value, str) and value.strip() in {"+1", "1", "-1"}:
        value = int(value.strip())
    if isinstance(value, float) and value in (1.0, -1.0):
        value = int(value)
    if isinstance(value, bool) or value not in (1, -1):
        raise ValueError(f'{where}: "polarity" must be 1 or -1, not {json.dumps(value)}')
    return int(value)


def _weight(value, where: str) -> float:
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ValueError(f'{where}: "weight" must be 1.0, 0.5 or 0.2, not {json.dumps(value)}')
    for tier in WEIGHT_TIERS:
        if abs(float(number) - tier) < 1e-9:
            return tier
    raise ValueError(f'{where}: "weight" must be 1.0, 0.5 or 0.2, not {json.dumps(value)}')


def validate_rubric(text: str) -> RubricDraft:
    data = parse_json_object(text)
    missing = [d for d in DIMENSIONS if d not in data]
    if missing:
        raise ValueError(f"the JSON object lacks the dimension(s) {', '.join(json.dumps(d) for d in missing)}; "
                         f"it needs exactly {', '.join(json.dumps(d) for d in DIMENSIONS)}")
    extra = [key for key in data if key not in DIMENSIONS]
    if extra:
        raise ValueError(f"unexpected key(s) {', '.join(json.dumps(k) for k in extra)}; use only "
                         f"{', '.join(json.dumps(d) for d in DIMENSIONS)}")
    criteria: dict[str, list[DraftCriterion]] = {}
    for dimension in DIMENSIONS:
        items = data[dimension]
        if not isinstance(items, list):
            raise ValueError(f'"{dimension}" must be a list of criteria')
        if not RUBRIC_MIN_CRITERIA <= len(items) <= RUBRIC_MAX_CRITERIA:
            raise ValueError(f'"{dimension}" has {len(items)} criteria; it needs {RUBRIC_MIN_CRITERIA} to '
                             f"{RUBRIC_MAX_CRITERIA}")
        parsed = []
        for number, item in enumerate(items, start=1):
            where = f'"{dimension}" criterion {number}'
            if not isinstance(item, dict):
                raise ValueError(f"{where} must be an object with description, polarity and weight")
            description = item.get("description")
            if not isinstance(description, str) or len(description.strip()) < 10:
                raise ValueError(f'{where}: "description" must be a sentence (at least 10 characters)')
            if len(description) > 1000:
                raise ValueError(f'{where}: "description" is too long (at most 1000 characters)')
            parsed.append(DraftCriterion(" ".join(description.split()), _polarity(item.get("polarity"), where),
                                         _weight(item.get("weight"), where)))
        if not any(c.polarity == 1 for c in parsed):
            raise ValueError(f'"{dimension}" needs at least one criterion with polarity 1 (a bonus)')
        if len({c.description.lower() for c in parsed}) != len(parsed):
            raise ValueError(f'"{dimension}" repeats a criterion; each description must be different')
        criteria[dimension] = parsed
    return RubricDraft(criteria)


# ------------------------------------------------------------------------------------------------- helpers


def parse_json_object(text: str) -> dict:
    """The JSON object that is the whole answer (one surrounding ``` fence is tolerated)."""
    text = (text or "").strip()
    fence = re.fullmatch(r"```[a-zA-Z]*\s*\n(.*?)\n?\s*```", text, flags=re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    if not text:
        raise ValueError("the answer is empty; answer with the JSON object")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         "answer with the JSON object only") from None
    if not isinstance(data, dict):
        raise ValueError("the answer must be a JSON object ({...})")
    return data


def _one_line(text: str) -> str:
    return " ".join((text or "").split())


def _clip(text: str, limit: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
