"""The judge prompt and the validation of its answer (plain functions, no database)."""
import base64

import pytest

from judging import prompts
from judging.prompts import PromptCriterion, validate_judgement
from microverse_site.llm import halve_images

CRITERIA = [
    PromptCriterion("The mitochondrion shows folded cristae.", 1, 1.0),
    PromptCriterion("ATP synthase   complexes\nare visible.", 1, 0.5),
    PromptCriterion("The membrane tears apart for no reason.", -1, 0.2),
]
FRAMES = [bytes([0xFF, 0xD8, i, 0xFF, 0xD9]) for i in range(4)]


def messages(**overrides):
    args = dict(prompt="  A mitochondrion turns slowly. ", requirement="Show cristae.", dimension="scientific",
                criteria=CRITERIA, frames=FRAMES)
    args.update(overrides)
    return prompts.judge_messages(**args)


def test_prompt_holds_task_requirement_numbered_criteria_with_polarity_and_weight():
    system, user = messages()
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"][0]["text"]
    assert "**Scientific Accuracy**" in text
    assert "A mitochondrion turns slowly." in text and "Show cristae." in text
    assert "1. [POSITIVE (+), weight 1] The mitochondrion shows folded cristae." in text
    assert "2. [POSITIVE (+), weight 0.5] ATP synthase complexes are visible." in text
    assert "3. [PENALTY (−), weight 0.2] The membrane tears apart for no reason." in text
    assert "criteria (3)" in text and "exactly 3 entries" in text
    assert '"scores": [0 or 1, 0 or 1, 0 or 1]' in text and '"reasoning"' in text
    assert "4 images are frames of the video" in text


def test_frames_are_base64_jpeg_data_url_parts_in_order():
    parts = messages()[1]["content"][1:]
    assert [p["type"] for p in parts] == ["image_url"] * 4
    urls = [p["image_url"]["url"] for p in parts]
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)
    assert [base64.b64decode(u.split(",", 1)[1]) for u in urls] == FRAMES


def test_halve_images_shrinks_the_judge_request():
    shrunk = halve_images(messages())
    assert len([p for p in shrunk[1]["content"] if p["type"] == "image_url"]) == 2
    assert shrunk[1]["content"][0] == messages()[1]["content"][0]


@pytest.mark.parametrize("dimension, title", [("visual", "Visual Quality"), ("instruction", "Instruction Following")])
def test_dimension_titles(dimension, title):
    assert f"**{title}**" in messages(dimension=dimension)[1]["content"][0]["text"]


def test_prompt_refuses_unknown_dimension_and_no_criteria():
    with pytest.raises(ValueError, match="unknown dimension"):
        messages(dimension="style")
    with pytest.raises(ValueError, match="at least one criterion"):
        messages(criteria=[])


def test_prompt_version_is_recorded():
    assert prompts.PROMPT_VERSION == "v1"


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("text", [
    '{"scores": [1, 0, 1], "reasoning": "ok"}',
    '```json\n{"scores": [1, 0, 1], "reasoning": "ok"}\n```',
    '  {"reasoning": "ok", "scores": [1, 0, 1]}  ',
])
def test_valid_answers(text):
    assert validate_judgement(text, 3) == ([1, 0, 1], "ok")


def test_missing_reasoning_is_empty():
    assert validate_judgement('{"scores": [0]}', 1) == ([0], "")
    assert validate_judgement('{"scores": [0], "reasoning": null}', 1) == ([0], "")


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("The video is great. Scores: 1, 0, 1", "not valid JSON"),
    ("<html>502</html>", "not valid JSON"),
    ("[1, 0, 1]", "must be a JSON object"),
    ('{"score": [1, 0, 1]}', 'no "scores"'),
    ('{"scores": "1,0,1"}', "must be a list of 3"),
    ('{"scores": [1, 0]}', "has 2 entries but there are 3 criteria"),
    ('{"scores": [1, 0, 1, 1]}', "has 4 entries but there are 3 criteria"),
    ('{"scores": []}', "has 0 entries"),
    ('{"scores": [1, 2, 0]}', "entry 2 is 2"),
    ('{"scores": [true, 0, 1]}', "entry 1 is true"),
    ('{"scores": [1, 0, 1.0]}', "entry 3 is 1.0"),
    ('{"scores": [1, "0", 1]}', 'entry 2 is "0"'),
    ('{"scores": [1, null, 1]}', "entry 2 is null"),
    ('{"scores": [1, 0, 1], "reasoning": ["a"]}', '"reasoning" must be a string'),
])
def test_invalid_answers_say_why(text, reason):
    with pytest.raises(ValueError, match=None) as info:
        validate_judgement(text, 3)
    assert reason in str(info.value)


def test_validation_reason_is_one_line_for_the_repair_turn():
    with pytest.raises(ValueError) as info:
        validate_judgement('{"scores": [1,\n', 3)
    assert "\n" not in str(info.value)
