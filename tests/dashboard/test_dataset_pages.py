"""Datasets pages through Django's test client: the list and the create form, a dataset with its
versions and the upload form (which posts to the API with the session and its CSRF token), a
version with its figures, report, charts, lineage, row browser, downloads and the operation
launcher; each checked against the role's permissions and against another tenant's ids.

Versions are built here in-process (shards written to the test bucket, then the real
version_build_finish), so the pages are tested without a worker; tests/e2e/test_datasets.py
runs an upload through the real worker."""
from __future__ import annotations

import json
import re
import uuid

import pyarrow as pa
import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection, transaction
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from lode.dashboard.dataset_views import (
    ROWS_PER_PAGE,
    DatasetDetailView,
    DatasetListView,
    VersionDetailView,
    report_parts,
    sample_figures,
    stats_charts,
)
from lode.datasets import services
from lode.datasets.jobs import LENGTH_BINS
from lode.datasets.models import Dataset, DatasetVersion
from lode.datasets.schemas import modality_get
from lode.datasets.shards import ShardWriter
from tenants.models import AuditEvent
from tenants.services import invitation_accept, invitation_create
from tests.conftest import rows
from tests.dashboard.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db


def _member(owner, role: str) -> Client:
    """A signed-in client of a new member of the owner's organization with `role` (their only one)."""
    user = get_user_model().objects.create_user(f"{role}-{uuid.uuid4().hex[:6]}@example.com", PASSWORD)
    sent = invitation_create(tenant_id=owner.organization.id, invited_by=owner.user, email=user.email, role=role)
    invitation_accept(token=sent.token, user=user)
    return client_for(user)


def _html(response) -> str:
    return response.content.decode()


def _json_script(html: str, element_id: str):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no json_script {element_id}"
    return json.loads(match.group(1))


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


# --- Versions built in-process ----------------------------------------------------------------------


def _rows(n: int) -> list[dict]:
    return [{"prompt": f"How do I reset router model R{i}?", "response": f"Hold the reset button for {i % 30 + 5} seconds.",
             "system": None} for i in range(n)]


def _histogram(values: list[str]) -> list[int]:
    counts = [0] * len(LENGTH_BINS)
    for value in values:
        index = max(i for i, low in enumerate(LENGTH_BINS) if len(value) >= low)
        counts[index] += 1
    return counts


def dataset_make(signup, *, name: str = "support", modality: str = "instruction") -> Dataset:
    return services.dataset_create(tenant_id=signup.organization.id, name=name, modality=modality, by=signup.user)


def building_version(signup, dataset: Dataset) -> DatasetVersion:
    """A version as an upload leaves it: building, with its (queued) ingest job."""
    file = SimpleUploadedFile("support.jsonl", b'{"prompt": "a question", "response": "an answer"}\n')
    _, version = services.upload_direct(tenant_id=signup.organization.id, dataset_id=getattr(dataset, "id", dataset),
                                        file=file, by=signup.user)
    return version


def build_finish(signup, version: DatasetVersion, data: list[dict], *, stats: dict | None = None,
                 report: dict | None = None) -> DatasetVersion:
    """Writes the rows as the version's shards and marks it ready, as the ingest job would."""
    tenant_id = signup.organization.id
    modality = modality_get(version.modality)
    writer = ShardWriter(tenant_id=tenant_id, prefix=version.prefix)
    if data:
        writer.write(pa.Table.from_pylist(data, schema=modality.arrow_schema()))
    schema = {"modality": modality.name, "extra_columns": [],
              "fields": [{"name": f.name, "kind": f.kind, "required": f.required} for f in modality.fields]}
    if stats is None:
        stats = {
            "rows": len(data), "length_bins": list(LENGTH_BINS),
            "length_histograms": {name: _histogram([row[name] for row in data]) for name in ("prompt", "response")},
            "labels": {}, "splits": {}, "sample_size": len(data),
            # operations.stats.TextStats.result()'s shape, with figures a test can name
            "sample": {"rows": len(data), "chars": {"total": 4000, "min": 50, "max": 80, "mean": 66.67, "histogram": []},
                       "labels": None,
                       "languages": {"sample_rows": len(data), "shares": {"en": 0.95, "zh": 0.05}, "undetermined": "und"},
                       "pii": {"sample_rows": len(data), "row_rates": {"email": 0.25, "phone": 0.0},
                               "matches": {"email": 15, "phone": 0}},
                       "exact_duplicates": {"rows": 6, "rate": 0.1}, "near_duplicates": None},
        }
    if report is None:
        report = {"format": "jsonl", "encoding": "utf-8", "columns": ["prompt", "response"], "mapping": {},
                  "rows_read": len(data) + 2, "accepted": len(data), "rejected": 2,
                  "rejected_samples": [{"row": 3, "line": 3, "field": "prompt", "reason": "missing"},
                                       {"row": 7, "line": 7, "field": "response", "reason": "must be text, not int"}],
                  "images": 0, "bytes_read": 1234}
    return services.version_build_finish(
        tenant_id=tenant_id, version_id=version.id, row_count=len(data), shard_count=writer.shards,
        size_bytes=writer.bytes, content_hash="ab" * 32, schema=schema, report=report, stats=stats,
    )


