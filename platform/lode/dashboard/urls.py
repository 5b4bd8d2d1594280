"""Dashboard page routes (server-rendered HTML; the API lives under /api/v1/)."""
from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("login/", views.DashboardLoginView.as_view(), name="login"),
    path("logout/", views.DashboardLogoutView.as_view(), name="logout"),
    path("", views.HomeView.as_view(), name="home"),
    path("jobs/", views.JobListView.as_view(), name="jobs"),
    path("jobs/<uuid:job_id>/", views.JobDetailView.as_view(), name="job"),
]
