"""`MemoryClient` methods for recording messages and reading topic memory."""

from __future__ import annotations

from app.client_base import ClientBase


class L2ClientMixin(ClientBase):
    """Mixed into `app.client.MemoryClient`."""
