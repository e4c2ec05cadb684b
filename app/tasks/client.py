"""`MemoryClient` methods for creating, reading, listing, cancelling and retrying long tasks."""

from __future__ import annotations

from app.client_base import ClientBase


class TaskClientMixin(ClientBase):
    """Mixed into `app.client.MemoryClient`."""
