"""Tenancy pages end to end in headless Chromium: sign up through the form, create an API key and
use its secret against the live API, revoke it in the page and see the API refuse it; the
organization switcher."""
from __future__ import annotations

import re

import pytest
import requests
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from tenants.models import ApiKey
from tenants.selectors import organizations_for_user
from tenants.services import invitation_accept, invitation_create, user_signup
from tests.conftest import rows

PASSWORD = "violet-harbour-lantern-42"

pytestmark = pytest.mark.e2e


def _me(live_server, secret: str) -> requests.Response:
    return requests.get(f"{live_server.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"}, timeout=10)


def test_sign_up_create_use_and_revoke_an_api_key(live_server, page: Page):
    # Sign up through the form: signed in, on the home page of the new organization.
    page.goto(f"{live_server.url}/login/")
    page.get_by_role("link", name="Create an account").click()
    expect(page).to_have_url(f"{live_server.url}/signup/")
    page.get_by_label("Email").fill("lin@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Organization name").fill("Tidal Labs")
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_test_id("user-email")).to_have_text("lin@example.com")
    expect(page.get_by_test_id("org-name")).to_have_text("Tidal Labs")
    user = get_user_model().objects.get(email="lin@example.com")
    [(organization, role)] = organizations_for_user(user=user)
    assert role == "owner"

    # Create a key: the page shows its secret, with a way to copy it.
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="API keys").click()
    expect(page).to_have_url(f"{live_server.url}/settings/api-keys/")
    page.get_by_label("Name").fill("ci")
    page.get_by_label("datasets:read").check()
    page.get_by_label("training:write").check()
    page.get_by_role("button", name="Create key").click()
    expect(page).to_have_url(f"{live_server.url}/settings/api-keys/")
    secret_box = page.get_by_test_id("api-key-secret")
    expect(secret_box).to_be_visible()
    expect(page.get_by_test_id("created-api-key")).to_contain_text("shown only once")
    secret = secret_box.inner_text().strip()
    assert re.fullmatch(r"lode_sk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}", secret), secret

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # The secret works against the live API.
    response = _me(live_server, secret)
    assert response.status_code == 200, response.text
    assert response.json()["organization"]["name"] == "Tidal Labs"
    [key] = rows(ApiKey, organization.id)
    assert key.scopes == ["datasets:read", "training:write"] and key.revoked_at is None

    # Coming back to the page lists the key but never shows the secret again.
    page.goto(f"{live_server.url}/settings/api-keys/")
    expect(page.get_by_test_id("api-key-secret")).to_have_count(0)
    assert secret not in page.content()
    row = page.locator(f'tr[data-api-key="{key.prefix}"]')
    expect(row).to_contain_text("Active")
    expect(row).to_contain_text("datasets:read")
    expect(row).to_contain_text("127.0.0.1")  # last used, from the request above

    # Revoke it in the page: the same request is now refused.
    row.get_by_role("button", name="Revoke ci").click()
    expect(page.get_by_role("status").filter(has_text="revoked")).to_be_visible()
    expect(row).to_contain_text("Revoked")
    expect(row.get_by_role("button", name="Revoke ci")).to_have_count(0)
    assert rows(ApiKey, organization.id)[0].revoked_at is not None
    assert _me(live_server, secret).status_code == 401

    # Both show in the audit log.
    page.get_by_role("link", name="Audit log").click()
    expect(page.locator('tr[data-action="api_key.created"]')).to_contain_text("lin@example.com")
    expect(page.locator('tr[data-action="api_key.revoked"]')).to_contain_text("127.0.0.1")


def test_organization_switcher_acts_for_the_picked_organization(live_server, log_in):
    ada = user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")
    grace = user_signup(email="grace@example.com", password=PASSWORD, organization_name="Compilers Inc")
    created = invitation_create(tenant_id=grace.organization.id, invited_by=grace.user, email=ada.user.email, role="engineer")
    invitation_accept(token=created.token, user=ada.user)

    page = log_in(ada.user.email, PASSWORD)
    expect(page.get_by_test_id("org-name")).to_have_text("Analytical Engines")
    # Picking an organization submits at once (the Switch button is there for pages without JS).
    page.get_by_label("Switch organization").select_option(label="Compilers Inc · engineer")
    expect(page.get_by_test_id("org-name")).to_have_text("Compilers Inc")
    expect(page.get_by_role("status")).to_contain_text("Now working in Compilers Inc.")
    # An engineer there: members are readable, the audit log is not offered.
    expect(page.get_by_role("link", name="Audit log")).to_have_count(0)
    page.get_by_role("link", name="Members").click()
    expect(page.locator('tr[data-member="grace@example.com"]')).to_be_visible()
    expect(page.get_by_role("button", name="Send invitation")).to_have_count(0)
