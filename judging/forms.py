"""Forms of the judging pages."""
from __future__ import annotations

from django import forms

from judging.human import DEFAULT_EXPERTS_PER_ITEM
from judging.models import ModelUnderTest

SAMPLE_KINDS = (("scores", "Criterion scores of single videos"), ("pairwise", "Blind pairwise preference"))


class HumanEvalSampleForm(forms.Form):
    """What an admin asks for when sending generated videos to the experts."""

    kind = forms.ChoiceField(choices=SAMPLE_KINDS, widget=forms.RadioSelect, initial="scores")
    models = forms.ModelMultipleChoiceField(
        queryset=ModelUnderTest.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Scores: leave empty for every model. Pairwise: at least two.")
    n = forms.IntegerField(label="How many", min_value=1, max_value=5000, initial=20,
                           help_text="videos to score, or comparisons to make")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0,
                              help_text="the same seed and settings draw the same sample (a second run adds nothing)")
    experts_per_item = forms.IntegerField(label="Experts per item", min_value=1, max_value=10,
                                          initial=DEFAULT_EXPERTS_PER_ITEM)

    def clean(self):
        data = super().clean()
        if data.get("kind") == "pairwise" and len(data.get("models") or []) < 2:
            self.add_error("models", "Pairwise preference needs at least two models.")
        return data
