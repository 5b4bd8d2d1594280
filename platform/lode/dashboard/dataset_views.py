"""Dashboard datasets pages: the tenant's datasets and the create form; a dataset with its versions
and the upload form (the browser sends the file straight to the API, with upload progress, and the
versions table follows the build); a version with its figures, report, statistics charts, lineage,
row browser, downloads and the operation launcher.

Reads go through lode.datasets.selectors, writes through lode.datasets.services; the page only
shapes plain values for its templates. Reading needs datasets:read, changing datasets:write
(tenants.permissions: owners, admins and engineers have both)."""
from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Max
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from lode.core import artifacts
from lode.core.errors import LodeError, NotFound
from lode.core.jobs.selectors import job_get
from lode.datasets import selectors, services
from lode.datasets.operations_spec import KNOWN as OPERATION_PARAMS
from lode.datasets.schemas import MODALITIES, modality_get
from lode.datasets.shards import shard_key
from tenants.db_context import tenant_atomic

from .forms import JsonObjectField, form_error_from
from .views import TenantFormPageView

DATASETS_SHOWN = 200
VERSIONS_SHOWN = 200
ROWS_PER_PAGE = 25
ROW_CELL_CHARS = 400
SEARCH_MAX_CHARS = 200
LABELS_CHARTED = 30
REJECTED_SHOWN = 50
BUILDING = "building"
READY = "ready"

OPERATION_LABELS = {
    "normalise": "Normalise text",
    "filter": "Filter rows",
    "dedup_exact": "Exact dedup",
    "dedup_near": "Near-duplicate removal",
    "pii_redact": "PII redaction",
    "split": "Split train / validation / test",
    "augment": "Augment",
}
# What the launcher's parameters box starts with for each operation (all optional but filter's).
OPERATION_EXAMPLES: dict[str, dict[str, Any]] = {
    "normalise": {"nfkc": True, "whitespace": True, "control": True, "chinese": None},
    "filter": {"min_chars": 10, "max_chars": 20000},
    "dedup_exact": {},
    "dedup_near": {"threshold": 0.8, "num_perm": 128, "ngram": 5},
    "pii_redact": {"mode": "redact"},
    "split": {"ratios": [0.8, 0.1, 0.1], "seed": 0},
    "augment": {"copies": 1, "seed": 0},
}


# --- Forms (input shapes only; the services do the real checks) --------------------------------


class DatasetCreateForm(forms.Form):
    name = forms.CharField(label="Name", max_length=200)
    modality = forms.ChoiceField(
        label="Modality", choices=[(name, f"{name} — {modality.description}") for name, modality in MODALITIES.items()],
    )
    description = forms.CharField(label="Description (optional)", required=False, max_length=5000,
                                  widget=forms.Textarea(attrs={"rows": 2}))


class OperationForm(forms.Form):
    operation = forms.ChoiceField(label="Operation",
                                  choices=[(name, OPERATION_LABELS.get(name, name)) for name in OPERATION_PARAMS])
    params = JsonObjectField(
        example='{"min_chars": 10}', label="Parameters (JSON)", required=False, widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}),
        help_text="A JSON object; leave empty for the operation's defaults.",
    )


def _operation_error(form: OperationForm, exc: LodeError) -> None:
    """The service names a parameter as `params.<name>`: the message stays whole under the
    parameters box, so the person sees which one."""
    field = (exc.details or {}).get("field") if isinstance(exc.details, dict) else None
    if isinstance(field, str) and field.startswith("params"):
        form.add_error("params", exc.message)
    else:
        form_error_from(form, exc)


# --- Plain values for the pages --------------------------------------------------------------------