def ready_version(signup, data: list[dict] | None = None, *, dataset: Dataset | None = None, **extra) -> DatasetVersion:
    dataset = dataset or dataset_make(signup)
    return build_finish(signup, building_version(signup, dataset), _rows(60) if data is None else data, **extra)


def _versions(signup) -> list[DatasetVersion]:
    return rows(DatasetVersion, signup.organization.id, tenant_id__exact=signup.organization.id)


def _datasets(signup) -> list[Dataset]:
    return rows(Dataset, signup.organization.id, tenant_id__exact=signup.organization.id)


# --- Access ---------------------------------------------------------------------------------------


def _page_urls(version: DatasetVersion) -> list[str]:
    return [reverse("dashboard:datasets"), reverse("dashboard:dataset", kwargs={"dataset_id": version.dataset_id}),
            reverse("dashboard:dataset-version", kwargs={"version_id": version.id})]


def test_anonymous_user_is_sent_to_login(client: Client, ada):
    version = building_version(ada, dataset_make(ada))
    for url in _page_urls(version):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("dashboard:login")), url


@pytest.mark.parametrize("role", ["owner", "admin", "engineer"])
def test_dataset_writers_see_every_page_with_its_forms(ada, role):
    version = ready_version(ada)
    client = client_for(ada.user) if role == "owner" else _member(ada, role)

    pages = [_html(client.get(url)) for url in _page_urls(version)]

    listing, detail, version_page = pages
    for html in pages:
        assert '<a href="/datasets/" aria-current="page">Datasets</a>' in html
    assert 'id="dataset-create-form"' in listing and "support" in listing
    assert 'id="upload-form"' in detail and f'data-upload-url="/api/v1/datasets/{version.dataset_id}/uploads"' in detail
    assert 'id="operation-form"' in version_page and 'id="row-table"' in version_page


@pytest.mark.parametrize("role", ["annotator", "reviewer", "billing"])
def test_roles_without_datasets_get_403_naming_datasets_read_and_no_nav_entry(ada, role):
    version = ready_version(ada)
    client = _member(ada, role)

    for url in _page_urls(version):
        response = client.get(url)
        assert response.status_code == 403, url
        assert 'data-testid="missing-permission">datasets:read<' in _html(response)
        assert "support" not in _html(response)
    refused = client.post(reverse("dashboard:datasets"), {"name": "sneaky", "modality": "text"})
    launched = client.post(reverse("dashboard:dataset-version", kwargs={"version_id": version.id}),
                           {"operation": "dedup_exact", "params": ""})
    assert refused.status_code == 403 and launched.status_code == 403
    assert [d.name for d in _datasets(ada)] == ["support"] and len(_versions(ada)) == 1
    assert 'href="/datasets/"' not in _html(client.get(reverse("dashboard:home")))


def test_the_dataset_page_takes_no_post_uploads_go_to_the_api(ada, ada_client):
    dataset = dataset_make(ada)
    response = ada_client.post(reverse("dashboard:dataset", kwargs={"dataset_id": dataset.id}), {})
    assert response.status_code == 405


# --- List and create --------------------------------------------------------------------------------


