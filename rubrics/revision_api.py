"""REST API of the rubric revision workflow (thin: parse, authorise, call rubrics.revision).

An expert lists and creates only their own proposals for a round (blind review); a proposal against a rubric
version that is no longer the round's or the task's current one gets HTTP 409 with the reason.
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from microverse_site.roles import ADMIN, EXPERT, api_role_permission
from rubrics import revision
from rubrics.models import BenchmarkTask, Dimension, RevisionAdjudication, RevisionProposal, RevisionRound


class ProposalSerializer(serializers.ModelSerializer):
    expert = serializers.CharField(source="expert.username", read_only=True)
    criterion_id = serializers.IntegerField(required=False, allow_null=True)
    criterion_key = serializers.SerializerMethodField()
    base_version_id = serializers.IntegerField(write_only=True)
    polarity = serializers.ChoiceField(choices=[1, -1], required=False, allow_null=True)

    class Meta:
        model = RevisionProposal
        fields = ["id", "expert", "op", "criterion_id", "criterion_key", "dimension", "description", "polarity",
                  "weight", "rationale", "status", "base_version_id", "created_at", "updated_at"]
        read_only_fields = ["id", "expert", "status", "created_at", "updated_at"]
        extra_kwargs = {"rationale": {"trim_whitespace": False, "allow_blank": True},
                        "description": {"required": False, "allow_blank": True},
                        "dimension": {"required": False, "allow_blank": True},
                        "weight": {"required": False, "allow_null": True}}

    def get_criterion_key(self, obj) -> str | None:
        c = obj.criterion
        return f"{c.dimension}-{c.key_number}" if c is not None else None


class RoundSerializer(serializers.ModelSerializer):
    task = serializers.IntegerField(source="task.index", read_only=True)
    base_version = serializers.IntegerField(source="base_version.number", read_only=True)
    base_version_id = serializers.IntegerField(read_only=True)
    result_version = serializers.IntegerField(source="result_version.number", read_only=True, allow_null=True)

    class Meta:
        model = RevisionRound
        fields = ["id", "task", "base_version", "base_version_id", "status", "result_version", "created_at",
                  "aggregated_at"]


class RoundCreateSerializer(serializers.Serializer):
    task = serializers.IntegerField(help_text="The task's index.")
    experts = serializers.ListField(child=serializers.CharField(), required=False,
                                    help_text="Usernames of the panel; leave out for automatic assignment.")


class SubmitSerializer(serializers.Serializer):
    base_version_id = serializers.IntegerField(required=False)


class SubmitResultSerializer(serializers.Serializer):
    submitted = serializers.IntegerField()
    aggregated = serializers.BooleanField()
    round = RoundSerializer()


class DecideSerializer(serializers.Serializer):
    accept = serializers.BooleanField()
    rationale = serializers.CharField(trim_whitespace=False, allow_blank=True)
    chosen_proposal_id = serializers.IntegerField(required=False, allow_null=True)


class AdjudicationSerializer(serializers.ModelSerializer):
    task = serializers.IntegerField(source="round.task.index", read_only=True)
    proposals = ProposalSerializer(many=True, read_only=True)
    decided_by = serializers.CharField(source="decided_by.username", read_only=True, allow_null=True)

    class Meta:
        model = RevisionAdjudication
        fields = ["id", "round", "task", "op", "criterion", "reason", "status", "proposals", "chosen_proposal",
                  "decided_by", "rationale", "decided_at"]


def _error(exc: ValidationError) -> Response:
    code = status.HTTP_409_CONFLICT if isinstance(exc, revision.StaleVersion) else status.HTTP_400_BAD_REQUEST
    return Response({"detail": " ".join(exc.messages)}, status=code)


def _round(round_id, user, *, panel_only=False) -> RevisionRound:
    round = get_object_or_404(RevisionRound.objects.select_related("task", "base_version"), pk=round_id)
    if panel_only and not revision.is_panel_member(round, user):
        raise PermissionDenied("You are not on this revision round's panel.")
    if not revision.can_view_round(user=user, round=round):
        raise PermissionDenied("You are not on this revision round's panel.")
    return round


class RoundListView(APIView):
    """Revision rounds: an expert's own (on their panel), every round for admins. Admins POST to open one."""

    permission_classes = [api_role_permission(EXPERT, ADMIN)]

    @extend_schema(responses=RoundSerializer(many=True))
    def get(self, request):
        return Response(RoundSerializer(revision.rounds_for(user=request.user)[:500], many=True).data)

    @extend_schema(request=RoundCreateSerializer, responses={201: RoundSerializer})
    def post(self, request):
        from django.contrib.auth import get_user_model

        data = RoundCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        task = get_object_or_404(BenchmarkTask, index=data.validated_data["task"])
        names = data.validated_data.get("experts")
        experts = None
        if names:
            experts = list(get_user_model().objects.filter(username__in=names))
            missing = set(names) - {e.username for e in experts}
            if missing:
                return Response({"detail": f"Unknown users: {', '.join(sorted(missing))}."}, status=400)
        try:
            round = revision.round_open(task=task, by=request.user, experts=experts)
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except ValidationError as exc:
            return _error(exc)
        return Response(RoundSerializer(round).data, status=status.HTTP_201_CREATED)


