"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from hub.api import (
    admin,
    auth,
    case_operations,
    dicomweb,
    fhir_rest,
    health,
    imaging,
    metrics,
    opinions,
    records,
    turnaround,
    validate,
)
from hub.api.deps import HubState
from hub.api.errors import install_error_handlers
from hub.api.middleware import install_middleware
from hub.runtime import lifespan
from hub.security.rate_limit import RateLimiter
from hub.security.tokens import TokenAuthenticator
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.web.routes import install_pages
from hub.workflow.routing import use_routing_file


def create_app(settings: Settings | None = None) -> FastAPI:
    """The hub's ASGI app on the database `settings` name (schema must be migrated)."""
    settings = settings or Settings()
    use_routing_file(settings.routing_file)
    engine = make_engine(settings.database_url)
    app = FastAPI(
        title="Second-opinion integration hub",
        summary="FHIR R4 hub for pediatric cancer second opinions",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.hub = HubState(
        settings=settings,
        sessions=make_session_factory(engine),
        authenticator=TokenAuthenticator(settings),
        rate_limiter=RateLimiter(settings.rate_limit_per_minute),
    )
    install_error_handlers(app)
    install_middleware(app, settings.cors_origins)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(fhir_rest.public)
    app.include_router(case_operations.router)
    app.include_router(opinions.router)
    app.include_router(validate.router)  # before fhir_rest: `$validate` is no resource id
    app.include_router(turnaround.router)
    app.include_router(metrics.router)
    app.include_router(fhir_rest.router)
    app.include_router(admin.router)
    app.include_router(dicomweb.router)
    app.include_router(imaging.router)
    app.include_router(records.router)
    install_pages(app)
    return app
