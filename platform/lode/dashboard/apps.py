"""Django app registration for the dashboard."""
from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "lode.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"
