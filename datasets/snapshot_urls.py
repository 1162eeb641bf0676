"""Dataset snapshot and classifier version pages; mounted at the site root
(``path("", include("datasets.snapshot_urls"))`` in microverse_site/urls.py)."""
from django.urls import path

from datasets import snapshot_views as views

urlpatterns = [
    path("pipeline/snapshots/", views.snapshot_list, name="snapshot-list"),
    path("pipeline/snapshots/cut/", views.snapshot_cut, name="snapshot-cut"),
    path("pipeline/snapshots/<int:pk>/export/", views.snapshot_export, name="snapshot-export"),
    path("pipeline/classifiers/", views.classifier_list, name="classifier-list"),
    path("pipeline/classifiers/train/", views.classifier_train, name="classifier-train"),
    path("pipeline/classifiers/<int:pk>/activate/", views.classifier_activate, name="classifier-activate"),
]
