"""Production: secure by default, and refuses to start on the local stack's insecure defaults."""
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import (
    ALLOWED_HOSTS,
    DATABASES,
    INSECURE_S3_ACCESS_KEY_ID,
    INSECURE_SECRET_KEY,
    METRICS_TOKEN,
    S3_ACCESS_KEY_ID,
    SEALING_KEYS,
    SECRET_KEY,
    WEBHOOKS_ALLOW_LOCALHOST,
)
from .env import env_bool, env_int

DEBUG = env_bool("LODE_DEBUG", False)

problems = []
if DEBUG:
    problems.append("LODE_DEBUG must be false")
if SECRET_KEY == INSECURE_SECRET_KEY or len(SECRET_KEY) < 50:
    problems.append("LODE_SECRET_KEY must be set to a random value of at least 50 characters")
if not SEALING_KEYS:
    # Sealed webhook secrets would otherwise hang on SECRET_KEY and be lost with its rotation.
    problems.append("LODE_SEALING_KEYS must hold at least one key (base64 of 32 random bytes)")
if not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS:
    problems.append("LODE_ALLOWED_HOSTS must list the site's host names (no '*')")
for alias, config in DATABASES.items():
    if config["PASSWORD"] in {"", "lode_app", "lode_owner", "lode_system"}:
        problems.append(f"the {alias} database URL must carry a real password")
if not METRICS_TOKEN:
    # Without a token /metrics trusts loopback callers, and a proxy on the same host is one.
    problems.append("LODE_METRICS_TOKEN must be set (Prometheus sends it as a bearer token)")
if S3_ACCESS_KEY_ID == INSECURE_S3_ACCESS_KEY_ID:
    problems.append("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set")
if WEBHOOKS_ALLOW_LOCALHOST:
    # Tenants' webhook URLs could then reach services on the platform's own hosts.
    problems.append("LODE_WEBHOOKS_ALLOW_LOCALHOST must be false")
if problems:
    raise ImproperlyConfigured("Refusing to start with insecure settings: " + "; ".join(problems))

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("LODE_SECURE_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("LODE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
