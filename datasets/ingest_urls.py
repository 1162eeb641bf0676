"""URL routes for uploading source videos (page, per-file JSON endpoint, API); mounted at the site root
(``path("", include("datasets.ingest_urls"))`` in microverse_site/urls.py)."""
from django.urls import path

from datasets import ingest_views as views

urlpatterns = [
    path("videos/upload/", views.video_upload, name="video-upload"),
    path("videos/upload/file/", views.video_upload_file, name="video-upload-file"),
    path("api/videos/", views.SourceVideoList.as_view(), name="api-video-list"),
    path("api/videos/<int:pk>/", views.SourceVideoDetail.as_view(), name="api-video-detail"),
]
