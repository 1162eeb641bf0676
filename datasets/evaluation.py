"""A clip's verdict from its raw measurements and the thresholds (plain Python: no Django at import time).

Stages are judged in the pipeline's order, classify -> borders -> text, and the first that fails stops the clip:

* **classify** - dropped when ``micro_probability < classifier_threshold``. ``None`` means *unclassified* (no
  classifier configured): the clip is not dropped, it passes on and the experts judge it;
* **borders** - dropped when the widest black bar (any side) is more than ``border_max_fraction`` of the frame;
* **text** - dropped when burned-in text covers more than ``text_max_area_fraction`` of the frame.

The result is ``"dropped"`` (with the stage and a reason people can read), ``"pending"`` when no stage failed but
the borders or text stage has not measured the clip yet, or ``"kept"``. Measurements are stored raw, so a changed
threshold re-evaluates every clip without decoding anything.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

KEPT, DROPPED, PENDING = "kept", "dropped", "pending"
CLASSIFY, BORDERS, TEXT = "classify", "borders", "text"


@dataclass(frozen=True)
class Thresholds:
    classifier_threshold: float = 0.5
    border_max_fraction: float = 0.05
    text_max_area_fraction: float = 0.005

    @classmethod
    def from_mapping(cls, pipeline: Mapping) -> Thresholds:
        """From a ``settings.PIPELINE``-shaped mapping (missing keys keep the defaults)."""
        defaults = cls()
        return cls(
            classifier_threshold=float(pipeline.get("CLASSIFIER_THRESHOLD", defaults.classifier_threshold)),
            border_max_fraction=float(pipeline.get("BORDER_MAX_FRACTION", defaults.border_max_fraction)),
            text_max_area_fraction=float(pipeline.get("TEXT_MAX_AREA_FRACTION", defaults.text_max_area_fraction)),
        )

    @classmethod
    def from_settings(cls, pipeline: Mapping | None = None) -> Thresholds:
        """From ``pipeline``, or when it is not given, from Django's ``settings.PIPELINE`` (imported only then, so
        this module stays importable and testable without Django)."""
        if pipeline is None:
            from django.conf import settings

            pipeline = settings.PIPELINE
        return cls.from_mapping(pipeline)


class Verdict(NamedTuple):
    verdict: str  # "kept", "dropped" or "pending"
    stopped_at_stage: str  # the stage that dropped the clip ("" unless dropped)
    reason: str


def percent(fraction: float) -> str:
    """0.12 -> "12%", 0.021 -> "2.1%", 0.005 -> "0.5%", 0.0004 -> "0.04%"."""
    value = fraction * 100
    text = f"{value:.2f}" if abs(value) < 1 else f"{value:.1f}"
    return text.rstrip("0").rstrip(".") + "%"


def _quoted(text: str, limit: int = 60) -> str:
    text = " ".join((text or "").split())
    if len(text) > limit:
        text = text[:limit - 1].rstrip() + "…"
    return f' ("{text}")' if text else ""


def verdict(*, micro_probability: float | None, borders=None, text_area_fraction: float | None,
            thresholds: Thresholds | None = None, text_found: str = "") -> Verdict:
    """The verdict of one clip (see the module docstring). ``borders`` is a
    :class:`~datasets.borders.BorderResult` (or anything with ``top``/``bottom``/``left``/``right``) or None when
    not measured; ``text_found`` (optional) is quoted in a text reason.

    >>> verdict(micro_probability=0.31, borders=None, text_area_fraction=None)
    Verdict(verdict='dropped', stopped_at_stage='classify', reason='classifier: p(micro)=0.31 < 0.50')
    """
    limits = thresholds or Thresholds()
    notes = []
    if micro_probability is None:
        notes.append("unclassified (no classifier): left to the experts")
    elif micro_probability < limits.classifier_threshold:
        return Verdict(DROPPED, CLASSIFY, f"classifier: p(micro)={micro_probability:.2f} < "
                                          f"{limits.classifier_threshold:.2f}")

    missing = []
    if borders is None:
        missing.append(BORDERS)
    else:
        side, widest = max((("top", borders.top), ("bottom", borders.bottom), ("left", borders.left),
                            ("right", borders.right)), key=lambda item: item[1] or 0.0)
        if widest is not None and widest > limits.border_max_fraction:
            return Verdict(DROPPED, BORDERS, f"borders: {side} {percent(widest)} > "
                                             f"{percent(limits.border_max_fraction)}")

    if text_area_fraction is None:
        missing.append(TEXT)
    elif text_area_fraction > limits.text_max_area_fraction:
        return Verdict(DROPPED, TEXT, f"text: {percent(text_area_fraction)} of the frame > "
                                      f"{percent(limits.text_max_area_fraction)}{_quoted(text_found)}")

    if missing:
        notes.append("not measured yet: " + ", ".join(missing))
        return Verdict(PENDING, "", "; ".join(notes))
    return Verdict(KEPT, "", "; ".join(notes))
