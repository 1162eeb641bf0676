"""Pipeline pages; mounted at the site root (``path("", include("datasets.urls"))`` in microverse_site/urls.py)."""
from django.urls import path

from datasets import views

urlpatterns = [
    path("pipeline/", views.funnel, name="pipeline-funnel"),
    path("pipeline/reevaluate/", views.reevaluate, name="pipeline-reevaluate"),
    path("pipeline/videos/", views.video_list, name="pipeline-videos"),
    path("pipeline/videos/<int:pk>/", views.video_detail, name="video-detail"),
    path("pipeline/videos/<int:pk>/stages/", views.video_stages, name="video-stages"),
    path("pipeline/videos/<int:pk>/start/", views.video_start, name="video-start"),
    path("pipeline/videos/<int:pk>/cancel/", views.video_cancel, name="video-cancel"),
    path("pipeline/videos/<int:pk>/retry/", views.video_retry, name="video-retry"),
    path("pipeline/videos/<int:pk>/reevaluate/", views.reevaluate, name="video-reevaluate"),
]
