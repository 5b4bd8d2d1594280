"""/healthz, /readyz (against a real S3 endpoint that goes down) and /metrics."""
import socket
import subprocess

import pytest
from django.test import override_settings

from tests.conftest import ROOT, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_healthz_answers_without_dependencies(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_naming_s3_when_the_endpoint_is_down_and_200_when_up(client, tmp_path):
    from lode.core.artifacts import bucket_ensure

    port = _free_port()
    s3rver = ROOT / "node_modules" / ".bin" / "s3rver"
    server = subprocess.Popen(
        [str(s3rver), "-d", str(tmp_path), "-a", "127.0.0.1", "-p", str(port), "--no-vhost-buckets", "-s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _port_open(port), timeout=20, message="the S3 endpoint to start")
        with override_settings(S3_ENDPOINT_URL=f"http://127.0.0.1:{port}"):
            bucket_ensure()
            up = client.get("/readyz")
            assert up.status_code == 200, up.content
            assert set(up.json()["checks"]) == {"database", "redis", "s3"}

            server.terminate()
            server.wait(timeout=10)
            down = client.get("/readyz")
    finally:
        if server.poll() is None:
            server.kill()

    assert down.status_code == 503
    error = down.json()["error"]
    assert error["code"] == "not_ready" and error["details"]["failing"] == ["s3"]
    assert "s3" in error["message"]


@pytest.mark.django_db
def test_readyz_names_redis_when_it_is_down(client):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0"):
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"]["details"]["failing"] == ["redis"]


@pytest.mark.django_db(databases=["default", "system"])
def test_metrics_expose_request_and_job_counters(client):
    client.get("/healthz")

    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    text = response.content.decode()
    assert 'lode_http_requests_total{method="GET",route="healthz",status="200"}' in text
    assert "# TYPE lode_jobs gauge" in text


@pytest.mark.django_db(databases=["default", "system"])
def test_metrics_refuse_remote_callers_without_the_token(client):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    with override_settings(METRICS_TOKEN="s3cret"):
        assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_responses_carry_a_request_id_and_echo_a_sane_incoming_one(client):
    assert len(client.get("/healthz")["X-Request-ID"]) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    assert client.get("/healthz", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"] != "bad id\n"
