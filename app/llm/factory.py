"""Build the configured memory model."""

from __future__ import annotations

from app.config import Settings
from app.errors import ConfigError
from app.llm.base import MemoryModel
from app.llm.offline import OfflineMemoryModel


def build_memory_model(settings: Settings) -> MemoryModel:
    if settings.llm_provider == "offline":
        return OfflineMemoryModel()
    raise ConfigError(f"LLM_PROVIDER={settings.llm_provider!r} is not implemented yet")
