"""The dashboard login, end to end in headless Chromium."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tenants.services import user_signup

PASSWORD = "violet-harbour-lantern-42"

pytestmark = pytest.mark.e2e


def test_dashboard_login_works_in_headless_chromium(live_server, page: Page):
    signup = user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    static_statuses: dict[str, int] = {}
    page.on("response", lambda response: static_statuses.setdefault(response.url, response.status)
            if "/static/" in response.url else None)

    # Wrong password: an error on the login page, still signed out.
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(re.escape(f"{live_server.url}/login/") + r"\?next=/$"))
    page.get_by_label("Email").fill(signup.user.email)
    page.get_by_label("Password").fill("not-the-password-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct email")
    expect(page).to_have_url(re.compile(re.escape(f"{live_server.url}/login/")))

    # Right password: the home page with the user's email and organization.
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_test_id("user-email")).to_have_text("ada@example.com")
    expect(page.get_by_test_id("org-name")).to_have_text("Analytical Engines")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Home")).to_have_attribute(
        "aria-current", "page"
    )

    # The vendored scripts came from our own static files, and nothing from anywhere else.
    assert page.evaluate("typeof htmx") == "object"
    assert page.evaluate("typeof Chart") == "function"
    assert static_statuses[f"{live_server.url}/static/vendor/htmx/htmx.min.js"] == 200
    assert all(url.startswith(live_server.url) for url in requested), requested

    # Log out: back on the login page, and the home page asks to sign in again.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{live_server.url}/login/")
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(re.escape(f"{live_server.url}/login/") + r"\?next=/$"))
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
