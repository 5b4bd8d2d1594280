"""Cursor pagination for every list: newest first, stable under concurrent inserts."""
from rest_framework.pagination import CursorPagination


class CreatedCursorPagination(CursorPagination):
    # created_at carries microseconds; DRF's cursor breaks remaining ties with an offset.
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class SequenceCursorPagination(CursorPagination):
    """Oldest first by id: for event streams a client follows as they grow."""

    ordering = ("id",)
    page_size = 200
    page_size_query_param = "page_size"
    max_page_size = 1000
