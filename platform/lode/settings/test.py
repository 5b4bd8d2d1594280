"""The test suite: its own database, Redis database and bucket, so a running demo is untouched."""
from .base import *  # noqa: F403
from .base import PG_PORT, REDIS_PORT
from .env import env_str, is_set, parse_database_url

DEBUG = False
TEST_DATABASE_NAME = env_str("LODE_TEST_DATABASE", "lode_test")
DATABASES = {
    "default": parse_database_url(
        "DATABASE_URL",
        f"postgres://lode_app:lode_app@127.0.0.1:{PG_PORT}/{TEST_DATABASE_NAME}",
    ).django(),
    "owner": parse_database_url(
        "DATABASE_OWNER_URL",
        f"postgres://lode_owner:lode_owner@127.0.0.1:{PG_PORT}/{TEST_DATABASE_NAME}",
    ).django(),
    "system": parse_database_url(
        "DATABASE_SYSTEM_URL",
        f"postgres://lode_system:lode_system@127.0.0.1:{PG_PORT}/{TEST_DATABASE_NAME}",
    ).django(),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = True
# pytest-django must not create a test_ copy: tests/conftest.py prepares TEST_DATABASE_NAME itself
# (migrations as the owner role, tests as the application role).
for alias in DATABASES.values():
    alias["CONN_MAX_AGE"] = 0
    alias["TEST"] = {"NAME": TEST_DATABASE_NAME}

REDIS_URL = env_str("LODE_TEST_REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/1")
CELERY_BROKER_URL = REDIS_URL
# The cache (rate limits, login lockouts) lives in its own Redis database, apart from the test
# broker, and its keys carry the test database's name so concurrent suites do not share counters.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("LODE_TEST_CACHE_URL", f"redis://127.0.0.1:{REDIS_PORT}/2"),
        "KEY_PREFIX": f"lode-test-{TEST_DATABASE_NAME}",
    }
}
# Many tests sign in from 127.0.0.1 with wrong passwords on purpose; the per-address lockout is
# tested with its own override.
LOGIN_MAX_FAILURES_PER_IP = 10_000
S3_BUCKET = env_str("LODE_TEST_S3_BUCKET", "lode-test")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Short job timings so reconciler behaviour is observable within a test.
JOB_HEARTBEAT_SECONDS = 1
# Webhook receivers in tests are local http.server threads, and retries come quickly.
WEBHOOKS_ALLOW_LOCALHOST = True
WEBHOOK_TIMEOUT_SECONDS = 3
WEBHOOK_MAX_ATTEMPTS = 4
WEBHOOK_RETRY_SCHEDULE_SECONDS = [0.5, 0.5, 1.0]
assert not is_set("LODE_PRODUCTION"), "test settings must never run in production"
