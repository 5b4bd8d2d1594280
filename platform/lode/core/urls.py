from django.urls import path

from . import api

app_name = "core"

urlpatterns = [
    path("jobs", api.JobListCreateApi.as_view(), name="job-list"),
    path("jobs/<uuid:job_id>", api.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<uuid:job_id>/cancel", api.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/events", api.JobEventListApi.as_view(), name="job-events"),
    path("job-kinds", api.JobKindListApi.as_view(), name="job-kinds"),
    path("artifacts", api.ArtifactListCreateApi.as_view(), name="artifact-list"),
    path("artifacts/<uuid:artifact_id>", api.ArtifactDetailApi.as_view(), name="artifact-detail"),
    path("artifacts/<uuid:artifact_id>/download", api.ArtifactDownloadApi.as_view(), name="artifact-download"),
]
