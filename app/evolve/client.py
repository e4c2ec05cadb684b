"""`MemoryClient` methods for reading group consensus memory."""

from __future__ import annotations

from app.client_base import ClientBase


class EvolveClientMixin(ClientBase):
    """Mixed into `app.client.MemoryClient`."""
