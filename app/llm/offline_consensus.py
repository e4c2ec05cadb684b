"""Offline consensus distiller (placeholder until the evolve issue fills it in): keeps everything."""

from __future__ import annotations

from app.llm.base import ConsensusChange, ConsensusItem, ConsensusUpdate, TopicSource


async def distil_consensus_offline(
    group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
) -> ConsensusUpdate:
    return ConsensusUpdate(changes=[ConsensusChange(action="keep", item_id=item.id) for item in previous])
