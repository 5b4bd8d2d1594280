"""Errors of the OpenAI-compatible API (/v1/) in OpenAI's shape:
{"error": {"message", "type", "param", "code"}}, with Lode's HTTP status. Services keep raising
lode.core.errors; only this app's views render them this way (the rest of /api/v1 keeps Lode's
shape). `param` is the request field the error names (details.field), in OpenAI's terms."""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from lode.core.errors import LodeError

logger = logging.getLogger(__name__)

# OpenAI's error types by HTTP status (its clients pick the exception class by status alone).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(*, status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                      "param": param, "code": code}}


def _first_field_error(detail: Any, prefix: str = "") -> tuple[str | None, str]:
    """(the field path, its first message) of a DRF ValidationError's detail."""
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        path = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
        return _first_field_error(value, path)
    if isinstance(detail, list) and detail:
        return _first_field_error(detail[0], prefix)
    return (prefix or None), str(detail)


def openai_exception_handler(exc: Exception, context: dict) -> Response | None:
    """The EXCEPTION_HANDLER of this app's views: every error in OpenAI's shape. An unexpected
    exception is logged and answered 500 (still in that shape)."""
    set_rollback()  # ATOMIC_REQUESTS: an answered error must not commit what the request wrote
    headers: dict[str, str] = {}
    if isinstance(exc, LodeError):
        field = exc.details.get("field") if isinstance(exc.details, dict) else None
        body = openai_error_body(status=exc.http_status, message=exc.message, code=exc.code, param=field)
        return Response(body, status=exc.http_status)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        request = context.get("request")
        logger.exception("unhandled error on %s %s", getattr(request, "method", "?"), getattr(request, "path", "?"))
        body = openai_error_body(status=500, message="An internal error occurred.", code="server_error")
        return Response(body, status=500)
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    param = None
    if isinstance(exc, drf_exceptions.ValidationError):
        param, message = _first_field_error(exc.detail)
        message = f"{param}: {message}" if param else message
        code = "invalid"
    else:
        message = str(exc.detail)
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
    if exc.status_code == 401:
        code = "invalid_api_key"
    return Response(openai_error_body(status=exc.status_code, message=message, code=code, param=param),
                    status=exc.status_code, headers=headers)


@method_decorator(csrf_exempt, name="dispatch")
class RouteNotFoundView(View):
    """Any path under /v1/ that is no route: 404 in OpenAI's shape, whatever the verb. It reads
    nothing, so it needs no authentication."""

    def _not_found(self, request, *args, **kwargs) -> JsonResponse:
        return JsonResponse(openai_error_body(status=404, message=f"Unknown request URL: {request.method} {request.path}",
                                              code="unknown_url"), status=404)

    get = post = put = patch = delete = head = options = _not_found
