from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from lode.core import health
from lode.safety.moderations_api import ModerationsApi

api_v1 = [
    path("", include("tenants.urls")),
    path("", include("lode.core.urls")),
    path("", include("lode.core.webhooks.urls")),
    path("", include("lode.billing.urls")),
    path("", include("lode.datasets.urls")),
    path("", include("lode.training.urls")),
    path("", include("lode.generation.urls")),
    path("", include("lode.safety.urls")),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("v1/moderations", ModerationsApi.as_view(), name="openai-moderations"),  # safety's, in OpenAI's shape
    path("v1/", include("lode.generation.openai_urls")),  # the OpenAI-compatible API
    path("admin/", admin.site.urls),
    path("", include("lode.dashboard.urls")),
]
