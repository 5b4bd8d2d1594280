"""Routes of the OpenAI-compatible API, mounted at /v1/ (OpenAI's paths and parameter names).
The last route answers every other path under /v1/ with a 404 in OpenAI's shape: add new routes
(chat/completions, completions, images/generations, moderations) above it."""
from django.urls import path

from . import openai_api
from .openai_errors import RouteNotFoundView

app_name = "openai"

urlpatterns = [
    path("files", openai_api.FileListCreateApi.as_view(), name="file-list"),
    path("files/<str:file_id>", openai_api.FileDetailApi.as_view(), name="file-detail"),
    path("files/<str:file_id>/content", openai_api.FileContentApi.as_view(), name="file-content"),
    path("fine_tuning/jobs", openai_api.FineTuningJobListCreateApi.as_view(), name="fine-tuning-job-list"),
    path("fine_tuning/jobs/<str:fine_tuning_job_id>", openai_api.FineTuningJobDetailApi.as_view(),
         name="fine-tuning-job-detail"),
    path("fine_tuning/jobs/<str:fine_tuning_job_id>/cancel", openai_api.FineTuningJobCancelApi.as_view(),
         name="fine-tuning-job-cancel"),
    path("fine_tuning/jobs/<str:fine_tuning_job_id>/events", openai_api.FineTuningJobEventListApi.as_view(),
         name="fine-tuning-job-events"),
    path("fine_tuning/jobs/<str:fine_tuning_job_id>/checkpoints", openai_api.FineTuningJobCheckpointListApi.as_view(),
         name="fine-tuning-job-checkpoints"),
    path("chat/completions", openai_api.ChatCompletionApi.as_view(), name="chat-completion"),
    path("completions", openai_api.CompletionApi.as_view(), name="completion"),
    path("images/generations", openai_api.ImageGenerationApi.as_view(), name="image-generation"),
    path("models", openai_api.ModelListApi.as_view(), name="model-list"),
    path("models/<str:model>", openai_api.ModelDetailApi.as_view(), name="model-detail"),
    path("<path:unknown_route>", RouteNotFoundView.as_view(), name="not-found"),
]
