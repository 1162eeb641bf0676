"""The paper's instructions (rubrics.llm_prompts) and the validators of their answers: plain functions."""
import json

import pytest

from rubrics import llm_prompts as p

PARAGRAPH = ("Within a human alveolus seen under the microscope, thin translucent type I cells line a round air sac "
             "while a macrophage crawls along its wall, extending ruffled pseudopods toward dust particles; the "
             "capillary network around the sac glows red with red blood cells gliding in single file, and the moist "
             "surfaces shimmer with soft light.")


def rubric(**overrides):
    criterion = {"description": "Correct morphology: the cells have the right shape and size.", "polarity": 1,
                 "weight": 1.0}
    data = {d: [dict(criterion, description=f"{d} criterion {i}: something observable happens.")
                for i in range(1, 6)] for d in ("scientific", "visual", "instruction")}
    data.update(overrides)
    return json.dumps(data)


# ------------------------------------------------------------------------------------------------ messages


def test_task_prompt_messages_carry_the_source_and_the_rules():
    system, user = p.task_prompt_messages(title="How a Stroke Happens", description="Blood flow in the brain.",
                                          url="https://www.youtube.com/watch?v=nBkNs1oNIdw")
    assert system["role"] == "system" and user["role"] == "user"
    for rule in ("main subject", "scene and the action", "details and textures", "single paragraph",
                 "no bullet points"):
        assert rule in system["content"]
    assert "How a Stroke Happens" in user["content"] and "Blood flow in the brain." in user["content"]
    assert "https://www.youtube.com/watch?v=nBkNs1oNIdw" in user["content"]


def test_level_and_rubric_messages_name_the_exact_answer_format():
    system, user = p.task_level_messages(prompt=PARAGRAPH, title="Alveoli")
    for value in ("Organ-level", "Cellular-level", "Subcellular-level", '"confidence"', "strict JSON"):
        assert value in system["content"]
    assert PARAGRAPH in user["content"]
    system, user = p.rubric_draft_messages(prompt=PARAGRAPH, requirement="Show the gas exchange.",
                                           level="Organ-level")
    for value in ('"scientific"', '"visual"', '"instruction"', "1.0", "0.5", "0.2", "-1", "strict JSON"):
        assert value in system["content"]
    assert "Show the gas exchange." in user["content"] and "Organ-level" in user["content"]


# ------------------------------------------------------------------------------------------------- prompt


def test_a_paragraph_is_a_prompt():
    assert p.validate_task_prompt(f"  {PARAGRAPH}\n") == PARAGRAPH
    assert p.validate_task_prompt(f'"{PARAGRAPH}"') == PARAGRAPH
    cut = PARAGRAPH.index(" ", 100)
    wrapped = PARAGRAPH[:cut] + "\n" + PARAGRAPH[cut + 1:]  # a model that wraps its lines: still one paragraph
    assert p.validate_task_prompt(wrapped) == PARAGRAPH


@pytest.mark.parametrize("answer, reason", [
    ("", "empty"),
    (f"{PARAGRAPH}\n\n{PARAGRAPH}", "more than one paragraph"),
    ("- main subject: a macrophage\n- scene: an alveolus\n- details: " + PARAGRAPH, "bullet points"),
    ("1. A macrophage crawls.\n2. " + PARAGRAPH, "bullet points"),
    ("# Prompt\n" + PARAGRAPH, "headings"),
    ("**Prompt:** " + PARAGRAPH, "markdown"),
    ("A macrophage crawls in an alveolus.", "only 6 words"),
    (" ".join([PARAGRAPH] * 5), "too long"),
])
def test_prompt_answers_that_are_not_one_paragraph_are_refused(answer, reason):
    with pytest.raises(ValueError, match=reason):
        p.validate_task_prompt(answer)


# -------------------------------------------------------------------------------------------------- level


