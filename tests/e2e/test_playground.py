"""The generation playground in headless Chromium against a real generation server: a prompt to
tiny-gpt2 streams its answer into the page with the finish reason, usage and both verdicts; a
prompt template shows its variables with their defaults and a preview, and fills the request;
an image request on tiny-sd shows the picture."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from lode.generation import prompts
from tenants.services import user_signup
from tests.generation.conftest import generation_server  # noqa: F401 (fixture)
from tests.training.conftest import base_models  # noqa: F401 (fixture)

PASSWORD = "violet-harbour-lantern-42"
# The first request to a model loads it on the server (CPU in tests): allow for that.
ANSWER_TIMEOUT_MS = 90_000

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])]


@pytest.fixture
def ada():
    return user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")


def _open_playground(log_in, ada):
    page = log_in(ada.user.email, PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Playground").click()
    expect(page.get_by_role("heading", name="Playground", level=1)).to_be_visible()
    return page


def test_a_prompt_streams_its_answer_with_finish_reason_usage_and_verdicts(
        live_server, generation_server, base_models, log_in, ada):  # noqa: F811
    base_models("tiny-gpt2")
    page = _open_playground(log_in, ada)

    page.get_by_label("Model").select_option("tiny-gpt2")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Prompt", exact=True).fill("Where is my parcel?")
    # Counts the output's changes as they come (each delta appends to it).
    page.evaluate("() => { window.outputChanges = 0; new MutationObserver(() => { window.outputChanges += 1; })"
                  ".observe(document.getElementById('pg-output'), {childList: true, characterData: true, subtree: true}); }")
    page.get_by_role("button", name="Send").click()

    output = page.get_by_role("log", name="Output")
    expect(output).to_have_attribute("data-state", "done", timeout=ANSWER_TIMEOUT_MS)
    assert output.text_content() != ""
    assert page.evaluate("() => window.outputChanges") >= 1
    expect(page.get_by_test_id("finish-reason")).to_have_text(re.compile(r"^(stop|length)$"))
    expect(page.get_by_test_id("prompt-verdict")).to_have_text(re.compile(r"^allowed"))
    expect(page.get_by_test_id("output-verdict")).to_have_text(re.compile(r"^allowed"))
    expect(page.get_by_test_id("usage")).to_have_text(re.compile(r"\d+ prompt \+ \d+ completion = \d+ tokens"))
    expect(page.get_by_role("status").filter(has_text="Done")).to_be_visible()
    first = output.text_content()

    # Ctrl+Enter sends again; greedy sampling gives the same answer.
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    expect(output).to_have_attribute("data-state", "done", timeout=ANSWER_TIMEOUT_MS)
    assert output.text_content() == first

    # A parameter out of range is refused before anything is generated, naming the field.
    page.get_by_label("Temperature").fill("9")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert").filter(has_text="temperature")).to_be_visible()
    expect(page.get_by_label("Temperature")).to_have_attribute("aria-invalid", "true")


def test_a_template_shows_its_variables_and_preview_and_fills_the_request(
        live_server, generation_server, base_models, log_in, ada):  # noqa: F811
    base_models("tiny-gpt2")
    prompts.template_create(tenant_id=ada.organization.id, by=ada.user, name="support-reply",
                            values={"template": "Reply about {{ topic }} in a {{ tone }} tone.",
                                    "defaults": {"tone": "friendly"}})
    page = _open_playground(log_in, ada)
    page.get_by_label("Model").select_option("tiny-gpt2")

    page.get_by_label("Prompt template").select_option("support-reply")

    variables = page.get_by_role("group", name="Template variables")
    expect(variables).to_be_visible()
    expect(variables.get_by_label("tone")).to_have_value("friendly")
    expect(variables.get_by_label("topic")).to_have_value("")
    expect(page.get_by_label("System prompt (optional)")).to_be_hidden()
    expect(variables.get_by_text("topic: missing")).to_be_visible()  # the preview names what is missing
    variables.get_by_label("topic").fill("refunds")
    expect(variables.get_by_text("Reply about refunds in a friendly tone.")).to_be_visible()

    page.get_by_label("Max tokens").fill("6")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("log", name="Output")).to_have_attribute("data-state", "done", timeout=ANSWER_TIMEOUT_MS)
    expect(page.get_by_test_id("used-template")).to_have_text("support-reply v1")


def test_an_image_request_on_tiny_sd_shows_the_picture(
        live_server, generation_server, base_models, log_in, ada):  # noqa: F811
    base_models("tiny-sd")
    page = _open_playground(log_in, ada)

    page.get_by_label("Model").select_option("tiny-sd")
    expect(page.get_by_label("Max tokens")).to_be_hidden()
    page.get_by_label("Size").select_option("64x64")
    page.get_by_label("Steps").fill("2")
    page.get_by_label("Prompt", exact=True).fill("a red swatch")
    page.get_by_role("button", name="Generate images").click()

    image = page.get_by_role("group", name="Generated images").get_by_role("img")
    expect(image).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    assert image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [64, 64]
    expect(page.get_by_role("status").filter(has_text="Done")).to_have_text("Done: 1 image from tiny-sd.")
    expect(page.get_by_role("log", name="Output")).to_be_hidden()  # the text parts give way to the pictures
    expect(page.get_by_test_id("prompt-verdict")).to_have_text(re.compile(r"^allowed"))
