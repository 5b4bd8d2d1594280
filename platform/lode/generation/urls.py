from django.urls import path

from . import api

app_name = "generation"

urlpatterns = [
    path("example-sets", api.ExampleSetListCreateApi.as_view(), name="example-set-list"),
    path("example-sets/<str:name>", api.ExampleSetDetailApi.as_view(), name="example-set-detail"),
    path("prompt-templates", api.PromptTemplateListCreateApi.as_view(), name="template-list"),
    path("prompt-templates/<str:name>", api.PromptTemplateDetailApi.as_view(), name="template-detail"),
    path("prompt-templates/<str:name>/render", api.PromptTemplateRenderApi.as_view(), name="template-render"),
    path("generation-jobs", api.GenerationJobListCreateApi.as_view(), name="job-list"),
    path("generation-jobs/<uuid:job_id>", api.GenerationJobDetailApi.as_view(), name="job-detail"),
    path("generation-jobs/<uuid:job_id>/cancel", api.GenerationJobCancelApi.as_view(), name="job-cancel"),
]
