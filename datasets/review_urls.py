"""Clip verification and caption pages for researchers and admins; mount at the site root
(``path("", include("datasets.review_urls"))`` in microverse_site/urls.py). The experts' queues are the review
machinery's: /review/clip_verification/ and /review/caption_check/ (annotation/urls.py)."""
from django.urls import path

from datasets import review_views

urlpatterns = [
    path("captions/", review_views.captions_overview, name="captions-overview"),
    path("captions/generate/", review_views.captions_generate, name="captions-generate"),
    path("captions/verification/open/", review_views.verification_open, name="verification-open"),
    path("captions/assign/<slug:workflow>/", review_views.assign_experts, name="captions-assign"),
    path("captions/clips/<int:clip_id>/", review_views.caption_history, name="caption-history"),
    path("captions/clips/<int:clip_id>/regenerate/", review_views.caption_regenerate, name="caption-regenerate"),
]
