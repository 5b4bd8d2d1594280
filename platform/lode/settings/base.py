"""Settings shared by every environment. Everything that varies is read from the environment
through lode.settings.env, with defaults that point at the local stack `make up` starts."""
from pathlib import Path

from kombu import Exchange, Queue

from .env import env_bool, env_int, env_list, env_str, parse_database_url

ROOT_DIR = Path(__file__).resolve().parents[3]
BASE_DIR = ROOT_DIR / "platform"
STATE_DIR = Path(env_str("LODE_STATE", str(ROOT_DIR / ".local")))

# An insecure development key; lode.settings.production refuses to start with it.
INSECURE_SECRET_KEY = "insecure-local-development-key-change-me"
SECRET_KEY = env_str("LODE_SECRET_KEY", INSECURE_SECRET_KEY)
DEBUG = env_bool("LODE_DEBUG", False)
ALLOWED_HOSTS = env_list("LODE_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("LODE_CSRF_TRUSTED_ORIGINS", [])

PG_PORT = env_int("LODE_PG_PORT", 55432)
REDIS_PORT = env_int("LODE_REDIS_PORT", 56379)
S3_PORT = env_int("LODE_S3_PORT", 59000)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tenants",
    "lode.core",
    "lode.training",
    "lode.billing",
    "lode.datasets",
    "lode.generation",
    "lode.safety",
    "lode.dashboard",
]

MIDDLEWARE = [
    "lode.core.observability.RequestIdMiddleware",
    "lode.core.observability.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "lode.core.errors.ApiErrorMiddleware",
]

