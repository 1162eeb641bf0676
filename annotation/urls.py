"""URL routes; see microverse_site/urls.py for where they are mounted (at the site root)."""
from django.urls import path

from annotation import api, views

urlpatterns = [
    # expert pages
    path("review/", views.review_home, name="review-home"),
    path("review/<slug:workflow>/", views.queue_page, name="review-queue"),
    path("review/<slug:workflow>/items/<int:item_id>/decision/", views.item_decision, name="review-item-decision"),
    path("review/<slug:workflow>/items/<int:item_id>/pass/", views.item_pass, name="review-item-pass"),
    # admin pages
    path("review/<slug:workflow>/panels/", views.panels_page, name="review-panels"),
    path("review/<slug:workflow>/panels/config/", views.panels_config, name="review-panels-config"),
    path("review/<slug:workflow>/panels/auto-assign/", views.panels_auto_assign, name="review-panels-auto-assign"),
    path("review/<slug:workflow>/panels/items/<int:item_id>/assign/", views.panels_assign,
         name="review-panels-assign"),
    # API
    path("api/review/items/<int:item_id>/", api.ItemDetailView.as_view(), name="api-review-item"),
    path("api/review/items/<int:item_id>/decision/", api.ItemDecisionView.as_view(), name="api-review-item-decision"),
    path("api/review/items/<int:item_id>/pass/", api.ItemPassView.as_view(), name="api-review-item-pass"),
    path("api/review/<slug:workflow>/queue/", api.QueueView.as_view(), name="api-review-queue"),
    path("api/review/<slug:workflow>/auto-assign/", api.AutoAssignView.as_view(), name="api-review-auto-assign"),
]