def test_level_json():
    answer = p.validate_level('{"level": "Cellular-level", "confidence": 9, "reason": "Red blood cells."}')
    assert answer == p.LevelAnswer("Cellular-level", 9, "Red blood cells.")
    fenced = '```json\n{"level": "Organ-level", "confidence": 7.0, "reason": "A whole vessel."}\n```'
    assert p.validate_level(fenced).confidence == 7


@pytest.mark.parametrize("answer, reason", [
    ("Cellular-level", "not valid JSON"),
    ('["Cellular-level"]', "must be a JSON object"),
    ('{"level": "Cellular-level", "confidence": 9}', "lacks 'reason'"),
    ('{"level": "Tissue-level", "confidence": 9, "reason": "r"}', '"level" must be exactly one of'),
    ('{"level": "cellular", "confidence": 9, "reason": "r"}', '"level" must be exactly one of'),
    ('{"level": "Organ-level", "confidence": 11, "reason": "r"}', "from 1 to 10"),
    ('{"level": "Organ-level", "confidence": "high", "reason": "r"}', "from 1 to 10"),
    ('{"level": "Organ-level", "confidence": true, "reason": "r"}', "from 1 to 10"),
    ('{"level": "Organ-level", "confidence": 5, "reason": " "}', '"reason" must be'),
])
def test_level_answers_outside_the_format_are_refused(answer, reason):
    with pytest.raises(ValueError, match=reason):
        p.validate_level(answer)


def test_level_labels_from_files():
    assert p.level_from_label("Organ-level") == "Organ-level"
    assert p.level_from_label(" subcellular ") == "Subcellular-level"
    assert p.level_from_label("cellular level") == "Cellular-level"
    assert p.level_from_label("Tissue") is None


# ------------------------------------------------------------------------------------------------- rubric


def test_rubric_json():
    data = json.loads(rubric())
    data["scientific"][1].update(polarity="-1", weight="0.5")
    data["visual"] = data["visual"][:3]
    data["visual"][2].update(weight=0.2)
    draft = p.validate_rubric(json.dumps(data))
    assert {d: len(items) for d, items in draft.criteria.items()} == {"scientific": 5, "visual": 3,
                                                                      "instruction": 5}
    assert draft.total == 13
    assert draft.criteria["scientific"][1].polarity == -1 and draft.criteria["scientific"][1].weight == 0.5
    assert draft.criteria["visual"][2].weight == 0.2


def _criteria(n, **fields):
    return [dict({"description": f"Criterion number {i}: it is observable.", "polarity": 1, "weight": 1.0},
                 **fields) for i in range(n)]


@pytest.mark.parametrize("answer, reason", [
    ("here is the rubric", "not valid JSON"),
    (json.dumps({"scientific": _criteria(5), "visual": _criteria(5)}), 'lacks the dimension.*"instruction"'),
    (rubric(extra=[]), 'unexpected key.*"extra"'),
    (rubric(visual=_criteria(2)), '"visual" has 2 criteria; it needs 3 to 8'),
    (rubric(visual=_criteria(9)), '"visual" has 9 criteria'),
    (rubric(scientific=_criteria(4, weight=0.7)), '"scientific" criterion 1: "weight" must be 1.0, 0.5 or 0.2'),
    (rubric(scientific=_criteria(4, weight=True)), '"weight" must be'),
    (rubric(instruction=_criteria(4, polarity=0)), '"instruction" criterion 1: "polarity" must be 1 or -1'),
    (rubric(instruction=_criteria(4, polarity=-1)), "at least one criterion with polarity 1"),
    (rubric(visual=_criteria(4, description="short")), '"description" must be a sentence'),
    (rubric(visual=[_criteria(1)[0]] * 3), "repeats a criterion"),
    (rubric(visual="three good ones"), '"visual" must be a list'),
])
def test_rubric_answers_outside_the_format_are_refused(answer, reason):
    with pytest.raises(ValueError, match=reason):
        p.validate_rubric(answer)
