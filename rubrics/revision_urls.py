"""URL routes of rubric revision and adjudication; mounted at the site root (see microverse_site/urls.py)."""
from django.urls import path

from rubrics import revision_api as api
from rubrics import revision_views as views

urlpatterns = [
    path("revisions/", views.round_list, name="revision-list"),
    path("revisions/open/", views.round_open, name="revision-open"),
    path("revisions/adjudication/", views.adjudication_queue, name="adjudication-queue"),
    path("revisions/adjudication/<int:pk>/decide/", views.adjudication_decide, name="adjudication-decide"),
    path("revisions/<int:round_id>/", views.round_detail, name="revision-round"),
    path("revisions/<int:round_id>/form/", views.proposal_form, name="revision-form"),
    path("revisions/<int:round_id>/proposals/", views.proposal_save, name="revision-proposal-save"),
    path("revisions/<int:round_id>/proposals/<int:pk>/delete/", views.proposal_delete,
         name="revision-proposal-delete"),
    path("revisions/<int:round_id>/submit/", views.proposals_submit, name="revision-submit"),
    path("api/revisions/", api.RoundListView.as_view(), name="api-revision-rounds"),
    path("api/revisions/adjudications/", api.AdjudicationListView.as_view(), name="api-adjudications"),
    path("api/revisions/adjudications/<int:pk>/decide/", api.AdjudicationDecideView.as_view(),
         name="api-adjudication-decide"),
    path("api/revisions/<int:round_id>/proposals/", api.ProposalListView.as_view(), name="api-revision-proposals"),
    path("api/revisions/<int:round_id>/proposals/<int:pk>/", api.ProposalDetailView.as_view(),
         name="api-revision-proposal"),
    path("api/revisions/<int:round_id>/submit/", api.SubmitView.as_view(), name="api-revision-submit"),
]
