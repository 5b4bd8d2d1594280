from django.urls import path

from . import api

app_name = "training"

urlpatterns = [
    path("fine-tunes", api.FineTuneListCreateApi.as_view(), name="finetune-list"),
    path("fine-tunes/<uuid:job_id>", api.FineTuneDetailApi.as_view(), name="finetune-detail"),
    path("fine-tunes/<uuid:job_id>/cancel", api.FineTuneCancelApi.as_view(), name="finetune-cancel"),
    path("fine-tunes/<uuid:job_id>/events", api.FineTuneEventListApi.as_view(), name="finetune-events"),
    path("fine-tunes/<uuid:job_id>/checkpoints", api.FineTuneCheckpointListApi.as_view(), name="finetune-checkpoints"),
    path("base-models", api.BaseModelListCreateApi.as_view(), name="base-model-list"),
    path("base-models/<uuid:base_model_id>", api.BaseModelDetailApi.as_view(), name="base-model-detail"),
    path("models", api.TunedModelListApi.as_view(), name="model-list"),
    path("models/<uuid:model_id>", api.TunedModelDetailApi.as_view(), name="model-detail"),
    path("models/<uuid:model_id>/card", api.TunedModelCardApi.as_view(), name="model-card"),
]
