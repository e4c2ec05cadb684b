"""L2 tables: recorded chat messages (the source of truth) and each chat's topic memory.

A message is *pending* while `topic_version_id` is NULL; the update that folds it sets that column
in the same transaction that writes the new topic-memory version, so a message is folded exactly once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, created_at_column

ID_LENGTH = 200  # chat, group, user and message ids are the services' own strings
ROLES = ("user", "assistant", "system")


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (
        UniqueConstraint("chat_id", "external_id", name="uq_chat_messages_chat_external"),
        CheckConstraint("role IN ('user', 'assistant', 'system')", name="role_known"),
        Index(
            "ix_chat_messages_pending",
            "chat_id",
            "id",
            postgresql_where=text("topic_version_id IS NULL"),
        ),
        Index("ix_chat_messages_chat_id_id", "chat_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    chat_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    group_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    external_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    user_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    user_name: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    recorded_at: Mapped[datetime] = created_at_column()
    topic_version_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("topic_memory_versions.id", ondelete="SET NULL")
    )


class TopicMemory(Base):
    """The current topic memory of one chat; its row lock serialises updates of that chat."""

    __tablename__ = "topic_memories"

    chat_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    topics: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default="[]")
    next_topic_number: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    message_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class TopicMemoryVersion(Base):
    """One committed update: the topics after it, and exactly which messages it folded."""

    __tablename__ = "topic_memory_versions"
    __table_args__ = (
        UniqueConstraint("chat_id", "version", name="uq_topic_memory_versions_chat_version"),
        Index("ix_topic_memory_versions_group_id_id", "group_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    chat_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    group_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    topics: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    message_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    message_count: Mapped[int] = mapped_column(Integer, nullable=False)
    summarizer: Mapped[str] = mapped_column(String(100), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)  # lock held -> version written
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)  # lock acquired
    job_id: Mapped[str | None] = mapped_column(String(200))
    job_try: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = created_at_column()
