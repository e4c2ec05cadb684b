"""Task types: declared once, their state graph checked at declaration, looked up by name.

    FETCH = TaskType(
        name="fetch_and_store",
        input_model=FetchInput,
        initial="fetch",
        states={"fetch": State(fetch, goes_to=("store",)), "store": State(store, goes_to=("finished",))},
    )
    register_task_type(FETCH)  # or `default_registry.temporary(FETCH)` in a test

A handler runs one step of a task in its state and returns the name of the next state (one of its
`goes_to`). The final states are `finished`, `failed` and `canceled`. Declaring a type rejects a
graph in which some state can never reach a final state (a cycle with no exit) with `TaskTypeError`;
cycles with an exit are allowed and bounded at run time by `max_state_visits`.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from app.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from app.tasks.step import StepContext

FINISHED, FAILED, CANCELED = "finished", "failed", "canceled"
FINAL_STATES = frozenset({FINISHED, FAILED, CANCELED})

Handler = Callable[["StepContext"], Awaitable[str]]
ChangeHook = Callable[["StepContext", str, str], Awaitable[None]]  # (ctx, from_state, to_state)


class TaskTypeError(ConfigError):
    """Invalid task type declaration."""


@dataclass(frozen=True)
class State:
    """A non-final state: its handler and the states that handler may move the task to."""

    handler: Handler
    goes_to: tuple[str, ...]


@dataclass(frozen=True)
class TaskType:
    """A declared task type; construction checks the graph and raises `TaskTypeError`.

    `max_attempts` (tries of one step) and `max_state_visits` default to the settings when None.
    A failed step is retried after `backoff_base_seconds * 2 ** (attempt - 1)`, capped at
    `backoff_max_seconds`. `on_change` runs on every state change, inside the step that makes it.
    """

    name: str
    input_model: type[BaseModel]
    initial: str
    states: Mapping[str, State]
    on_change: ChangeHook | None = None
    max_attempts: int | None = None
    max_state_visits: int | None = None
    backoff_base_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        check_graph(self)
        if self.max_attempts is not None and self.max_attempts < 1:
            raise TaskTypeError(f"task type {self.name!r}: max_attempts must be at least 1")
        if self.max_state_visits is not None and self.max_state_visits < 1:
            raise TaskTypeError(f"task type {self.name!r}: max_state_visits must be at least 1")
        if self.backoff_base_seconds < 0 or self.backoff_max_seconds < self.backoff_base_seconds:
            raise TaskTypeError(
                f"task type {self.name!r}: need 0 <= backoff_base_seconds <= backoff_max_seconds"
            )

    def backoff_seconds(self, attempt: int) -> float:
        """Delay before retrying a step that failed on its `attempt`-th try (1-based)."""
        return float(min(self.backoff_base_seconds * 2.0 ** max(attempt - 1, 0), self.backoff_max_seconds))


def check_graph(task_type: TaskType) -> None:
    """Every name known, every state reachable from `initial`, and every state able to finish."""
    where = f"task type {task_type.name!r}"
    if not task_type.name:
        raise TaskTypeError("a task type needs a name")
    if not task_type.states:
        raise TaskTypeError(f"{where}: declares no states")
    clashes = sorted(FINAL_STATES & set(task_type.states))
    if clashes:
        raise TaskTypeError(f"{where}: {', '.join(clashes)} are final states and cannot have handlers")
    if task_type.initial not in task_type.states:
        raise TaskTypeError(f"{where}: initial state {task_type.initial!r} is not one of its states")
    known = set(task_type.states) | FINAL_STATES
    for name, state in task_type.states.items():
        if not state.goes_to:
            raise TaskTypeError(f"{where}: state {name!r} goes nowhere (give it at least one next state)")
        unknown = [target for target in state.goes_to if target not in known]
        if unknown:
            raise TaskTypeError(
                f"{where}: state {name!r} goes to unknown state(s) {', '.join(map(repr, unknown))}"
            )
    reachable = _closure({task_type.initial}, lambda name: task_type.states[name].goes_to, task_type.states)
    unreachable = sorted(set(task_type.states) - reachable)
    if unreachable:
        raise TaskTypeError(
            f"{where}: state(s) {', '.join(unreachable)} can never be reached from {task_type.initial!r}"
        )
    incoming: dict[str, list[str]] = {}
    for name, state in task_type.states.items():
        for target in state.goes_to:
            incoming.setdefault(target, []).append(name)
    can_finish = _closure(set(FINAL_STATES), lambda name: tuple(incoming.get(name, ())), incoming)
    stuck = sorted(set(task_type.states) - can_finish)
    if stuck:
        raise TaskTypeError(
            f"{where}: state(s) {', '.join(stuck)} can never reach a final state "
            f"({', '.join(sorted(FINAL_STATES))}): a cycle with no exit"
        )


def _closure(
    start: set[str], step: Callable[[str], tuple[str, ...]], known: Mapping[str, object]
) -> set[str]:
    seen = set(start)
    frontier = list(start)
    while frontier:
        name = frontier.pop()
        if name not in known:
            continue
        for following in step(name):
            if following not in seen:
                seen.add(following)
                frontier.append(following)
    return seen


class TaskRegistry:
    """Task types by name. One process-wide `default_registry`; tests add types with `temporary`."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}

    def register(self, task_type: TaskType) -> None:
        """Add a type; registering the very same declaration again is a no-op, a different one an error."""
        existing = self._types.get(task_type.name)
        if existing is not None and existing is not task_type:
            raise TaskTypeError(f"task type {task_type.name!r} is already registered")
        self._types[task_type.name] = task_type

    def unregister(self, name: str) -> None:
        self._types.pop(name, None)

    def get(self, name: str) -> TaskType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    @contextmanager
    def temporary(self, *task_types: TaskType) -> Iterator[None]:
        """Register `task_types` for the duration of a `with` block (tests), then remove them."""
        added = [task_type for task_type in task_types if task_type.name not in self._types]
        for task_type in task_types:
            self.register(task_type)
        try:
            yield
        finally:
            for task_type in added:
                self.unregister(task_type.name)

    def validate(self, name: str, raw_input: Mapping[str, Any]) -> tuple[TaskType, BaseModel]:
        """The type and its parsed input, or `ValidationError` naming the unknown type or bad field."""
        task_type = self._types.get(name)
        if task_type is None:
            known = ", ".join(self.names()) or "none"
            raise ValidationError("task_type", f"unknown task type {name!r} (known: {known})")
        if not isinstance(raw_input, Mapping):
            raise ValidationError("input", f"must be a JSON object, got {type(raw_input).__name__}")
        try:
            return task_type, task_type.input_model.model_validate(dict(raw_input))
        except PydanticValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in ("input", *first["loc"]))
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ValidationError(where, f"{first['msg']}{more}") from None

    def load_modules(self, modules: str) -> list[str]:
        """Import each comma-separated module and register its `TASK_TYPES`; returns the names added."""
        added: list[str] = []
        for module_name in filter(None, (part.strip() for part in modules.split(","))):
            module = importlib.import_module(module_name)
            task_types = getattr(module, "TASK_TYPES", None)
            if not isinstance(task_types, list | tuple):
                raise TaskTypeError(f"module {module_name!r} has no TASK_TYPES list")
            for task_type in task_types:
                if not isinstance(task_type, TaskType):
                    raise TaskTypeError(
                        f"module {module_name!r}: TASK_TYPES holds {task_type!r}, not a TaskType"
                    )
                self.register(task_type)
                added.append(task_type.name)
        return added


default_registry = TaskRegistry()


def register_task_type(task_type: TaskType) -> TaskType:
    """Register in the default registry; returns the type so a module can declare and register at once."""
    default_registry.register(task_type)
    return task_type
