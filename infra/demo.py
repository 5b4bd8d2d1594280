"""The end-to-end demo scenario, through the public API only (plain HTTP, as a customer would).
It grows with each capability. Run by `make demo` once the platform is up."""
from __future__ import annotations

import argparse
import hashlib
import sys
import time

import requests

DEMO_EMAIL = "demo@lode.example"
DEMO_PASSWORD = "lode demo password 2026"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def bar(fraction: float, width: int = 30) -> str:
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:5.1f}%"


def wait_ready(base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(f"{base}/readyz", timeout=3)
            if response.status_code == 200:
                return
            last = response.json()["error"]["message"]
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    sys.exit(f"The platform did not become ready: {last}")


def follow_job(api: requests.Session, base: str, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"{base}/api/v1/jobs/{job_id}", timeout=10).json()
        print(f"\r  {job['kind']:<14} {job['state']:<10} {bar(job['progress'])}", end="", flush=True)
        if job["state"] in {"succeeded", "failed", "cancelled"}:
            print()
            return job
        time.sleep(0.3)
    sys.exit(f"\njob {job_id} did not finish in {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    base = parser.parse_args().base_url.rstrip("/")

    step("Waiting for the platform (database, Redis, S3)")
    wait_ready(base)
    print("  ready:", requests.get(f"{base}/readyz", timeout=5).json()["checks"])

    step("Sign up a user and their organization")
    response = requests.post(
        f"{base}/api/v1/auth/signup",
        json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD, "organization_name": "Demo Vertical AI"},
        timeout=10,
    )
    if response.status_code == 409:
        print(f"  {DEMO_EMAIL} exists already; signing in")
    elif response.status_code != 201:
        sys.exit(f"sign-up failed: {response.status_code} {response.text}")
    step("Sign in and create an API key (its secret is shown once)")
    browser = requests.Session()
    browser.get(f"{base}/login/", timeout=10)
    signed_in = browser.post(
        f"{base}/login/",
        data={"username": DEMO_EMAIL, "password": DEMO_PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        allow_redirects=False,
        timeout=10,
    )
    if signed_in.status_code != 302:
        sys.exit(f"sign-in failed: {signed_in.status_code}")
    browser.headers["X-CSRFToken"] = browser.cookies["csrftoken"]
    me = browser.get(f"{base}/api/v1/auth/me", timeout=10).json()
    print(f"  user {me['user']['email']} in organization {me['organization']['name']!r} as {me['role']}")
    created = browser.post(
        f"{base}/api/v1/api-keys",
        json={"name": "demo integration", "scopes": ["platform:read", "platform:write", "organization:read"]},
        timeout=10,
    )
    if created.status_code != 201:
        sys.exit(f"API key creation failed: {created.status_code} {created.text}")
    key = created.json()
    print(f"  key {key['name']!r}: lode_sk_{key['prefix']}_… scopes {', '.join(key['scopes'])}")
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {key['secret']}"
    denied = api.post(f"{base}/api/v1/api-keys", json={"name": "x", "scopes": ["platform:read"]}, timeout=10)
    print(f"  the key cannot mint keys (no organization:write): {denied.status_code} {denied.json()['error']['message']}")

    step("Submit a job; a worker on the cpu queue runs it")
    job = api.post(f"{base}/api/v1/jobs", json={"kind": "core.ping", "params": {"steps": 10, "sleep_seconds": 0.2}}, timeout=10).json()
    done = follow_job(api, base, job["id"])
    if done["state"] != "succeeded":
        sys.exit(f"job failed: {done['error']}")
    events = api.get(f"{base}/api/v1/jobs/{job['id']}/events", timeout=10).json()["results"]
    print("  states:", " -> ".join(e["data"]["state"] for e in events if e["kind"] == "state"))

    step("The same through the gpu queue (CPU torch here, a GPU node in production)")
    job = api.post(f"{base}/api/v1/jobs", json={"kind": "core.ping.gpu"}, timeout=10).json()
    if follow_job(api, base, job["id"])["state"] != "succeeded":
        sys.exit("gpu-queue job failed")

    step("Billing: the gpu job's time is metered; usage, cost so far and a forecast")
    usage = browser.get(f"{base}/api/v1/billing/usage", timeout=10).json()
    for item in usage["usage"]:
        print(f"  {item['meter']} {item['dimension'] or '(all)'}: {item['quantity']} {item['unit']}s")
    print(f"  {usage['period']}: cost so far {usage['cost_so_far_minor'] / 100:.2f} {usage['currency']},"
          f" forecast {usage['forecast_minor'] / 100:.2f} {usage['currency']}")
    quota = browser.post(f"{base}/api/v1/billing/quotas",
                         json={"meter": "gpu_seconds", "kind": "hard", "limit": "30"}, timeout=10).json()
    refused = api.post(f"{base}/api/v1/jobs", json={"kind": "core.ping.gpu", "params": {"steps": 60, "sleep_seconds": 1}},
                       timeout=10)
    details = refused.json()["error"]["details"]
    print(f"  with a hard quota of 30 GPU-seconds a 60-second job is refused: {refused.status_code}"
          f" (estimated {details.get('estimated')}, remaining {details.get('remaining')})")
    browser.delete(f"{base}/api/v1/billing/quotas/{quota['id']}", timeout=10)
    if refused.status_code != 402:
        sys.exit("the quota did not refuse the job")

    step("Store an artifact and fetch it back through a short-lived presigned URL")
    content = "question,answer\nWhere is my order?,It ships within two business days.\n".encode()
    artifact = api.post(f"{base}/api/v1/artifacts", files={"file": ("faq.csv", content, "text/csv")}, timeout=30).json()
    download = api.get(f"{base}/api/v1/artifacts/{artifact['id']}/download", timeout=10).json()
    fetched = requests.get(download["url"], timeout=30).content
    ok = hashlib.sha256(fetched).hexdigest() == artifact["sha256"]
    print(f"  stored {artifact['name']} ({artifact['size']} bytes), fetched {len(fetched)} bytes, sha256 match: {ok}")
    if not ok:
        sys.exit("artifact round trip failed")

    step("Done")
    print(f"  Dashboard:  {base}/   (sign in as {DEMO_EMAIL} / {DEMO_PASSWORD})")
    print(f"  API docs:   {base}/api/v1/docs")
    print(f"  Metrics:    {base}/metrics")


if __name__ == "__main__":
    main()
