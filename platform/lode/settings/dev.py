"""Local development and the demo: the base settings with debugging on by default."""
from .base import *  # noqa: F403
from .env import env_bool

DEBUG = env_bool("LODE_DEBUG", True)
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
