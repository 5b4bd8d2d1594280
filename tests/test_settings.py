"""Production settings refuse insecure defaults."""
import subprocess
import sys

from tests.conftest import ROOT


def _import_production(env: dict) -> subprocess.CompletedProcess:
    base_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'platform'}", "DJANGO_SETTINGS_MODULE": "lode.settings.production"}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env={**base_env, **env}, capture_output=True, text=True, cwd=ROOT
    )


def test_production_refuses_the_local_defaults():
    result = _import_production({})

    assert result.returncode != 0
    assert "Refusing to start with insecure settings" in result.stderr
    assert "LODE_SECRET_KEY" in result.stderr and "S3_ACCESS_KEY_ID" in result.stderr
    assert "LODE_METRICS_TOKEN" in result.stderr and "LODE_SEALING_KEYS" in result.stderr


def test_production_starts_with_real_settings():
    result = _import_production(
        {
            "LODE_SECRET_KEY": "k" * 64,
            "LODE_ALLOWED_HOSTS": "lode.example.com",
            "DATABASE_URL": "postgres://lode_app:s3cure-app@db.internal:5432/lode",
            "DATABASE_OWNER_URL": "postgres://lode_owner:s3cure-owner@db.internal:5432/lode",
            "DATABASE_SYSTEM_URL": "postgres://lode_system:s3cure-system@db.internal:5432/lode",
            "S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "LODE_METRICS_TOKEN": "metrics-token-example",
            "S3_SECRET_ACCESS_KEY": "example-secret",
            "LODE_SEALING_KEYS": "bG9kZS1leGFtcGxlLXNlYWxpbmcta2V5LTMyLWJ5dGU=",
        }
    )

    assert result.returncode == 0, result.stderr