class ProposalListView(APIView):
    """The requesting expert's own proposals for a round (never anyone else's before aggregation); POST saves a
    draft. A stale base_version_id gives 409."""

    permission_classes = [api_role_permission(EXPERT, ADMIN)]

    @extend_schema(responses=ProposalSerializer(many=True))
    def get(self, request, round_id: int):
        round = _round(round_id, request.user)
        proposals = revision.proposals_visible_to(user=request.user, round=round)
        if round.status == RevisionRound.Status.OPEN or request.query_params.get("mine"):
            proposals = proposals.filter(expert_id=request.user.pk)
        return Response(ProposalSerializer(proposals, many=True).data)

    @extend_schema(request=ProposalSerializer, responses={201: ProposalSerializer, 409: None})
    def post(self, request, round_id: int):
        round = _round(round_id, request.user, panel_only=True)
        data = ProposalSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        dimension = v.get("dimension") or None
        if dimension is not None and dimension not in Dimension.values:
            return Response({"detail": f"Unknown dimension {dimension!r}."}, status=400)
        try:
            proposal = revision.proposal_save(
                round=round, expert=request.user, op=v["op"], criterion_id=v.get("criterion_id"),
                description=v.get("description") or None, weight=v.get("weight"), polarity=v.get("polarity"),
                dimension=dimension, rationale=v.get("rationale", ""), base_version_id=v["base_version_id"],
            )
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except ValidationError as exc:
            return _error(exc)
        return Response(ProposalSerializer(proposal).data, status=status.HTTP_201_CREATED)


class ProposalDetailView(APIView):
    """DELETE one of your drafts."""

    permission_classes = [api_role_permission(EXPERT, ADMIN)]

    @extend_schema(responses={204: None})
    def delete(self, request, round_id: int, pk: int):
        round = _round(round_id, request.user, panel_only=True)
        proposal = get_object_or_404(RevisionProposal, pk=pk, round=round, expert=request.user)
        try:
            revision.proposal_delete_draft(proposal=proposal, expert=request.user)
        except ValidationError as exc:
            return _error(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SubmitView(APIView):
    """Submit all of your drafts for the round; the last panel member's submission aggregates the round."""

    permission_classes = [api_role_permission(EXPERT, ADMIN)]

    @extend_schema(request=SubmitSerializer, responses={200: SubmitResultSerializer, 409: None})
    def post(self, request, round_id: int):
        round = _round(round_id, request.user, panel_only=True)
        data = SubmitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = revision.proposals_submit(round=round, expert=request.user,
                                               base_version_id=data.validated_data.get("base_version_id"))
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except ValidationError as exc:
            return _error(exc)
        return Response(SubmitResultSerializer(result).data)


class AdjudicationListView(APIView):
    """Pending adjudication items with their competing proposals and rationales (admins)."""

    permission_classes = [api_role_permission(ADMIN)]

    @extend_schema(responses=AdjudicationSerializer(many=True))
    def get(self, request):
        return Response(AdjudicationSerializer(revision.pending_adjudications(), many=True).data)


class AdjudicationDecideView(APIView):
    """Accept (optionally choosing one proposal) or reject an adjudication item, with a rationale (admins)."""

    permission_classes = [api_role_permission(ADMIN)]

    @extend_schema(request=DecideSerializer, responses={200: AdjudicationSerializer})
    def post(self, request, pk: int):
        adjudication = get_object_or_404(RevisionAdjudication, pk=pk)
        data = DecideSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            version = revision.adjudication_decide(adjudication=adjudication, admin=request.user, accept=v["accept"],
                                                   rationale=v["rationale"],
                                                   chosen_proposal_id=v.get("chosen_proposal_id"))
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except ValidationError as exc:
            return _error(exc)
        adjudication.refresh_from_db()
        body = AdjudicationSerializer(adjudication).data
        body["version"] = version.number if version else None
        return Response(body)
