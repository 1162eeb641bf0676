"""Serializers of the review API. Blind review: the views pass only the decisions the requester may see."""
from rest_framework import serializers

from rubrics.models import CandidateTask, Level

VOTE_CHOICES = [("keep", "keep"), ("reject", "reject")]
STATE_CHOICES = [(s, s) for s in ("open", "decided", "accepted", "rejected", "closed")]
STATE_HELP = ("open; accepted / rejected once the requester has voted on it (or is an admin); "
              "decided when the panel settled it before the requester's vote (the outcome stays hidden).")


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    assigned = serializers.IntegerField()
    label = serializers.CharField(help_text='"37 of 140"')


class CandidateSerializer(serializers.ModelSerializer):
    level = serializers.ChoiceField(choices=Level.choices)

    class Meta:
        model = CandidateTask
        fields = ["id", "prompt", "level", "source_title", "source_url", "source_description"]


class DecisionSerializer(serializers.Serializer):
    expert = serializers.CharField(source="expert.username")
    value = serializers.ChoiceField(choices=VOTE_CHOICES)
    comment = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class QueueEntrySerializer(serializers.Serializer):
    item = serializers.IntegerField(source="item_id")
    position = serializers.IntegerField()
    status = serializers.ChoiceField(choices=[("assigned", "assigned"), ("done", "done")],
                                     help_text="done once the requester has voted")
    state = serializers.ChoiceField(choices=STATE_CHOICES, help_text=STATE_HELP)
    candidate = CandidateSerializer(allow_null=True)


class QueueSerializer(serializers.Serializer):
    workflow = serializers.CharField()
    progress = ProgressSerializer()
    next_item = serializers.IntegerField(allow_null=True, help_text="Where the requester left off (null: done).")
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = QueueEntrySerializer(many=True)


class ItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    workflow = serializers.CharField()
    state = serializers.ChoiceField(choices=STATE_CHOICES, help_text=STATE_HELP)
    candidate = CandidateSerializer(allow_null=True)
    your_decision = DecisionSerializer(allow_null=True)
    others_visible = serializers.BooleanField(help_text="False until the requester has submitted a decision.")
    decisions = DecisionSerializer(many=True, help_text="Only the decisions visible to the requester.")
    can_vote = serializers.BooleanField()
    can_pass = serializers.BooleanField()


class DecisionInputSerializer(serializers.Serializer):
    value = serializers.ChoiceField(choices=VOTE_CHOICES)
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class DecisionResultSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    decision = DecisionSerializer()
    created = serializers.BooleanField(help_text="True when this request recorded the requester's first decision.")
    changed = serializers.BooleanField(help_text="False for a repeat of the same decision (double submit, retry).")
    outcome = serializers.ChoiceField(choices=[("open", "open"), ("accepted", "accepted"), ("rejected", "rejected")])
    decisions = DecisionSerializer(many=True, help_text="All decisions on the item, now visible to the requester.")
    next_item = serializers.IntegerField(allow_null=True)


class PassInputSerializer(serializers.Serializer):
    rationale = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class PassResultSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    passed = serializers.BooleanField()
    reassigned = serializers.BooleanField(help_text="False when no other expert was left to ask.")
    next_item = serializers.IntegerField(allow_null=True)


class AutoAssignResultSerializer(serializers.Serializer):
    workflow = serializers.CharField()
    assignments = serializers.IntegerField(help_text="How many assignments were made.")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
