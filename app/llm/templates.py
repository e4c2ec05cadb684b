"""The versioned prompt templates shipped in `app/llm/prompts/` (package data), filled with `$names`.

A change of wording is a new file (`topics_v2.txt`) and a new `PROMPT_VERSION`, so every stored
memory version can be traced to the prompt that produced it (the model name carries the version).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from string import Template

PROMPT_VERSION = "v1"
TOPICS_SYSTEM = f"topics_{PROMPT_VERSION}.txt"
TOPICS_INPUT = f"topics_input_{PROMPT_VERSION}.txt"
CONSENSUS_SYSTEM = f"consensus_{PROMPT_VERSION}.txt"
CONSENSUS_INPUT = f"consensus_input_{PROMPT_VERSION}.txt"
REPAIR = f"repair_{PROMPT_VERSION}.txt"


@cache
def load_template(name: str) -> Template:
    """The template `app/llm/prompts/<name>`, read once per process."""
    return Template(files("app.llm").joinpath("prompts", name).read_text(encoding="utf-8"))


def render(name: str, **values: str) -> str:
    """Fill every `$name` of the template; a missing value is a programming error (KeyError)."""
    return load_template(name).substitute(values).strip()
