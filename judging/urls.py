"""Judging routes, mounted at the site root (microverse_site/urls.py): judging/..."""
from django.urls import path, re_path

from judging import views

urlpatterns = [
    # results: researchers and admins
    path("judging/", views.leaderboard, name="judging-leaderboard"),
    re_path(r"^judging/leaderboard\.(?P<fmt>csv|md|json)$", views.leaderboard_export,
            name="judging-leaderboard-export"),
    path("judging/models/<int:model_id>/", views.model_detail, name="judging-model"),
    path("judging/tasks/<int:index>/", views.task_detail, name="judging-task"),
    path("judging/judgements/<int:run_id>/<int:index>/", views.judgement_detail, name="judging-judgement"),
    path("judging/consistency/", views.consistency_page, name="judging-consistency"),
    path("judging/consistency.json", views.consistency_json, name="judging-consistency-json"),
    # human evaluation: admins sample videos and comparisons for the experts
    path("judging/human/sample/", views.human_sample, name="judging-human-sample"),
    # blind human evaluation: experts
    path("judging/human/", views.human_queue, name="judging-human"),
    path("judging/human/<int:item_id>/scores/", views.human_submit, name="judging-human-submit"),
    path("judging/pairwise/", views.pairwise_queue, name="judging-pairwise"),
    path("judging/pairwise/<int:item_id>/choice/", views.pairwise_submit, name="judging-pairwise-submit"),
    path("judging/media/v/<str:token>/", views.media_video, name="judging-media"),
]
