"""Who may read /readyz and /metrics: the monitoring token or an allowed
address (loopback by default); /healthz answers anyone."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-monitoring-token"


def test_readyz_and_metrics_refuse_strangers_and_answer_the_token_or_loopback(settings):
    """From an outside address, without the token, /readyz and /metrics say
    nothing of workers, versions or internals; the token or a loopback
    address opens them; /healthz stays public."""
    settings.MONITORING_TOKEN = TOKEN
    stranger = Client(REMOTE_ADDR="203.0.113.5")

    assert stranger.get("/healthz").status_code == 200
    for path in ("/readyz", "/metrics"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = stranger.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert b"worker" not in response.content
            assert b"database" not in response.content

    with_token = stranger.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert "checks" in with_token.json()
    metrics = stranger.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metrics.status_code == 200
    assert b"inference_workers" in metrics.content

    assert "checks" in Client(REMOTE_ADDR="127.0.0.1").get("/readyz").json()
    assert "checks" in Client(REMOTE_ADDR="::1").get("/readyz").json()

    settings.MONITORING_ALLOWED_IPS = ["203.0.113.0/24"]
    assert "checks" in stranger.get("/readyz").json()
