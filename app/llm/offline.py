"""The offline memory model: deterministic, no network, the default provider."""

from __future__ import annotations

from app.llm.base import ConsensusItem, ConsensusUpdate, MessageIn, Topic, TopicRewrite, TopicSource, Usage
from app.llm.offline_consensus import distil_consensus_offline
from app.llm.offline_topics import rewrite_topics_offline

OFFLINE_NAME = "offline"


class OfflineMemoryModel:
    name = OFFLINE_NAME

    async def rewrite_topics(
        self, chat_id: str, current: list[Topic], messages: list[MessageIn]
    ) -> TopicRewrite:
        result = await rewrite_topics_offline(chat_id, current, messages)
        result.usage.append(Usage(provider=OFFLINE_NAME, model=OFFLINE_NAME))
        return result

    async def distil_consensus(
        self, group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
    ) -> ConsensusUpdate:
        result = await distil_consensus_offline(group_id, previous, sources)
        result.usage.append(Usage(provider=OFFLINE_NAME, model=OFFLINE_NAME))
        return result

    async def aclose(self) -> None:
        return None
