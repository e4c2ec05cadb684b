"""Offline topic summarizer (placeholder until the L2 issue fills it in): one topic per batch."""

from __future__ import annotations

from app.llm.base import MessageIn, Topic, TopicDraft, TopicRewrite


async def rewrite_topics_offline(
    chat_id: str, current: list[Topic], messages: list[MessageIn]
) -> TopicRewrite:
    drafts = [TopicDraft(existing_id=t.id, title=t.title, summary=t.summary) for t in current]
    if messages:
        drafts.append(
            TopicDraft(
                title=messages[0].content[:60],
                summary=" ".join(m.content for m in messages)[:500],
                participants=sorted({m.author for m in messages}),
                message_ids=[m.id for m in messages],
            )
        )
    return TopicRewrite(drafts=drafts)
