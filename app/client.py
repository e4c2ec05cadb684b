"""`MemoryClient`: what a service uses to record messages, read memories and enqueue work.

    async with MemoryClient() as client:          # settings from env / .env
        await client.record_message(...)

It hides Redis key names and arq details (serializer, job ids). Each domain contributes its methods
through a mixin in its own package; this class only puts them together.
"""

from __future__ import annotations

from app.evolve.client import EvolveClientMixin
from app.l2.client import L2ClientMixin
from app.llm.client import LlmClientMixin
from app.tasks.client import TaskClientMixin


class MemoryClient(L2ClientMixin, EvolveClientMixin, TaskClientMixin, LlmClientMixin):
    """The service-side API; see each mixin for its methods."""


__all__ = ["MemoryClient"]
