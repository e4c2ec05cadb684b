"""Task-type declarations: the graph checks, input validation and the registry (no services)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from app.errors import ConfigError, ValidationError
from app.tasks.registry import FAILED, FINISHED, State, TaskRegistry, TaskType, TaskTypeError
from app.tasks.step import StepContext


class In(BaseModel):
    chat_id: str
    limit: int = 10


async def noop(ctx: StepContext) -> str:
    return FINISHED


def declare(states: dict[str, State], initial: str = "a", **extra: object) -> TaskType:
    return TaskType(name="t", input_model=In, initial=initial, states=states, **extra)  # type: ignore[arg-type]


def test_a_cycle_with_no_exit_is_rejected_at_declaration() -> None:
    with pytest.raises(TaskTypeError) as caught:
        declare({"a": State(noop, ("b",)), "b": State(noop, ("c",)), "c": State(noop, ("a",))})
    assert str(caught.value) == (
        "task type 't': state(s) a, b, c can never reach a final state (canceled, failed, finished): "
        "a cycle with no exit"
    )
    assert isinstance(caught.value, ConfigError)


def test_a_trap_after_a_good_start_is_rejected() -> None:
    with pytest.raises(TaskTypeError, match=r"state\(s\) b, c can never reach a final state"):
        declare({"a": State(noop, ("b", FINISHED)), "b": State(noop, ("c",)), "c": State(noop, ("b",))})


def test_a_cycle_with_an_exit_is_allowed() -> None:
    declared = declare({"a": State(noop, ("b",)), "b": State(noop, ("a", FINISHED, FAILED))})
    assert declared.initial == "a"


@pytest.mark.parametrize(
    ("states", "initial", "message"),
    [
        ({"a": State(noop, ("nowhere",))}, "a", "state 'a' goes to unknown state(s) 'nowhere'"),
        ({"a": State(noop, ())}, "a", "state 'a' goes nowhere"),
        ({"a": State(noop, (FINISHED,))}, "x", "initial state 'x' is not one of its states"),
        (
            {"a": State(noop, (FINISHED,)), "b": State(noop, (FINISHED,))},
            "a",
            "state(s) b can never be reached",
        ),
        ({"finished": State(noop, ("a",)), "a": State(noop, (FINISHED,))}, "a", "finished are final states"),
        ({}, "a", "declares no states"),
    ],
)
def test_bad_graphs_are_rejected_with_a_reason(states: dict[str, State], initial: str, message: str) -> None:
    with pytest.raises(TaskTypeError) as caught:
        declare(states, initial)
    assert message in str(caught.value)


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(TaskTypeError, match="max_attempts must be at least 1"):
        declare({"a": State(noop, (FINISHED,))}, max_attempts=0)
    with pytest.raises(TaskTypeError, match="backoff"):
        declare({"a": State(noop, (FINISHED,))}, backoff_base_seconds=10.0, backoff_max_seconds=5.0)


def test_backoff_doubles_and_is_capped() -> None:
    declared = declare({"a": State(noop, (FINISHED,))}, backoff_base_seconds=2.0, backoff_max_seconds=10.0)
    assert [declared.backoff_seconds(attempt) for attempt in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_validate_names_the_unknown_type_or_the_bad_field() -> None:
    registry = TaskRegistry()
    registry.register(declare({"a": State(noop, (FINISHED,))}))
    with pytest.raises(ValidationError) as unknown:
        registry.validate("nope", {})
    assert str(unknown.value) == "task_type: unknown task type 'nope' (known: t)"
    with pytest.raises(ValidationError) as missing:
        registry.validate("t", {"limit": "many"})
    assert missing.value.field == "input.chat_id"
    assert missing.value.problem == "Field required (and 1 more)"
    declared, parsed = registry.validate("t", {"chat_id": "c1"})
    assert declared.name == "t" and parsed == In(chat_id="c1", limit=10)


def test_temporary_types_are_removed_and_duplicates_refused() -> None:
    registry = TaskRegistry()
    declared = declare({"a": State(noop, (FINISHED,))})
    with registry.temporary(declared):
        assert registry.names() == ["t"]
        with pytest.raises(TaskTypeError, match="already registered"):
            registry.register(declare({"a": State(noop, (FINISHED,))}))
    assert registry.names() == []


def test_load_modules_registers_task_types_of_a_module() -> None:
    registry = TaskRegistry()
    added = registry.load_modules(" tests.integration.tasks.task_types , ")
    assert "test_three_steps" in added and registry.get("test_three_steps") is not None
    with pytest.raises(TaskTypeError, match="has no TASK_TYPES list"):
        registry.load_modules("tests.unit.test_tasks_registry")
