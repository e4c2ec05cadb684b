"""The offline topic summarizer on English and Chinese chats: grouping by subject, stable existing
topics, titles from keywords, salient statements, participants, determinism and the topic cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.l2.folding import apply_drafts
from app.llm.base import MessageIn
from app.llm.offline_topics import MAX_TOPICS, keywords, rewrite_topics_offline

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _messages(lines: list[tuple[str, str]], first_id: int = 1) -> list[MessageIn]:
    return [
        MessageIn(
            id=first_id + i, author=author, role="user", content=text, sent_at=T0 + timedelta(minutes=i)
        )
        for i, (author, text) in enumerate(lines)
    ]


ENGLISH = [
    ("Ann", "We need to deploy the new billing service to staging on Friday."),
    ("Bob", "The billing service deploy failed because the staging database migration timed out."),
    ("Ann", "ok"),
    ("Cy", "Has anyone tried the new ramen place near the office? The ramen was great."),
    ("Bob", "Decided: we roll back the billing migration and deploy again on Monday."),
    ("Cy", "The ramen place also has vegetarian ramen."),
]
CHINESE = [
    ("王", "我们周五要把新的支付服务部署到测试环境。"),
    ("李", "支付服务部署失败了，因为数据库迁移超时。"),
    ("王", "好的"),
    ("张", "公司附近新开的拉面店你们去过吗？拉面很好吃。"),
    ("李", "决定回滚支付服务的数据库迁移，周一重新部署。"),
    ("张", "那家拉面店还有素食拉面。"),
]


async def test_english_messages_are_grouped_by_what_they_talk_about() -> None:
    rewrite = await rewrite_topics_offline("c", [], _messages(ENGLISH))
    assert [d.message_ids for d in rewrite.drafts] == [[1, 2, 3, 5], [4, 6]]  # "ok" follows its thread
    billing, ramen = rewrite.drafts
    assert all(d.existing_id is None for d in rewrite.drafts)
    assert "billing" in billing.title.lower() and "deploy" in billing.title.lower()
    assert "ramen" in ramen.title.lower()
    assert billing.participants == ["Ann", "Bob"] and ramen.participants == ["Cy"]
    assert any(point.startswith("Decided: we roll back") for point in billing.key_points)
    assert "Decided: we roll back" in billing.summary  # a decision is salient
    assert "ok" not in billing.key_points


async def test_chinese_messages_are_grouped_and_titled_by_character_bigrams() -> None:
    rewrite = await rewrite_topics_offline("c", [], _messages(CHINESE))
    assert [d.message_ids for d in rewrite.drafts] == [[1, 2, 3, 5], [4, 6]]
    payment, ramen = rewrite.drafts
    assert "支付服务" in payment.title and "部署" in payment.title
    assert "拉面" in ramen.title
    assert "决定回滚支付服务的数据库迁移，周一重新部署。" in payment.key_points
    assert payment.participants == ["王", "李"]


def test_keywords_drop_stop_words_and_split_cjk_into_bigrams() -> None:
    assert keywords("The deployments of the billing service") == ["deployment", "billing", "service"]
    assert keywords("我们的服务器") == ["服务", "务器"]  # 我们 and bigrams with 的 are dropped


async def test_existing_topics_stay_stable_and_new_messages_join_them() -> None:
    first = await rewrite_topics_offline("c", [], _messages(ENGLISH))
    topics, next_number, _, _ = apply_drafts([], 1, _messages(ENGLISH), first.drafts)
    follow_up = _messages(
        [
            ("Dee", "Is the billing deploy on Monday still on?"),
            ("Eve", "The ramen place is closed on Sunday."),
        ],
        first_id=100,
    )
    rewrite = await rewrite_topics_offline("c", topics, follow_up)
    by_id = {d.existing_id: d for d in rewrite.drafts}
    assert set(by_id) == {"t1", "t2"}  # no new topic
    assert by_id["t1"].message_ids == [100] and by_id["t2"].message_ids == [101]
    assert by_id["t1"].title == topics[0].title  # titles of existing topics do not churn
    assert by_id["t1"].participants == ["Ann", "Bob", "Dee"]


async def test_the_summarizer_is_deterministic() -> None:
    one = await rewrite_topics_offline("c", [], _messages(ENGLISH + CHINESE))
    two = await rewrite_topics_offline("c", [], _messages(ENGLISH + CHINESE))
    assert one == two


async def test_unrelated_messages_never_make_more_than_max_topics() -> None:
    subjects = [
        "astronomy telescope galaxies",
        "gardening tomatoes compost",
        "football league transfer",
        "guitar chords practice",
        "mortgage interest rates",
        "marathon training schedule",
        "python asyncio cancellation",
        "sourdough starter hydration",
        "volcano eruption iceland",
        "chess openings sicilian",
        "knitting wool patterns",
    ]
    rewrite = await rewrite_topics_offline("c", [], _messages([("A", s) for s in subjects]))
    assert len(rewrite.drafts) == MAX_TOPICS
    assert sorted(i for d in rewrite.drafts for i in d.message_ids) == list(range(1, len(subjects) + 1))
