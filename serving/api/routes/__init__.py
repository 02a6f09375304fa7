"""One router per resource, included by :func:`serving.app.create_app` in this order."""

from __future__ import annotations

from serving.api.routes import admin, items, operations, scoring, ui, users

ROUTERS = (operations.router, scoring.router, items.router, users.router, admin.router, ui.router)
