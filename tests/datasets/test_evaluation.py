"""Clip verdicts from raw measurements (``datasets.evaluation``): plain functions, no database."""
import pytest

from datasets.borders import BorderResult
from datasets.evaluation import Thresholds, Verdict, percent, verdict

LIMITS = Thresholds(classifier_threshold=0.5, border_max_fraction=0.05, text_max_area_fraction=0.005)
NO_BARS = BorderResult(0.0, 0.0, 0.0, 0.0)


def judge(p=0.9, borders=NO_BARS, text=0.0, **kwargs):
    return verdict(micro_probability=p, borders=borders, text_area_fraction=text, thresholds=LIMITS, **kwargs)


def test_a_clip_that_passes_every_stage_is_kept():
    assert judge() == Verdict("kept", "", "")


def test_the_classifier_drops_non_microscale_clips_first():
    result = judge(p=0.31, borders=BorderResult(0.2, 0.2, 0, 0), text=0.5)

    assert result == ("dropped", "classify", "classifier: p(micro)=0.31 < 0.50")
    assert result.verdict == "dropped" and result.stopped_at_stage == "classify"


def test_exactly_the_threshold_passes():
    assert judge(p=0.5).verdict == "kept"
    assert judge(borders=BorderResult(0.05, 0, 0, 0)).verdict == "kept"
    assert judge(text=0.005).verdict == "kept"


def test_unclassified_clips_pass_on_to_the_experts():
    result = judge(p=None)

    assert result.verdict == "kept" and result.stopped_at_stage == ""
    assert "unclassified" in result.reason


def test_borders_drop_with_the_widest_side_named():
    result = judge(borders=BorderResult(top=0.12, bottom=0.11, left=0.0, right=0.02), text=0.3)

    assert result == ("dropped", "borders", "borders: top 12% > 5%")
    assert judge(borders=BorderResult(0, 0, 0.02, 0.074)).reason == "borders: right 7.4% > 5%"


def test_text_drops_with_the_words_quoted():
    result = judge(text=0.021, text_found="SUBSCRIBE")

    assert result == ("dropped", "text", 'text: 2.1% of the frame > 0.5% ("SUBSCRIBE")')
    assert judge(text=0.03).reason == "text: 3% of the frame > 0.5%"
    long_text = " ".join(["word"] * 40)
    assert judge(text=0.03, text_found=long_text).reason.endswith('…")')


def test_unmeasured_stages_leave_the_clip_pending():
    assert judge(borders=None, text=None) == ("pending", "", "not measured yet: borders, text")
    assert judge(text=None).verdict == "pending"
    assert judge(p=None, text=None).reason == ("unclassified (no classifier): left to the experts; "
                                               "not measured yet: text")


def test_an_earlier_stage_that_fails_drops_even_if_later_ones_are_unmeasured():
    assert judge(p=0.1, borders=None, text=None).stopped_at_stage == "classify"
    assert judge(borders=BorderResult(0, 0.3, 0, 0), text=None).stopped_at_stage == "borders"


def test_thresholds_change_the_verdict_without_new_measurements():
    clip = {"micro_probability": 0.6, "borders": BorderResult(0.08, 0.08, 0, 0), "text_area_fraction": 0.004}

    assert verdict(**clip, thresholds=LIMITS).stopped_at_stage == "borders"
    assert verdict(**clip, thresholds=Thresholds(0.5, 0.1, 0.005)).verdict == "kept"
    assert verdict(**clip, thresholds=Thresholds(0.7, 0.1, 0.005)).reason == "classifier: p(micro)=0.60 < 0.70"
    assert verdict(**clip, thresholds=Thresholds(0.5, 0.1, 0.001)).stopped_at_stage == "text"


def test_default_thresholds_and_from_mapping():
    assert verdict(micro_probability=0.49, borders=None, text_area_fraction=None).verdict == "dropped"
    pipeline = {"CLASSIFIER_THRESHOLD": 0.7, "BORDER_MAX_FRACTION": 0.1, "TEXT_MAX_AREA_FRACTION": "0.01"}
    assert Thresholds.from_mapping(pipeline) == Thresholds(0.7, 0.1, 0.01)
    assert Thresholds.from_mapping({}) == Thresholds()
    assert Thresholds.from_settings(pipeline) == Thresholds(0.7, 0.1, 0.01)


@pytest.mark.parametrize("fraction, text", [(0.12, "12%"), (0.05, "5%"), (0.021, "2.1%"), (0.005, "0.5%"),
                                            (0.0004, "0.04%"), (0.0, "0%"), (1.0, "100%")])
def test_percent(fraction, text):
    assert percent(fraction) == text
