"""Paging of the dashboard's lists: one page of rows, and the query string
that page links carry so the filters survive a change of page."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Page, Paginator
from django.http import HttpRequest


def page_get(rows: Any, *, per_page: int, number: Any) -> Page[Any]:
    """Page ``number`` of ``rows`` (a query set or a list); a number that
    is missing or not a number gives the first page, one past the end the
    last."""
    return Paginator(rows, per_page).get_page(number)


def query_without(request: HttpRequest, *names: str) -> str:
    """The request's query string without ``names`` (by default
    ``page``), for links that set them again."""
    query = request.GET.copy()
    for name in names or ("page",):
        query.pop(name, None)
    return query.urlencode()