def test_the_list_shows_each_datasets_modality_latest_version_and_rows(ada, ada_client):
    first = ready_version(ada, _rows(12))
    building_version(ada, first.dataset_id)  # v2, still building: the latest, without rows yet
    ready_version(ada, _rows(7), dataset=dataset_make(ada, name="chats", modality="instruction"))
    dataset_make(ada, name="empty one", modality="chat")

    html = _html(ada_client.get(reverse("dashboard:datasets")))

    support = re.search(r'<tr data-dataset-id="%s">(.*?)</tr>' % first.dataset_id, html, re.S).group(1)
    assert "v2" in support and "Building" in support and "—" in support
    chats = re.search(r'<tr data-dataset-id="[^"]+">((?:(?!</tr>).)*chats(?:(?!</tr>).)*)</tr>', html, re.S).group(1)
    assert "v1" in chats and "Ready" in chats and ">7<" in chats
    assert "none yet" in html and "<code>chat</code>" in html


def test_the_list_takes_the_same_queries_for_one_dataset_or_many(ada, ada_client):
    ready_version(ada, _rows(3))

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert ada_client.get(reverse("dashboard:datasets")).status_code == 200
        return len(captured)

    one = queries()
    for index in range(4):
        ready_version(ada, _rows(2), dataset=dataset_make(ada, name=f"more {index}"))
    assert queries() == one


def test_the_create_form_creates_the_dataset_and_goes_to_its_page(ada, ada_client):
    response = ada_client.post(reverse("dashboard:datasets"),
                               {"name": "Support tickets", "modality": "chat", "description": "From the help desk."})

    [dataset] = _datasets(ada)
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:dataset", kwargs={"dataset_id": dataset.id})
    assert (dataset.name, dataset.modality, dataset.description) == ("Support tickets", "chat", "From the help desk.")
    assert rows(AuditEvent, ada.organization.id, action="datasets.dataset_created")
    page = ada_client.get(response["Location"])
    assert "Dataset Support tickets created. Upload a file to make its first version." in _messages(page)
    html = _html(page)
    assert 'data-mapping-field="messages"' in html and "No versions yet" in html


@pytest.mark.parametrize("form, field, message", [
    ({"name": "x", "modality": "video"}, "modality", "Select a valid choice."),
    ({"name": "", "modality": "text"}, "name", "This field is required."),
    ({"name": "   ", "modality": "text"}, "name", "This field is required."),
])
def test_a_bad_create_form_shows_the_error_and_writes_nothing(ada, ada_client, form, field, message):
    response = ada_client.post(reverse("dashboard:datasets"), form)

    assert response.status_code == 400
    assert message in response.context["create_form"].errors[field][0]
    assert 'class="field-error"' in _html(response)
    assert _datasets(ada) == []


def test_a_duplicate_name_shows_the_services_error_on_the_field_and_writes_nothing(ada, ada_client):
    dataset_make(ada, name="support")
    audit_before = len(rows(AuditEvent, ada.organization.id, tenant_id__exact=ada.organization.id))

    response = ada_client.post(reverse("dashboard:datasets"), {"name": "support", "modality": "text"})

    assert response.status_code == 409
    assert response.context["create_form"].errors["name"] == ["a dataset named 'support' exists already"]
    assert [d.modality for d in _datasets(ada)] == ["instruction"]
    assert len(rows(AuditEvent, ada.organization.id, tenant_id__exact=ada.organization.id)) == audit_before


# --- A dataset and its upload form ------------------------------------------------------------------


def test_the_dataset_page_lists_versions_and_polls_while_one_builds(ada, ada_client):
    dataset = dataset_make(ada)
    version = building_version(ada, dataset)
    url = reverse("dashboard:dataset", kwargs={"dataset_id": dataset.id})

    html = _html(ada_client.get(url))
    fragment = _html(ada_client.get(url, {"fragment": "versions"}))

    assert 'data-polling="true"' in html and 'hx-trigger="versions-changed from:body, every 2s"' in html
    assert f'data-version-id="{version.id}"' in fragment and "Building" in fragment and "<progress" in fragment
    assert "<html" not in fragment

    build_finish(ada, version, _rows(5))
    fragment = _html(ada_client.get(url, {"fragment": "versions"}))
    assert 'data-polling="false"' in fragment and "every 2s" not in fragment
    assert "Ready" in fragment and ">5<" in fragment


