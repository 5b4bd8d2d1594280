from django.urls import path

from . import api

app_name = "tenants"

urlpatterns = [
    path("auth/signup", api.SignupApi.as_view(), name="signup"),
    path("auth/me", api.MeApi.as_view(), name="me"),
]