def dataset_rows(*, tenant_id: UUID | str, limit: int = DATASETS_SHOWN) -> list[dict[str, Any]]:
    """The tenant's datasets, newest first, each with its version count and latest version (two
    queries, whatever the number of datasets)."""
    with tenant_atomic(tenant_id):
        datasets = list(
            selectors.dataset_list(tenant_id=tenant_id)
            .annotate(version_count=Count("versions"), latest_number=Max("versions__number"))
            .order_by("-created_at", "-id")[:limit]
        )
        wanted = {(dataset.id, dataset.latest_number) for dataset in datasets if dataset.latest_number}
        latest: dict[UUID, dict[str, Any]] = {}
        if wanted:
            found = (selectors.dataset_list(tenant_id=tenant_id)
                     .filter(id__in={dataset_id for dataset_id, _ in wanted},
                             versions__number__in={number for _, number in wanted})
                     .values("id", "versions__id", "versions__number", "versions__status", "versions__row_count"))
            latest = {row["id"]: row for row in found if (row["id"], row["versions__number"]) in wanted}
    rows = []
    for dataset in datasets:
        version = latest.get(dataset.id)
        rows.append({
            "dataset": dataset,
            "version_count": dataset.version_count,
            "latest": None if version is None else {
                "id": version["versions__id"], "number": version["versions__number"],
                "status": version["versions__status"], "row_count": version["versions__row_count"],
            },
        })
    return rows


def _dataset_get(tenant_id: UUID | str, dataset_id: UUID | str):
    """The tenant's dataset, or a 404 that reads the same for another tenant's and a missing one."""
    with tenant_atomic(tenant_id):
        dataset = selectors.dataset_list(tenant_id=tenant_id).filter(id=dataset_id).first()
    if dataset is None:
        raise Http404("Dataset not found.")
    return dataset


def _version_get(tenant_id: UUID | str, version_id: UUID | str):
    try:
        return selectors.version_get(tenant_id=tenant_id, version_id=version_id)
    except NotFound:
        raise Http404("Version not found.") from None


def _dataset_versions(tenant_id: UUID | str, dataset) -> list:
    with tenant_atomic(tenant_id):
        return list(dataset.versions.select_related("job", "parent").order_by("-number")[:VERSIONS_SHOWN])


def _length_bin_labels(bins: list) -> list[str]:
    labels = []
    for index, low in enumerate(bins):
        if index + 1 < len(bins):
            labels.append(f"{low}–{bins[index + 1] - 1}")
        else:
            labels.append(f"{low}+")
    return labels


