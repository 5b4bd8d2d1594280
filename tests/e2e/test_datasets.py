"""Datasets pages end to end in headless Chromium with a real Celery worker: create a dataset
through the form, upload a JSONL file through the upload form (XMLHttpRequest to the API, with
its progress bar), watch the versions table follow the build, open the version, page and search
its rows, see the charts drawn, and launch an operation whose page follows its build."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tenants.services import user_signup

PASSWORD = "violet-harbour-lantern-42"
BUILD_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.e2e


@pytest.fixture
def ada():
    return user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def test_upload_through_the_form_builds_a_version_whose_rows_can_be_browsed(live_server, log_in, ada, celery_worker,
                                                                           tmp_path: Path):
    rows = [{"prompt": f"How do I reset router model R{i}?", "response": f"Hold the reset button for {i % 30 + 5} seconds."}
            for i in range(40)]
    good = _jsonl(tmp_path / "support.jsonl", rows + [{"prompt": "", "response": "no prompt"}] + rows[:2])
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json}\n")

    page = log_in(ada.user.email, PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Datasets").click()
    expect(page).to_have_url(f"{live_server.url}/datasets/")
    expect(page.get_by_text("No datasets yet.")).to_be_visible()

    create = page.locator("#dataset-create-form")
    create.get_by_label("Name").fill("Support tickets")
    create.get_by_label("Modality").select_option("instruction")
    create.get_by_role("button", name="Create dataset").click()
    expect(page.get_by_role("heading", name="Support tickets")).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("Dataset Support tickets created.")

    # A file the API refuses: its message shows, nothing is built.
    upload = page.locator("#upload-form")
    upload.get_by_label("File").set_input_files(broken)
    upload.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-error")).to_be_visible()
    expect(page.locator("#upload-error")).to_contain_text("line 1")
    expect(page.get_by_text("No versions yet")).to_be_visible()

    # The good file: the bar reaches 100%, the new version appears and follows its build.
    upload.get_by_label("File").set_input_files(good)
    upload.get_by_role("button", name="Upload").click()
    expect(page.get_by_test_id("upload-percent")).to_have_text("100%")
    assert page.evaluate("() => document.getElementById('upload-progress').value") == 1
    expect(page.locator("#upload-done")).to_contain_text("version 1 is building")
    expect(page.locator("#upload-error")).to_be_hidden()
    version_row = page.locator('#version-table tr[data-version-number="1"]')
    expect(version_row).to_be_visible()
    expect(version_row).to_have_attribute("data-status", "ready", timeout=BUILD_TIMEOUT_MS)
    expect(version_row).to_contain_text("Ready")
    expect(version_row.locator("td.num")).to_have_text("42")  # 43 lines, one without a prompt
    expect(page.locator("#versions")).to_have_attribute("data-polling", "false")

    # The version: figures, report, charts, rows.
    version_row.get_by_role("link", name="v1").click()
    expect(page.get_by_test_id("version-status")).to_have_text("Ready")
    expect(page.get_by_test_id("version-rows")).to_have_text("42")
    expect(page.locator("#rejected-samples")).to_contain_text("prompt")
    expect(page.get_by_role("img", name="Length of prompt")).to_be_visible()
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-length-prompt'))?.data.datasets[0].data"
                           ".reduce((sum, value) => sum + value, 0) === 42")
    browser_rows = page.locator("#row-table tbody tr")
    expect(browser_rows).to_have_count(25)
    expect(browser_rows.first).to_contain_text("How do I reset router model R0?")
    expect(page.get_by_test_id("row-range")).to_have_text("Rows 1–25 of 42")

    page.locator("#row-browser").get_by_role("link", name="Next").click()
    expect(page.get_by_test_id("row-range")).to_have_text("Rows 26–42 of 42")
    expect(browser_rows).to_have_count(17)
    page.get_by_label("Search the text").fill("model r17?")
    page.locator("#row-browser").get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("row-range")).to_contain_text("Rows 1–1 of 1")
    expect(browser_rows).to_have_count(1)
    expect(browser_rows.first).to_contain_text("R17?")

    # An operation: the new version's page follows its build and then shows its rows.
    launcher = page.locator("#operation-form")
    launcher.get_by_label("Operation").select_option("dedup_exact")
    expect(launcher.get_by_label("Parameters (JSON)")).to_have_value("{}")
    launcher.get_by_role("button", name="Launch").click()
    expect(page.locator(".messages")).to_contain_text("Building version 2 (Exact dedup) from version 1.")
    expect(page.get_by_test_id("version-status")).to_have_text("Ready", timeout=BUILD_TIMEOUT_MS)
    expect(page.locator("#version-body")).to_have_attribute("data-polling", "false")
    expect(page.get_by_test_id("version-rows")).to_have_text("40")
    expect(page.get_by_test_id("version-operation")).to_have_text("Exact dedup of v1")
    expect(page.locator("#report")).to_contain_text("removed")
    expect(page.locator("#lineage li")).to_have_count(2)
    expect(page.locator("#row-table tbody tr")).to_have_count(25)
