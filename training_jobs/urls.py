from django.urls import path

from training_jobs import api, views

urlpatterns = [
    path("jobs/", views.dashboard, name="job-dashboard"),
    path("jobs/weights/", views.weights, name="job-weights"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/live/", views.job_live, name="job-live"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<int:pk>/resume/", views.job_resume, name="job-resume"),
    path("jobs/<int:pk>/generate/", views.job_generate, name="job-generate"),
    path("api/jobs/", api.JobListCreate.as_view(), name="api-job-list"),
    path("api/jobs/<int:pk>/", api.JobDetail.as_view(), name="api-job-detail"),
    path("api/jobs/<int:pk>/cancel/", api.JobCancel.as_view(), name="api-job-cancel"),
]
