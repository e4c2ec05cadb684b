"""Reading and validating model answers (no server): the problems a repair prompt will carry."""

from __future__ import annotations

import json

import pytest

from app.llm.answers import AnswerProblems, NewRef, load_json_answer
from app.llm.topic_fold import validate_topic_answer


def test_a_code_fence_around_json_is_tolerated() -> None:
    assert load_json_answer('```json\n{"topics": []}\n```') == {"topics": []}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "the answer is empty"),
        ("Sure! Here are the topics:", "the answer is not valid JSON: Expecting value at line 1 column 1"),
        ('{"topics": [', "the answer is not valid JSON"),
    ],
)
def test_unreadable_answers(raw: str, problem: str) -> None:
    with pytest.raises(AnswerProblems) as caught:
        load_json_answer(raw)
    assert caught.value.problems[0].startswith(problem)


def topic(existing_id: str | None, message_ids: list[int], title: str = "T") -> dict[str, object]:
    return {"existing_id": existing_id, "title": title, "summary": "s", "message_ids": message_ids}


def problems_of(answer: object, shown: list[str], ids: list[int]) -> list[str]:
    with pytest.raises(AnswerProblems) as caught:
        validate_topic_answer(json.dumps(answer), shown, ids)
    return caught.value.problems


def test_a_valid_answer_and_a_bare_list() -> None:
    answer = [topic("t1", [2]), topic(None, [1, 3])]
    drafts = validate_topic_answer(json.dumps(answer), ["t1"], [1, 2, 3])
    assert [(d.existing_id, d.message_ids) for d in drafts] == [("t1", [2]), (None, [1, 3])]


def test_every_reference_problem_is_reported_at_once() -> None:
    answer = {
        "topics": [
            topic("t1", [1, 1]),
            topic("t1", [9]),
            topic("t7", [], title=" "),
        ]
    }
    assert problems_of(answer, ["t1", "t2"], [1, 2]) == [
        "topics[1].existing_id 't1' is used by two topics",
        "topics[2].title is empty",
        "topics[2].existing_id 't7' is not a current topic (allowed: t1, t2)",
        "message 1 is placed in both topics[0] and topics[0]",
        "topics[1].message_ids has 9, which is not a new message",
        "messages 2 are not placed in any topic",
    ]


def test_missing_fields_and_wrong_types_name_their_place() -> None:
    answer = {"topics": [{"existing_id": None, "summary": "s", "message_ids": ["one"]}]}
    assert problems_of(answer, [], [1]) == [
        "topics[0].title: Field required",
        "topics[0].message_ids[0]: Input should be a valid integer, unable to parse string as an integer",
    ]
    assert problems_of({"items": []}, [], [1]) == ["topics: Field required"]


def test_provisional_references_avoid_real_ids() -> None:
    new_ref = NewRef(["new-1", "t1"])
    assert [new_ref(), new_ref()] == ["new-2", "new-3"]