def _numbers(mapping: Any) -> dict[str, float]:
    """A {name: number} mapping's numeric entries (booleans and everything else left out)."""
    if not isinstance(mapping, dict):
        return {}
    return {str(key): value for key, value in mapping.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sample_languages(sample: dict) -> dict[str, float]:
    """Shares of the sampled rows per language (operations.stats.TextStats: {"languages":
    {"sample_rows", "shares": {code: share}, "undetermined": code}}), the undetermined named so."""
    languages = sample.get("languages")
    if not isinstance(languages, dict):
        return {}
    undetermined = languages.get("undetermined")
    return {("undetermined" if code == undetermined else code): share
            for code, share in _numbers(languages.get("shares")).items()}


def _sample_pii(sample: dict) -> tuple[dict[str, float], dict[str, float]]:
    """Per PII type: the share of sampled rows with a match, and the number of matches."""
    pii = sample.get("pii")
    if not isinstance(pii, dict):
        return {}, {}
    return _numbers(pii.get("row_rates")), _numbers(pii.get("matches"))


def _sample_size(sample: dict) -> int | None:
    """How many rows the language mix and PII rates looked at."""
    for key in ("languages", "pii"):
        part = sample.get(key)
        if isinstance(part, dict) and _is_number(part.get("sample_rows")):
            return int(part["sample_rows"])
    return None


def _share(value: Any) -> str:
    return f"{value * 100:.1f}%" if _is_number(value) else ""


def sample_figures(sample: dict) -> list[dict[str, str]]:
    """What the sample says beyond the charts: text length, duplicates, PII matches."""
    if not isinstance(sample, dict):
        return []
    figures = []
    chars = sample.get("chars")
    if isinstance(chars, dict) and _is_number(chars.get("mean")):
        span = f" ({chars['min']}–{chars['max']})" if _is_number(chars.get("min")) and _is_number(chars.get("max")) else ""
        figures.append({"name": "Mean length (characters)", "value": f"{chars['mean']}{span}"})
    for key, name in (("exact_duplicates", "Exact duplicates"), ("near_duplicates", "Near duplicates")):
        part = sample.get(key)
        if isinstance(part, dict) and _is_number(part.get("rows")):
            rate = f" ({_share(part.get('rate'))})" if _is_number(part.get("rate")) else ""
            figures.append({"name": name, "value": f"{part['rows']} rows{rate}"})
    rates, matches = _sample_pii(sample)
    if rates or matches:
        found = [f"{kind} {count:g}" for kind, count in matches.items() if count]
        figures.append({"name": "PII matches", "value": ", ".join(found) if found else "none found"})
    return figures


def stats_charts(stats: dict) -> list[dict[str, Any]]:
    """Chart.js specs for a version's statistics (jobs.VersionStats.result()): one length
    histogram per text field, the label distribution, the splits, and from the sample the
    language mix and PII per type. Missing or malformed parts are left out, not an error."""
    if not isinstance(stats, dict):
        return []
    charts: list[dict[str, Any]] = []
    bins = stats.get("length_bins")
    histograms = stats.get("length_histograms")
    if isinstance(bins, list) and bins and isinstance(histograms, dict):
        labels = _length_bin_labels(bins)
        for field, counts in histograms.items():
            if not isinstance(counts, list) or len(counts) != len(labels) or not any(counts):
                continue
            charts.append({"id": f"length-{field}", "title": f"Length of {field}", "type": "bar", "labels": labels,
                           "datasets": [{"label": "rows", "data": counts}],
                           "x_title": "characters", "y_title": "rows"})
    labels = _numbers(stats.get("labels"))
    if labels:
        top = sorted(labels.items(), key=lambda item: -item[1])[:LABELS_CHARTED]
        more = f" (top {LABELS_CHARTED} of {len(labels)})" if len(labels) > LABELS_CHARTED else ""
        charts.append({"id": "labels", "title": f"Labels{more}", "type": "bar", "horizontal": True,
                       "labels": [name for name, _ in top],
                       "datasets": [{"label": "rows", "data": [count for _, count in top]}],
                       "x_title": "rows", "y_title": ""})
    splits = _numbers(stats.get("splits"))
    if splits:
        order = sorted(splits, key=lambda name: (["train", "validation", "test"] + [name]).index(name))
        charts.append({"id": "splits", "title": "Splits", "type": "doughnut", "labels": order,
                       "datasets": [{"label": "rows", "data": [splits[name] for name in order]}]})
    sample = stats.get("sample")
    if isinstance(sample, dict):
        languages = _sample_languages(sample)
        if languages:
            top = sorted(languages.items(), key=lambda item: -item[1])[:LABELS_CHARTED]
            charts.append({"id": "languages", "title": "Language mix (sample)", "type": "bar", "horizontal": True,
                           "percent": True, "labels": [name for name, _ in top],
                           "datasets": [{"label": "share of rows", "data": [share for _, share in top]}],
                           "x_title": "share of sampled rows", "y_title": ""})
        rates, _ = _sample_pii(sample)
        if any(rates.values()):
            charts.append({"id": "pii", "title": "Rows with PII, per type (sample)", "type": "bar", "percent": True,
                           "labels": list(rates), "datasets": [{"label": "share of rows", "data": list(rates.values())}],
                           "x_title": "", "y_title": "share of sampled rows"})
    return charts


def report_parts(report: dict) -> dict[str, Any]:
    """A version's report for the page: scalar figures, {name: count} maps (removed by reason,
    PII hits, splits), rejected samples, near-duplicate cluster examples, and the rest as JSON."""
    if not isinstance(report, dict):
        return {"figures": [], "maps": [], "rejected": [], "clusters": [], "rest": {}, "error": ""}
    figures, maps, rest = [], [], {}
    for key, value in report.items():
        if key in ("rejected_samples", "cluster_examples", "error"):
            continue
        name = key.replace("_", " ")
        if value in ({}, []):
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            figures.append({"name": name, "value": value})
        elif isinstance(value, dict) and all(item is None or isinstance(item, (int, float, str)) for item in value.values()):
            numeric = len(_numbers(value)) == len(value)  # counts, largest first; else as given (a mapping)
            items = sorted(value.items(), key=lambda item: -item[1]) if numeric else list(value.items())
            maps.append({"name": name, "items": items})
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            figures.append({"name": name, "value": ", ".join(value) or "—"})
        else:
            rest[key] = value
    rejected = report.get("rejected_samples") if isinstance(report.get("rejected_samples"), list) else []
    clusters = report.get("cluster_examples") if isinstance(report.get("cluster_examples"), list) else []
    return {
        "figures": figures,
        "maps": maps,
        "rejected": [item for item in rejected if isinstance(item, dict)][:REJECTED_SHOWN],
        "clusters": [cluster for cluster in clusters if isinstance(cluster, list)],
        "rest": rest,
        "error": report.get("error") if isinstance(report.get("error"), str) else "",
    }


def _cell(value: Any) -> str:
    """One row value as text for the browser: chat messages as "role: content" lines, labels
    joined, anything long cut."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(item, dict) and "content" in item for item in value):
        text = "\n".join(f"{item.get('role', '?')}: {item.get('content') or ''}" for item in value)
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        text = ", ".join(value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= ROW_CELL_CHARS else text[:ROW_CELL_CHARS] + "…"


def _columns(version, rows: list[dict]) -> list[str]:
    schema = version.schema if isinstance(version.schema, dict) else {}
    columns = [field["name"] for field in schema.get("fields", []) if isinstance(field, dict) and "name" in field]
    columns += [name for name in schema.get("extra_columns", []) if isinstance(name, str) and name not in columns]
    for row in rows:  # a column the schema does not name still shows
        columns += [name for name in row if name not in columns]
    return columns


def _offset(value: str | None) -> int:
    try:
        return max(0, min(int(value or 0), 10**10))
    except ValueError:
        return 0


def row_page(*, tenant_id: UUID | str, version, offset: int, query: str) -> dict[str, Any]:
    """A page of the version's rows, as cells, with the offsets of the pages around it."""
    found = selectors.version_rows(tenant_id=tenant_id, version_id=version.id, offset=offset, limit=ROWS_PER_PAGE,
                                   query=query)
    rows = found["rows"]
    columns = _columns(version, rows)
    count = found["count"]
    return {
        "columns": columns,
        "rows": [{"number": offset + index + 1, "cells": [_cell(row.get(name)) for name in columns]}
                 for index, row in enumerate(rows)],
        "count": count,
        "offset": offset,
        "first": offset + 1 if rows else 0,
        "last": offset + len(rows),
        "previous": max(0, offset - ROWS_PER_PAGE) if offset > 0 else None,
        "next": offset + ROWS_PER_PAGE if offset + ROWS_PER_PAGE < count else None,
        "query": query,
    }


def shard_links(*, tenant_id: UUID | str, version) -> list[dict[str, str]]:
    """Short-lived links to the version's Parquet shards (what the API's ?format=parquet gives)."""
    base = f"{version.dataset.name}-v{version.number}".replace('"', "")
    links = []
    for index in range(version.shard_count):
        name = f"{base}-{index:05d}.parquet"
        links.append({"name": name, "url": artifacts.presigned_get_url(
            tenant_id=tenant_id, key=shard_key(version.prefix, index), expires_in=settings.S3_PRESIGN_TTL_SECONDS,
            filename=name)})
    return links


# --- Pages ----------------------------------------------------------------------------------------


class DatasetPageView(TenantFormPageView):
    nav_active = "datasets"
    read_permission = "datasets:read"
    write_permission = "datasets:write"
    manage_permission = "datasets:write"


class DatasetListView(DatasetPageView):
    """The tenant's datasets and, for writers, the form that creates one (it posts here)."""

    template_name = "dashboard/datasets/list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(datasets=dataset_rows(tenant_id=self.tenant.id), limit=DATASETS_SHOWN)
        context.setdefault("create_form", DatasetCreateForm())
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = DatasetCreateForm(request.POST)
        status = 400
        if form.is_valid():
            try:
                dataset = services.dataset_create(tenant_id=self.tenant.id, by=self.access.user, **form.cleaned_data)
            except LodeError as exc:
                form_error_from(form, exc)
                status = exc.http_status
            else:
                messages.success(request, f"Dataset {dataset.name} created. Upload a file to make its first version.")
                return redirect("dashboard:dataset", dataset_id=dataset.id)
        return self.render_invalid(status, create_form=form)


class DatasetDetailView(DatasetPageView):
    """A dataset, its versions (re-fetched every 2 s while one is building) and the upload form.
    The file goes from the browser to the API (POST /api/v1/datasets/<id>/uploads, the session
    and its CSRF token), so this page takes no POST itself."""

    template_name = "dashboard/datasets/detail.html"
    fragments = {"versions": "dashboard/datasets/_versions_table.html"}
    write_permission = None  # uploads go to the API; a POST here is refused

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        dataset = _dataset_get(self.tenant.id, kwargs["dataset_id"])
        versions = _dataset_versions(self.tenant.id, dataset)
        modality = modality_get(dataset.modality)
        context.update(
            dataset=dataset,
            modality=modality,
            versions=versions,
            versions_active=any(version.status == BUILDING for version in versions),
            upload_url=reverse("datasets:upload-create", kwargs={"dataset_id": dataset.id}),
            formats=services.FORMATS,
            max_upload_bytes=settings.DATASET_UPLOAD_MAX_BYTES,
        )
        return context


class VersionDetailView(DatasetPageView):
    """One version: while it builds, its job's progress (the page body re-fetches itself every
    2 s and shows everything once it is ready); then figures, report, charts, lineage, rows,
    downloads, and the operation launcher, which posts here and goes to the new version's page."""

    template_name = "dashboard/datasets/version.html"
    fragments = {
        "version-body": "dashboard/datasets/_version_body.html",
        "rows": "dashboard/datasets/_rows.html",
        "shards": "dashboard/datasets/_shards.html",
    }

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant_id = self.tenant.id
        version = kwargs.get("version") or _version_get(tenant_id, kwargs["version_id"])
        is_ready = version.status == READY
        context.update(version=version, is_ready=is_ready, is_building=version.status == BUILDING)
        fragment = self.request.GET.get("fragment")
        if fragment == "shards":
            context["shards"] = shard_links(tenant_id=tenant_id, version=version) if is_ready else []
            return context
        if is_ready:
            context["rows_page"] = row_page(tenant_id=tenant_id, version=version,
                                            offset=_offset(self.request.GET.get("offset")),
                                            query=self.request.GET.get("q", "")[:SEARCH_MAX_CHARS])
        if fragment == "rows":
            return context
        job = None
        if version.job_id:
            try:
                job = job_get(tenant_id=tenant_id, job_id=version.job_id)
            except NotFound:
                job = None
        with tenant_atomic(tenant_id):
            children = list(version.children.order_by("number"))
        stats = version.stats if isinstance(version.stats, dict) else {}
        sample = stats.get("sample") if isinstance(stats.get("sample"), dict) else {}
        lineage = selectors.version_lineage(tenant_id=tenant_id, version_id=version.id)
        # Everything the templates show is loaded here: a TemplateResponse renders after the
        # request's transaction (and its tenant context) has ended, where a lazy query sees nothing.
        context.update(
            dataset=version.dataset,
            job=job,
            lineage=lineage,
            parent=lineage[1] if len(lineage) > 1 else None,
            children=children,
            report=report_parts(version.report),
            charts=stats_charts(stats),
            sample_figures=sample_figures(sample),
            sample_size=_sample_size(sample),
            download_url=reverse("datasets:version-download", kwargs={"version_id": version.id}),
            operation_examples=OPERATION_EXAMPLES,
            operation_params=[{"name": name, "label": OPERATION_LABELS.get(name, name), "params": sorted(params)}
                              for name, params in OPERATION_PARAMS.items()],
            text_fields=modality_get(version.modality).text_fields,
        )
        context.setdefault("operation_form", OperationForm(initial={
            "operation": "normalise", "params": json.dumps(OPERATION_EXAMPLES["normalise"], separators=(",", ":"))}))
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # The version first: another tenant's or a missing one is a 404 whatever the form says.
        version = _version_get(self.tenant.id, kwargs["version_id"])
        form = OperationForm(request.POST)
        status = 400
        if form.is_valid():
            try:
                child = services.operation_launch(
                    tenant_id=self.tenant.id, version_id=version.id, operation=form.cleaned_data["operation"],
                    params=form.cleaned_data["params"], by=self.access.user,
                )
            except LodeError as exc:
                _operation_error(form, exc)
                status = exc.http_status
            else:
                label = OPERATION_LABELS.get(child.operation, child.operation)
                messages.success(request, f"Building version {child.number} ({label}) from version {version.number}.")
                return redirect("dashboard:dataset-version", version_id=child.id)
        return self.render_invalid(status, operation_form=form, version=version)
