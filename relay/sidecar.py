"""The HTTP sidecar: health, readiness and Prometheus metrics for orchestrators and scrapers.

A Quart-Trio app served by Hypercorn inside the root nursery, reading the live
:class:`~relay.health.RelayHealth` and :class:`~relay.metrics.Metrics`:

- ``GET /health``: JSON with overall status, per-venue state, NATS state and publish backlog;
  200 when every venue streams and NATS is ready, 503 otherwise. Every string in it passes
  the :mod:`relay.redact` redactor: error texts from nats-py, httpx or a venue can carry a
  URL with credentials.
- ``GET /livez``: 200 while the process serves requests.
- ``GET /readyz``: 200 once NATS is connected and the streams are provisioned, else 503.
- ``GET /metrics``: Prometheus text exposition.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response
from quart_trio import QuartTrio

from relay import redact
from relay.health import RelayHealth
from relay.metrics import Metrics


def make_app(
    health: RelayHealth, metrics: Metrics, redactor: redact.Redactor | None = None
) -> QuartTrio:
    """The sidecar app; ``redactor`` defaults to the one installed at request time."""
    app = QuartTrio("relay")

    @app.get("/health")
    async def health_view() -> tuple[dict[str, object], int]:
        document = (redactor or redact.active()).redact_value(health.as_dict())
        return document, 200 if health.healthy() else 503

    @app.get("/livez")
    async def livez() -> tuple[dict[str, object], int]:
        return {"status": "alive"}, 200

    @app.get("/readyz")
    async def readyz() -> tuple[dict[str, object], int]:
        ready = health.ready()
        return {"ready": ready}, 200 if ready else 503

    @app.get("/metrics")
    async def metrics_view() -> Response:
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    return app


async def serve_sidecar(
    health: RelayHealth,
    metrics: Metrics,
    bind: str,
    port: int,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the bound URLs."""
    await serve_app(make_app(health, metrics), bind, port, task_status=task_status)


async def serve_app(
    app: QuartTrio,
    bind: str,
    port: int,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` (this sidecar's, or :mod:`relay.workers`' aggregating one) until
    cancelled; ``task_status.started`` gets the bound URLs."""
    config = HypercornConfig()
    config.bind = [f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("relay.sidecar")
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]
