"""`MemoryClient` methods for reading LLM usage and cost totals."""

from __future__ import annotations

from app.client_base import ClientBase


class LlmClientMixin(ClientBase):
    """Mixed into `app.client.MemoryClient`."""
