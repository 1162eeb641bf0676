from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from microverse_site import views
from microverse_site.throttle import ThrottledLoginView
from rubrics import api as rubrics_api
from rubrics import views as rubrics_views

router = DefaultRouter()
router.register("tasks", rubrics_api.BenchmarkTaskViewSet, basename="api-task")
router.register("exports", rubrics_api.BenchmarkExportViewSet, basename="api-export")
task_versions = rubrics_api.RubricVersionViewSet.as_view({"get": "list"})
task_version = rubrics_api.RubricVersionViewSet.as_view({"get": "retrieve"})

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),  # throttled; LOGIN_THROTTLE in settings
    path("accounts/", include("django.contrib.auth.urls")),
    path("manage/users/", views.user_list, name="user-list"),
    path("manage/users/<int:user_id>/roles/", views.user_set_roles, name="user-set-roles"),
    path("tasks/", rubrics_views.task_list, name="task-list"),
    path("tasks/<int:index>/", rubrics_views.task_detail, name="task-detail"),
    path("benchmark/", rubrics_views.benchmark_overview, name="benchmark-overview"),
    path("benchmark/exports/", rubrics_views.export_create, name="export-create"),
    path("benchmark/exports/<int:pk>/", rubrics_views.export_status, name="export-status"),
    path("benchmark/exports/<int:pk>/download/", rubrics_views.export_download, name="export-download"),
    path("", include("annotation.urls")),  # expert queues and review APIs: review/..., api/review/...
    path("", include("annotation.admin_urls")),  # admin: manage/log/..., manage/agreement/..., api/agreement/...
    path("", include("rubrics.revision_urls")),  # rubric revision and adjudication: revisions/..., api/revisions/...
    path("", include("rubrics.candidate_urls")),  # candidate tasks: candidates/..., tasks/N/draft-rubric/...
    path("", include("datasets.ingest_urls")),  # source video upload: videos/upload/..., api/videos/...
    path("", include("datasets.urls")),  # pipeline: pipeline/, pipeline/videos/..., funnel and stages
    path("", include("datasets.snapshot_urls")),  # pipeline/snapshots/..., pipeline/classifiers/...
    path("", include("datasets.review_urls")),  # captions/... (clip verification and caption checking)
    path("", include("judging.urls")),  # leaderboards, judgements, consistency; blind human evaluation: judging/...
    path("", include("training_jobs.urls")),  # training and generation jobs: jobs/..., api/jobs/...
    path("api/", include(router.urls)),
    path("api/tasks/<int:task_index>/versions/", task_versions, name="task-versions"),
    path("api/tasks/<int:task_index>/versions/<int:number>/", task_version, name="task-version"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # The database admin signs in through the throttled login above, never through its own unthrottled form.
    path("django-admin/login/", views.admin_login_redirect, name="admin-login-redirect"),
    path("django-admin/", admin.site.urls),
]

if settings.DEBUG and settings.STORAGES["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage":
    # Development only: uploaded videos and pipeline clips from MEDIA_ROOT. In production the storage backend
    # (S3 URLs) or the web server (nginx alias for MEDIA_URL) serves them; Django never does.
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
