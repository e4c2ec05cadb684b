"""`MemoryClient` methods for reading group consensus memory and requesting a distillation."""

from __future__ import annotations

from app.client_base import ClientBase
from app.constants import EVOLVE_HISTORY_LIMIT, JOB_EVOLVE_MEMORY
from app.errors import AppError, ValidationError
from app.evolve import repository as repo
from app.evolve.schemas import GroupMemoryVersionView, GroupMemoryView
from app.evolve.service import validate_group_id


class EvolveClientMixin(ClientBase):
    """Mixed into `app.client.MemoryClient`."""

    async def get_group_memory(
        self, group_id: str, history: bool = False, history_limit: int = EVOLVE_HISTORY_LIMIT
    ) -> GroupMemoryView:
        """The group's current consensus items; with `history`, its newest versions and their diffs.

        A group never distilled (or unknown: group ids are the services' own, there is no registry)
        gets an empty view, version 0, rather than an error: "no consensus yet" is a normal state.
        """
        validate_group_id(group_id)
        if history_limit < 1:
            raise ValidationError("history_limit", f"must be at least 1, got {history_limit}")
        async with self.session_factory() as session:
            view = GroupMemoryView.from_row(group_id, await repo.get_group_memory(session, group_id))
            if history:
                rows = await repo.list_versions(session, group_id, history_limit)
                view.history = [GroupMemoryVersionView.from_row(row) for row in rows]
                view.history_total = await repo.count_versions(session, group_id)
        return view

    async def request_group_distillation(self, group_id: str) -> str:
        """Enqueue a manual distillation of the group now; returns its arq job id.

        A manual run distils whatever is new and does not use up the group's daily run.
        """
        validate_group_id(group_id)
        job = await self.enqueue(JOB_EVOLVE_MEMORY, group_id)
        if job is None:  # only a fixed job id can collide, and we pass none
            raise AppError(f"arq refused the distillation job of group {group_id!r}")
        return job.job_id
