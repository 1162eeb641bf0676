"""URL routes of the candidate-task pages and the LLM draft of a task's first rubric; mounted at the site root
(``path("", include("rubrics.candidate_urls"))`` in microverse_site/urls.py)."""
from django.urls import path

from rubrics import candidate_views as views

urlpatterns = [
    path("candidates/", views.candidate_list, name="candidate-list"),
    path("candidates/import/", views.candidate_import, name="candidate-import"),
    path("candidates/status/", views.candidate_status, name="candidate-status"),
    path("candidates/retry-failed/", views.candidate_retry_failed, name="candidate-retry-failed"),
    path("candidates/<int:pk>/retry/", views.candidate_retry, name="candidate-retry"),
    path("tasks/<int:index>/draft-rubric/", views.task_draft_rubric, name="task-draft-rubric"),
    path("tasks/<int:index>/draft-rubric/status/", views.task_draft_status, name="task-draft-status"),
]
