"""`.env.example` documents every setting, so operators can see each knob and its default."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_env_example_lists_every_setting() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE)
    documented = {name.lower() for name in names}
    assert set(Settings.model_fields) - documented == set()
    assert documented - set(Settings.model_fields) == set()
