"""Admin routes (mounted at the site root, see microverse_site/urls.py): the action log and agreement pages and
their API. There is deliberately no route that edits or deletes an action-log row."""
from django.urls import path

from annotation import admin_api, admin_views

urlpatterns = [
    path("manage/log/", admin_views.action_log, name="action-log"),
    path("manage/log.csv", admin_views.action_log_csv, name="action-log-csv"),
    path("manage/agreement/", admin_views.agreement_page, name="agreement"),
    path("api/log/", admin_api.ActionLogList.as_view(), name="api-action-log"),
    path("api/agreement/<str:workflow>/", admin_api.AgreementReport.as_view(), name="api-agreement"),
]
