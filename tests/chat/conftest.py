"""Fixtures shared by the chat tests."""

from __future__ import annotations

import json

import pytest

from inference.connection import requests_stream_key


@pytest.fixture
def queued(redis_conn):
    """The generation requests queued in Redis by the test, oldest first."""
    redis_conn.delete(requests_stream_key())

    def read() -> list[dict]:
        entries = redis_conn.xrange(requests_stream_key(), "-", "+")
        return [json.loads(fields["payload"]) for _id, fields in entries]

    return read