def test_the_upload_form_offers_a_mapping_input_per_schema_field_and_the_formats(ada, ada_client):
    dataset = dataset_make(ada, modality="preference")
    html = _html(ada_client.get(reverse("dashboard:dataset", kwargs={"dataset_id": dataset.id})))

    assert re.findall(r'data-mapping-field="(\w+)"', html) == ["prompt", "chosen", "rejected"]
    assert [option for option in re.findall(r'<option value="(\w*)">', html)] == ["", *services.FORMATS]
    assert 'aria-label="Upload progress"' in html


def test_the_api_takes_the_upload_forms_post_with_the_session_and_its_csrf_token(ada):
    """What the page's script sends: the session cookie, the form's CSRF token as X-CSRFToken."""
    dataset = dataset_make(ada)
    client = Client(enforce_csrf_checks=True)
    client.force_login(ada.user)
    page = _html(client.get(reverse("dashboard:dataset", kwargs={"dataset_id": dataset.id})))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    upload_url = re.search(r'data-upload-url="([^"]+)"', page).group(1)
    content = b'{"prompt": "a question", "response": "an answer"}\n'

    refused = client.post(upload_url, {"file": SimpleUploadedFile("a.jsonl", content)})
    broken = client.post(upload_url, {"file": SimpleUploadedFile("b.jsonl", b"{not json}\n")}, HTTP_X_CSRFTOKEN=token)
    accepted = client.post(upload_url, {"file": SimpleUploadedFile("c.jsonl", content),
                                        "column_mapping": json.dumps({"prompt": "prompt"})}, HTTP_X_CSRFTOKEN=token)

    assert refused.status_code == 403
    assert broken.status_code == 400 and broken.json()["error"]["message"]
    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["number"] == 1 and accepted.json()["status"] == "building"


# --- A version --------------------------------------------------------------------------------------


def _version_url(version) -> str:
    return reverse("dashboard:dataset-version", kwargs={"version_id": version.id})


def test_a_ready_version_shows_its_figures_report_and_downloads(ada, ada_client):
    version = ready_version(ada)

    html = _html(ada_client.get(_version_url(version)))

    assert 'data-testid="version-status">Ready<' in html and 'data-testid="version-rows">60<' in html
    assert "ab" * 32 in html and 'data-polling="false"' in html and "every 2s" not in html
    table = re.search(r'<table class="table" id="rejected-samples">(.*?)</table>', html, re.S).group(1)
    assert "must be text, not int" in table and "<code>response</code>" in table
    assert f'href="/api/v1/dataset-versions/{version.id}/download?format=jsonl"' in html
    assert f'href="/api/v1/dataset-versions/{version.id}/download?format=csv"' in html
    shards = _html(ada_client.get(_version_url(version), {"fragment": "shards"}))
    assert shards.count("<li>") == 1 and "support-v1-00000.parquet" in shards and "X-Amz-Signature" in shards


def test_the_version_page_charts_lengths_per_field_and_the_samples_language_and_pii(ada, ada_client):
    version = ready_version(ada)

    charts = {chart["id"]: chart for chart in _json_script(_html(ada_client.get(_version_url(version))), "version-charts")}

    assert set(charts) == {"length-prompt", "length-response", "languages", "pii"}
    assert sum(charts["length-prompt"]["datasets"][0]["data"]) == 60
    assert charts["length-prompt"]["labels"][:3] == ["0–15", "16–31", "32–63"]
    assert charts["languages"]["labels"] == ["en", "zh"] and charts["languages"]["datasets"][0]["data"] == [0.95, 0.05]
    assert charts["pii"]["labels"] == ["email", "phone"] and charts["pii"]["datasets"][0]["data"] == [0.25, 0.0]
    assert charts["languages"]["percent"] is charts["pii"]["percent"] is True


def test_the_version_page_shows_the_samples_figures(ada, ada_client):
    html = _html(ada_client.get(_version_url(ready_version(ada))))

    assert "a sample of the first 60" in html
    for figure in ("66.67 (50–80)", "6 rows (10.0%)", "email 15"):
        assert figure in html