ROOT_URLCONF = "lode.urls"
WSGI_APPLICATION = "lode.wsgi.application"
ASGI_APPLICATION = "lode.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The platform connects as lode_app, a role that does not own the tables (row-level security
# applies to it). Migrations run through the "owner" alias: `manage.py migrate --database owner`.
DATABASES = {
    "default": parse_database_url(
        "DATABASE_URL",
        env_str("DATABASE_URL", f"postgres://lode_app:lode_app@127.0.0.1:{PG_PORT}/lode"),
    ).django(),
    "owner": parse_database_url(
        "DATABASE_OWNER_URL",
        env_str("DATABASE_OWNER_URL", f"postgres://lode_owner:lode_owner@127.0.0.1:{PG_PORT}/lode"),
    ).django(),
    # Bypasses row-level security: only tenants.db_context.dangerously_all_tenants() uses it.
    "system": parse_database_url(
        "DATABASE_SYSTEM_URL",
        env_str("DATABASE_SYSTEM_URL", f"postgres://lode_system:lode_system@127.0.0.1:{PG_PORT}/lode"),
    ).django(),
}
# Each request runs in one transaction, inside which the tenant context is SET LOCAL.
DATABASES["default"]["ATOMIC_REQUESTS"] = True
DATABASE_ROUTERS = ["lode.core.db.OwnerMigratesRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "tenants.User"
AUTHENTICATION_BACKENDS = ["tenants.backends.EmailBackend"]
LOGIN_MAX_FAILURES_PER_EMAIL = env_int("LODE_LOGIN_MAX_FAILURES_PER_EMAIL", 10)
LOGIN_MAX_FAILURES_PER_IP = env_int("LODE_LOGIN_MAX_FAILURES_PER_IP", 50)
LOGIN_LOCKOUT_SECONDS = env_int("LODE_LOGIN_LOCKOUT_SECONDS", 15 * 60)
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Where people reach the dashboard; used in links sent by email.
LODE_PUBLIC_URL = env_str("LODE_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
DEFAULT_FROM_EMAIL = env_str("LODE_FROM_EMAIL", "Lode <no-reply@lode.example>")
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "dashboard:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = ROOT_DIR / "staticfiles"
# Development and tests serve static files straight from the apps' folders.
WHITENOISE_USE_FINDERS = env_bool("LODE_STATIC_FROM_FINDERS", True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REDIS_URL = env_str("REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("CACHE_URL", REDIS_URL),
        "KEY_PREFIX": "lode",
    }
}

# Uploads larger than this are streamed to a temporary file instead of held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Object storage (S3 API through boto3) ----------------------------------------------------
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL", f"http://127.0.0.1:{S3_PORT}") or None
S3_BUCKET = env_str("S3_BUCKET", "lode")
S3_REGION = env_str("S3_REGION", "us-east-1")
# The local endpoint's (s3rver) fixed credentials; production refuses them.
INSECURE_S3_ACCESS_KEY_ID = "S3RVER"
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID", INSECURE_S3_ACCESS_KEY_ID)
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY", "S3RVER")
S3_PRESIGN_TTL_SECONDS = env_int("S3_PRESIGN_TTL_SECONDS", 300)
S3_MULTIPART_THRESHOLD_BYTES = env_int("S3_MULTIPART_THRESHOLD_BYTES", 8 * 1024 * 1024)
S3_MULTIPART_CHUNK_BYTES = env_int("S3_MULTIPART_CHUNK_BYTES", 8 * 1024 * 1024)
ARTIFACT_UPLOAD_MAX_BYTES = env_int("ARTIFACT_UPLOAD_MAX_BYTES", 512 * 1024 * 1024)

# Where workers keep models pulled from the artifact store (a local cache; S3 is the source).
MODEL_CACHE_DIR = Path(env_str("LODE_MODEL_CACHE", str(STATE_DIR / "models")))

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None  # job state lives in PostgreSQL, not in Celery results
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_QUEUES = [
    Queue("cpu", Exchange("cpu"), routing_key="cpu"),
    Queue("gpu", Exchange("gpu"), routing_key="gpu"),
]
CELERY_TASK_ROUTES = {
    "lode.core.*": {"queue": "cpu"},
}
# Redis re-delivers an unacknowledged message after this long; long jobs rely on the job
# reconciler (heartbeats) instead, so keep it above the longest task time limit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_TIME_LIMIT = 6 * 3600
CELERY_TIMEZONE = "UTC"

# --- Jobs ----------------------------------------------------------------------------------------
JOB_HEARTBEAT_SECONDS = env_int("LODE_JOB_HEARTBEAT_SECONDS", 10)
# A running job whose heartbeat is older than this is taken as lost with its worker.
JOB_HEARTBEAT_TIMEOUT_SECONDS = env_int("LODE_JOB_HEARTBEAT_TIMEOUT_SECONDS", 60)
# A queued job not started this long after its message was sent is sent again (with back-off).
JOB_REDISPATCH_AFTER_SECONDS = env_int("LODE_JOB_REDISPATCH_AFTER_SECONDS", 60)
JOB_MAX_ATTEMPTS = env_int("LODE_JOB_MAX_ATTEMPTS", 3)
JOB_RECONCILE_EVERY_SECONDS = env_int("LODE_JOB_RECONCILE_EVERY_SECONDS", 15)

# --- API -------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # API keys first: an unauthenticated call is then a 401 with a Bearer challenge.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        "tenants.authentication.SessionAuthentication",
    ],
    # Every endpoint names its area (required_area); AreaPermission refuses one that does not.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated", "tenants.permissions.AreaPermission"],
    "DEFAULT_THROTTLE_CLASSES": [
        "tenants.throttling.ApiKeyRateThrottle",
        "tenants.throttling.OrganizationRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "api_key": env_str("LODE_RATE_LIMIT_PER_KEY", "1200/min"),
        "organization": env_str("LODE_RATE_LIMIT_PER_ORGANIZATION", "6000/min"),
        "anon": env_str("LODE_RATE_LIMIT_ANONYMOUS", "60/min"),
        "signup": env_str("LODE_RATE_LIMIT_SIGNUP", "20/hour"),
    },
    "DEFAULT_PAGINATION_CLASS": "lode.core.pagination.CreatedCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "lode.core.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": None,
    # `?format=` is ours (e.g. a dataset download's jsonl/csv/parquet), not a renderer switch.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Lode API",
    "DESCRIPTION": "From raw vertical data to a fine-tuned generative model serving traffic.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Logging: one JSON object per line, with the request id -------------------------------------
LOG_LEVEL = env_str("LODE_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "lode.core.observability.RequestIdFilter"}},
    "formatters": {"json": {"()": "lode.core.observability.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# Periodic work, all in one place. Started by `infra/worker.sh beat`.
CELERY_BEAT_SCHEDULE = {
    "reconcile-jobs": {
        "task": "lode.core.reconcile_jobs",
        "schedule": float(JOB_RECONCILE_EVERY_SECONDS),
        "options": {"queue": "cpu", "expires": float(JOB_RECONCILE_EVERY_SECONDS)},
    },
    # Closes last month's invoices once its grace period has passed; idempotent, so hourly.
    "close-billing-periods": {
        "task": "lode.billing.close_periods",
        "schedule": 3600.0,
        "options": {"queue": "cpu", "expires": 3600.0},
    },
    # Stored bytes become byte-hours; each hour is keyed, so extra runs bill nothing twice.
    "sample-storage": {
        "task": "lode.billing.sample_storage",
        "schedule": 900.0,
        "options": {"queue": "cpu", "expires": 900.0},
    },
    # Pushes issued invoices to Stripe that a failed push left behind; does nothing without Stripe.
    "stripe-push-pending": {
        "task": "lode.billing.stripe_push_pending",
        "schedule": 600.0,
        "options": {"queue": "cpu", "expires": 600.0},
    },
}

# --- Webhooks to tenants (lode/core/webhooks/README.md) ----------------------------------------------
# One POST's time limit, per address tried; the receiver should answer 2xx at once and work later.
# Keys that seal secrets Lode reads back (webhook signing secrets): base64 of 32 random bytes each,
# the first seals, all open (lode.core.sealing). Empty: one key derived from SECRET_KEY.
SEALING_KEYS = env_list("LODE_SEALING_KEYS", [])
WEBHOOK_TIMEOUT_SECONDS = env_int("LODE_WEBHOOK_TIMEOUT_SECONDS", 5)
# Attempts in all, the first included; then the delivery is failed.
WEBHOOK_MAX_ATTEMPTS = env_int("LODE_WEBHOOK_MAX_ATTEMPTS", 6)
# The wait after the 1st, 2nd, … failed attempt (the last value repeats): 30 s, 2 min, 10 min, 1 h, 6 h.
WEBHOOK_RETRY_SCHEDULE_SECONDS = [
    float(value) for value in env_list("LODE_WEBHOOK_RETRY_SCHEDULE_SECONDS", ["30", "120", "600", "3600", "21600"])
]
# A pending delivery this overdue lost its Celery message; the redispatcher (beat) sends it again.
WEBHOOK_REDISPATCH_AFTER_SECONDS = env_int("LODE_WEBHOOK_REDISPATCH_AFTER_SECONDS", 300)
# After a rotation the old secret still signs (a second v1) this long, unless the rotation says otherwise.
WEBHOOK_PREVIOUS_SECRET_TTL_SECONDS = env_int("LODE_WEBHOOK_PREVIOUS_SECRET_TTL_SECONDS", 24 * 3600)
# Lets endpoints be loopback addresses (http://127.0.0.1, localhost): development and tests only
# (DEBUG allows it too). Private, link-local and other non-public addresses are always refused.
WEBHOOKS_ALLOW_LOCALHOST = env_bool("LODE_WEBHOOKS_ALLOW_LOCALHOST", False)
# Task modules outside an app's tasks.py, which autodiscovery does not find.
CELERY_IMPORTS = ["lode.core.webhooks.tasks"]
CELERY_BEAT_SCHEDULE["redispatch-webhooks"] = {
    "task": "lode.core.webhooks.redispatch",
    "schedule": 60.0,
    "options": {"queue": "cpu", "expires": 60.0},
}

# --- Datasets -------------------------------------------------------------------------------------
DATASET_UPLOAD_MAX_BYTES = env_int("LODE_DATASET_UPLOAD_MAX_BYTES", 2 * 1024**3)
# How long a generation request waits for the generation server (workers/generation/server.py).
GENERATION_TIMEOUT_SECONDS = env_int("LODE_GENERATION_TIMEOUT_SECONDS", 120)
# A tenant's own base model (a zip of a Hugging Face-format folder), uncompressed.
MODEL_UPLOAD_MAX_BYTES = env_int("LODE_MODEL_UPLOAD_MAX_BYTES", 20 * 1024**3)
DATASET_MAX_ROW_BYTES = env_int("LODE_DATASET_MAX_ROW_BYTES", 1024 * 1024)
# How long POST /v1/fine_tuning/jobs waits for a file that is still being ingested.
OPENAI_FILE_WAIT_SECONDS = env_int("LODE_OPENAI_FILE_WAIT_SECONDS", 30)

# --- Billing ----------------------------------------------------------------------------------------
# New organizations start on this plan (plans are seeded by lode/billing/migrations).
BILLING_DEFAULT_PLAN = env_str("LODE_BILLING_DEFAULT_PLAN", "developer")
BILLING_DEFAULT_TAX_RATE = env_str("LODE_BILLING_DEFAULT_TAX_RATE", "0")
BILLING_INVOICE_PREFIX = env_str("LODE_BILLING_INVOICE_PREFIX", "LODE")
# The close of a month waits this long after it ends, for usage still in flight.
BILLING_CLOSE_GRACE_SECONDS = env_int("LODE_BILLING_CLOSE_GRACE_SECONDS", 3600)
# The GPU class a gpu-queue worker bills its time as (a billing meter dimension); "cpu" when the
# worker has no accelerator.
GPU_CLASS = env_str("LODE_GPU_CLASS", "cpu")
# Stripe is optional: without a secret key, invoices are marked paid by staff.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "")
STRIPE_DAYS_UNTIL_DUE = env_int("STRIPE_DAYS_UNTIL_DUE", 30)

# /metrics: with a token set, Prometheus must send it as a bearer token; without, loopback only.
METRICS_TOKEN = env_str("LODE_METRICS_TOKEN", "")
# Set by infra/web.sh for gunicorn's several processes (prometheus_client reads it too).
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
