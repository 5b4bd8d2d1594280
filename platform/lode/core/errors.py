"""Domain errors and the one place that renders them: every 4xx/5xx body from the API is
{"error": {"code", "message", "details"}}. Services raise LodeError subclasses; views never build
error responses by hand."""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class LodeError(Exception):
    code = "error"
    http_status = status.HTTP_400_BAD_REQUEST
    default_message = "The request failed."

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        self.message = message or self.default_message
        self.details = details or {}
        super().__init__(self.message)


class ValidationFailed(LodeError):
    code = "invalid"
    http_status = status.HTTP_400_BAD_REQUEST
    default_message = "The request is not valid."


class NotFound(LodeError):
    code = "not_found"
    http_status = status.HTTP_404_NOT_FOUND
    default_message = "Not found."


class PermissionDenied(LodeError):
    code = "permission_denied"
    http_status = status.HTTP_403_FORBIDDEN
    default_message = "You do not have permission to do this."


class Conflict(LodeError):
    code = "conflict"
    http_status = status.HTTP_409_CONFLICT
    default_message = "The request conflicts with the current state."


class PayloadTooLarge(LodeError):
    code = "payload_too_large"
    http_status = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_message = "The upload is too large."


class ServiceUnavailable(LodeError):
    code = "unavailable"
    http_status = status.HTTP_503_SERVICE_UNAVAILABLE
    default_message = "A service the platform depends on is unavailable."


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


def _drf_code(exc: drf_exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return getattr(exc, "default_code", "error")


def _first_message(detail: Any) -> str | None:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        inner = _first_message(value)
        return f"{key}: {inner}" if inner and key != "non_field_errors" else inner
    if isinstance(detail, str):
        return detail
    return None


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's EXCEPTION_HANDLER."""
    if isinstance(exc, LodeError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # unexpected: ApiErrorMiddleware logs it and renders a 500 body

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, drf_exceptions.ValidationError):
        code = "invalid"
        message = _first_message(exc.detail) or "The request is not valid."
        details: Any = {"fields": exc.detail} if isinstance(exc.detail, dict) else {"errors": exc.detail}
    else:
        code = _drf_code(exc)
        message = str(exc.detail)
        details = {}
    return Response(error_body(code, message, details), status=exc.status_code, headers=headers)


def _is_api_path(path: str) -> bool:
    return path.startswith("/api/") or path.startswith("/v1/")


class ApiErrorMiddleware:
    """Renders unhandled exceptions and Django's own 404s under the API prefixes as the error body,
    so API clients never get an HTML page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if _is_api_path(request.path) and response.status_code == 404 and not _is_json(response):
            return JsonResponse(error_body("not_found", f"No API route {request.path}"), status=404)
        return response

    def process_exception(self, request, exception):
        if not _is_api_path(request.path):
            return None
        if isinstance(exception, LodeError):
            return JsonResponse(error_body(exception.code, exception.message, exception.details), status=exception.http_status)
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return JsonResponse(
            error_body("server_error", "An internal error occurred.", {"request_id": getattr(request, "request_id", None)}),
            status=500,
        )


def _is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json")