def test_real_statistics_of_a_sample_chart_and_show(ada, ada_client):
    """The charts read what operations.stats.TextStats really returns."""
    from lode.datasets.operations.stats import TextStats

    data = _rows(30) + [{"prompt": "Mail me at lin@example.com", "response": "Sure.", "system": None}]
    stats = TextStats("instruction")
    stats.update(data)
    sample = stats.result()

    charts = {chart["id"]: chart for chart in stats_charts({"sample": sample})}

    assert "languages" in charts and abs(sum(charts["languages"]["datasets"][0]["data"]) - 1) < 0.01
    assert charts["pii"]["labels"] and max(charts["pii"]["datasets"][0]["data"]) > 0
    version = ready_version(ada, data, stats={"rows": 31, "sample_size": 31, "sample": sample})
    html = _html(ada_client.get(_version_url(version)))
    assert 'id="chart-languages"' in html and "Exact duplicates" in html


def test_labels_and_splits_are_charted_and_odd_or_missing_statistics_are_left_out():
    charts = stats_charts({
        "length_bins": [0, 16], "length_histograms": {"text": [1, 2], "broken": [1]},
        "labels": {"spam": 3, "ham": 9}, "splits": {"test": 1, "train": 8, "validation": 1},
        "sample": {"languages": {"shares": {"de": 0.25, "und": 0.75}, "undetermined": "und"},
                   "pii": {"row_rates": {"email": 0.0, "phone": 0.0}}},
    })
    by_id = {chart["id"]: chart for chart in charts}
    assert list(by_id) == ["length-text", "labels", "splits", "languages"]  # no PII found: no PII chart
    assert by_id["labels"]["labels"] == ["ham", "spam"] and by_id["labels"]["horizontal"] is True
    assert by_id["splits"]["labels"] == ["train", "validation", "test"]
    assert by_id["languages"]["labels"] == ["undetermined", "de"]

    for stats in ({}, None, {"length_bins": "x", "labels": [1], "sample": "no"},
                  {"sample": {"languages": None, "pii": {"row_rates": "x"}}}):
        assert stats_charts(stats) == []
    assert sample_figures({"pii": {"row_rates": {"email": 0.0}, "matches": {"email": 0}}}) == [
        {"name": "PII matches", "value": "none found"}]
    assert sample_figures({"chars": "?", "exact_duplicates": {"rows": "many"}}) == []
    assert report_parts(None)["figures"] == []


def test_the_lineage_links_every_version_down_to_the_upload(ada, ada_client):
    upload = ready_version(ada)
    deduped = services.operation_launch(tenant_id=ada.organization.id, version_id=upload.id, operation="dedup_exact",
                                        by=ada.user)
    deduped = build_finish(ada, deduped, _rows(50), report={"input_rows": 60, "output_rows": 50, "removed": 10})
    split = services.operation_launch(tenant_id=ada.organization.id, version_id=deduped.id, operation="split",
                                      by=ada.user)

    html = _html(ada_client.get(_version_url(split)))
    lineage = re.search(r'<ol class="lineage"[^>]*>(.*?)</ol>', html, re.S).group(1)
    assert re.findall(r'href="/dataset-versions/([0-9a-f-]+)/"', lineage) == [str(split.id), str(deduped.id), str(upload.id)]
    assert lineage.index("Split") < lineage.index("Exact dedup") < lineage.index("Upload")
    assert 'aria-current="page">v3<' in lineage and "support.jsonl" in lineage

    middle = _html(ada_client.get(_version_url(deduped)))
    assert "Made from this version" in middle and f'href="/dataset-versions/{split.id}/"' in middle
    assert "removed" in middle  # the operation's report


