"""Build the configured memory model (LLM_PROVIDER): the offline default or an OpenAI-compatible server."""

from __future__ import annotations

from app.config import Settings
from app.llm.base import MemoryModel
from app.llm.offline import OfflineMemoryModel
from app.llm.openai_provider import OpenAICompatibleModel


def build_memory_model(settings: Settings) -> MemoryModel:
    """The model the worker's jobs call; the caller closes it with `aclose()`."""
    if settings.llm_provider == "openai":
        return OpenAICompatibleModel(settings)
    return OfflineMemoryModel()
