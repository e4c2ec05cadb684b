"""`MemoryClient`: what a service uses to record messages, read memories and enqueue work.

    async with MemoryClient() as client:          # settings from env / .env
        await client.record_message(...)

It hides Redis key names and arq details (serializer, job ids). Each domain contributes its methods
through a mixin in its own package; this class only puts them together.
"""

from __future__ import annotations

from arq.jobs import Job

from app.client_base import ClientBase
from app.constants import JOB_EVOLVE_MEMORY, JOB_UPDATE_TOPIC_MEMORY


class MemoryClient(ClientBase):
    async def request_topic_update(self, chat_id: str) -> Job | None:
        """Ask for an update of one chat's topic memory now."""
        return await self.enqueue(JOB_UPDATE_TOPIC_MEMORY, chat_id)

    async def request_group_distillation(self, group_id: str) -> Job | None:
        """Ask for a consensus distillation of one group now."""
        return await self.enqueue(JOB_EVOLVE_MEMORY, group_id)


__all__ = ["MemoryClient"]