def test_the_row_browser_pages_by_offset_and_searches(ada, ada_client):
    version = ready_version(ada)
    url = _version_url(version)

    first = _html(ada_client.get(url))
    second = _html(ada_client.get(url, {"fragment": "rows", "offset": ROWS_PER_PAGE}))
    found = _html(ada_client.get(url, {"fragment": "rows", "q": "model r42?"}))
    nothing = _html(ada_client.get(url, {"fragment": "rows", "q": "no such words"}))
    past = _html(ada_client.get(url, {"fragment": "rows", "offset": "9999"}))
    garbage = _html(ada_client.get(url, {"fragment": "rows", "offset": "minus one"}))

    assert "How do I reset router model R0?" in first and f"R{ROWS_PER_PAGE}?" not in first
    assert "Rows 1–25 of 60" in first and '<th scope="col">prompt</th>' in first
    assert "<html" not in second and "Rows 26–50 of 60" in second
    assert f"router model R{ROWS_PER_PAGE}?" in second and "R0?" not in second
    assert f"offset=0" in second and f"offset={2 * ROWS_PER_PAGE}" in second
    assert "Rows 1–1 of 1 containing" in found and "R42?" in found and "R41?" not in found
    assert "No row contains" in nothing
    assert "No rows past row 9999" in past
    assert "Rows 1–25 of 60" in garbage


def test_the_row_browser_shows_chat_messages_as_lines(ada, ada_client):
    dataset = dataset_make(ada, name="chats", modality="chat")
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    file = SimpleUploadedFile("chats.jsonl", json.dumps(chat).encode() + b"\n")
    _, version = services.upload_direct(tenant_id=ada.organization.id, dataset_id=dataset.id, file=file, by=ada.user)
    build_finish(ada, version, [chat], stats={}, report={})

    html = _html(ada_client.get(_version_url(version), {"fragment": "rows"}))

    assert "user: hi\nassistant: hello" in html


def test_a_building_version_shows_its_jobs_progress_and_polls_until_ready(ada, ada_client):
    version = building_version(ada, dataset_make(ada))
    url = _version_url(version)

    building = _html(ada_client.get(url))
    assert 'data-polling="true"' in building and f'hx-get="{url}?fragment=version-body"' in building
    assert "<progress" in building and 'id="row-table"' not in building and "Operations need a ready version." in building

    build_finish(ada, version, _rows(3))
    body = _html(ada_client.get(url, {"fragment": "version-body"}))
    assert "<html" not in body and 'data-polling="false"' in body and "hx-trigger" not in body.split(">", 1)[0]
    assert 'id="row-table"' in body and 'id="version-charts"' in body


def test_a_failed_version_shows_why(ada, ada_client):
    version = building_version(ada, dataset_make(ada))
    services.version_build_fail(tenant_id=ada.organization.id, version_id=version.id, error="line 3: not JSON")

    html = _html(ada_client.get(_version_url(version)))

    assert 'data-testid="version-status">Failed<' in html and "line 3: not JSON" in html
    assert 'data-polling="false"' in html and 'id="row-table"' not in html


# --- The operation launcher -------------------------------------------------------------------------


def test_launching_an_operation_goes_to_the_new_version_which_shows_its_build(ada, ada_client):
    version = ready_version(ada)

    response = ada_client.post(_version_url(version), {"operation": "filter", "params": '{"min_chars": 20}'})

    [child] = [v for v in _versions(ada) if v.parent_id == version.id]
    assert response.status_code == 302 and response["Location"] == _version_url(child)
    assert (child.number, child.operation, child.status, child.params["min_chars"]) == (2, "filter", "building", 20)
    page = ada_client.get(response["Location"])
    assert "Building version 2 (Filter rows) from version 1." in _messages(page)
    assert 'data-polling="true"' in _html(page) and "<progress" in _html(page)


def test_empty_parameters_take_the_operations_defaults(ada, ada_client):
    version = ready_version(ada)

    response = ada_client.post(_version_url(version), {"operation": "dedup_near", "params": "  "})

    assert response.status_code == 302
    [child] = [v for v in _versions(ada) if v.parent_id == version.id]
    assert child.params == {"fields": ["prompt", "response"], "threshold": 0.8, "num_perm": 128, "ngram": 5}


@pytest.mark.parametrize("form, message", [
    ({"operation": "filter", "params": '{"min_chars": -1}'}, "params.min_chars: a whole number from 0 to 10000000"),
    ({"operation": "filter", "params": "{}"}, "params: give at least one of min_chars, max_chars, languages, pattern"),
    ({"operation": "pii_redact", "params": '{"types": ["ssn"]}'}, "params.types: 'ssn' is not one of"),
    ({"operation": "dedup_exact", "params": '{"colour": "red"}'}, "params.colour: unknown parameter"),
    ({"operation": "split", "params": '{"stratify": true}'}, "params.stratify: a instruction dataset has no labels"),
    ({"operation": "filter", "params": "{min_chars: 3"}, "Not valid JSON"),
    ({"operation": "filter", "params": "[1, 2]"}, "A JSON object"),
])
def test_bad_operation_parameters_show_the_error_and_build_nothing(ada, ada_client, form, message):
    version = ready_version(ada)

    response = ada_client.post(_version_url(version), form)

    assert response.status_code == 400
    [error] = response.context["operation_form"].errors["params"]
    assert message in error
    assert message.replace("'", "&#x27;") in _html(response) and 'id="operation-form"' in _html(response)
    assert [v.id for v in _versions(ada)] == [version.id]


def test_an_unknown_operation_is_refused_by_the_form(ada, ada_client):
    version = ready_version(ada)
    response = ada_client.post(_version_url(version), {"operation": "delete_everything", "params": ""})
    assert response.status_code == 400 and "operation" in response.context["operation_form"].errors
    assert len(_versions(ada)) == 1


def test_an_operation_on_a_version_that_is_not_ready_is_refused(ada, ada_client):
    version = building_version(ada, dataset_make(ada))

    response = ada_client.post(_version_url(version), {"operation": "dedup_exact", "params": ""})

    assert response.status_code == 409
    assert "operations need a ready version" in response.context["operation_form"].non_field_errors()[0]
    assert len(_versions(ada)) == 1


# --- Rendering ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("page, fragment", [
    ("list", None), ("dataset", None), ("dataset", "versions"), ("version", None), ("version", "version-body"),
    ("version", "rows"), ("parent", None),
])
def test_the_pages_render_without_a_query(ada, page, fragment):
    """A TemplateResponse renders after the request's transaction, and with it the tenant context
    row-level security needs, has ended: a lazy query from a template would see no rows (and show
    blanks). Every value the templates show must be loaded by the view."""
    parent = ready_version(ada)
    child = services.operation_launch(tenant_id=ada.organization.id, version_id=parent.id, operation="dedup_exact",
                                      by=ada.user)
    child = build_finish(ada, child, _rows(40), report={"removed": 20})
    building_version(ada, parent.dataset_id)
    view, kwargs = {
        "list": (DatasetListView, {}),
        "dataset": (DatasetDetailView, {"dataset_id": parent.dataset_id}),
        "version": (VersionDetailView, {"version_id": child.id}),
        "parent": (VersionDetailView, {"version_id": parent.id}),
    }[page]
    request = RequestFactory().get("/", {"fragment": fragment} if fragment else {})
    request.user = ada.user
    request.session = SessionStore()
    request._messages = FallbackStorage(request)

    with transaction.atomic():
        response = view.as_view()(request, **kwargs)
    with CaptureQueriesContext(connection) as captured:
        response.render()

    assert response.status_code == 200
    assert [query["sql"] for query in captured.captured_queries] == []
    if page == "version" and fragment is None:
        assert f'>v{parent.number}</a>' in response.content.decode()


# --- Another tenant's ids ---------------------------------------------------------------------------


def test_another_tenants_dataset_and_version_are_404_like_missing_ones(ada, grace):
    version = ready_version(ada)
    graces = client_for(grace.user)
    mine = _page_urls(version)[1:]
    missing = [reverse("dashboard:dataset", kwargs={"dataset_id": uuid.uuid4()}),
               reverse("dashboard:dataset-version", kwargs={"version_id": uuid.uuid4()})]

    answers = [graces.get(url) for url in mine] + [
        graces.get(mine[1], {"fragment": "rows"}), graces.get(mine[1], {"fragment": "shards"}),
        graces.get(mine[0], {"fragment": "versions"}),
        graces.post(mine[1], {"operation": "dedup_exact", "params": ""}),
    ]
    for response in answers:
        assert response.status_code == 404, response.request
        assert "support" not in _html(response) and "How do I reset" not in _html(response)
    assert [graces.get(url).status_code for url in missing] == [404, 404]
    assert len(_versions(ada)) == 1
    assert "support" not in _html(graces.get(reverse("dashboard:datasets")))
