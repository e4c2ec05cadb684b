"""The OpenAI-compatible memory model: any server speaking chat completions (OpenAI, Azure, DeepSeek,
Qwen, vLLM, Ollama...), through the official `openai` package.

Guarantees:
- one HTTP attempt per request (`max_retries=0`): retries of transport faults belong to the job, which
  turns our `TransientError`s into arq retries with backoff (honouring Retry-After);
- an invalid answer (bad JSON, missing fields, unknown or missing ids) gets up to LLM_MAX_RETRIES
  repair requests carrying the problems, then fails permanently with the raw answer kept;
- every request's prompt stays within LLM_MAX_INPUT_TOKENS (estimated, see `app.llm.tokens`): a
  backlog that does not fit is folded over several sequential requests, never cut;
- every request yields a `Usage` (tokens from the server's `usage`, latency, cost from LLM_PRICES),
  returned with the result, or attached as `.usage` to the error that ended the operation.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from app.config import Settings
from app.errors import ConfigError
from app.llm import consensus_fold, topic_fold
from app.llm.answers import AnswerProblems, NewRef
from app.llm.base import ConsensusItem, ConsensusUpdate, MessageIn, Topic, TopicRewrite, TopicSource, Usage
from app.llm.errors import LlmAnswerInvalid, LlmInputTooLarge, LlmRejected, LlmUnavailable
from app.llm.pricing import call_cost
from app.llm.templates import PROMPT_VERSION, REPAIR, render
from app.llm.tokens import Budget, estimate_tokens, truncate_to_tokens

logger = logging.getLogger("app.llm")
PROVIDER = "openai"
RETRY_AFTER_MAX_SECONDS = 900.0  # a longer Retry-After is capped: the job would outlive its usefulness
TRANSIENT_STATUS = {408, 409, 429}  # plus every 5xx; the openai package itself treats these as retryable
REJECTED = {
    400: "LLM rejected the request (400)",
    401: "LLM rejected the API key (401): check LLM_API_KEY",
    403: "LLM refused access (403): the API key may not use LLM_MODEL={model}",
    404: "LLM endpoint or model not found (404): check LLM_BASE_URL={base_url} and LLM_MODEL={model}",
}
TRUNCATED_ANSWER = "the answer was cut off at the output token limit: answer more concisely"
T = TypeVar("T")


class OpenAICompatibleModel:
    """`MemoryModel` over chat completions; `name` (stored with each version) carries the prompt version."""

    def __init__(self, settings: Settings, *, client: AsyncOpenAI | None = None) -> None:
        if not settings.llm_model or settings.llm_api_key is None:
            raise ConfigError("LLM_PROVIDER=openai needs LLM_MODEL and LLM_API_KEY")
        self.model = settings.llm_model
        self.name = f"{PROVIDER}:{self.model}:prompts-{PROMPT_VERSION}"[:100]
        self.base_url = settings.llm_base_url or "https://api.openai.com/v1"
        self.temperature = settings.llm_temperature
        self.json_mode = settings.llm_json_mode
        self.repairs = settings.llm_max_retries
        self.prices = settings.llm_prices
        self.timeout_seconds = settings.llm_timeout_seconds
        self.budget = Budget(settings.llm_max_input_tokens, repairs=settings.llm_max_retries > 0)
        self._client = client or AsyncOpenAI(
            base_url=self.base_url,
            api_key=settings.llm_api_key.get_secret_value(),
            timeout=settings.llm_timeout_seconds,
            max_retries=0,
        )

    async def rewrite_topics(
        self, chat_id: str, current: list[Topic], messages: list[MessageIn]
    ) -> TopicRewrite:
        """Fold `messages` into `current` over as many sequential requests as the budget needs."""
        usages: list[Usage] = []
        states = [topic_fold.TopicState.from_topic(topic) for topic in current]
        new_ref = NewRef([topic.id for topic in current])
        done = 0
        while done < len(messages):  # no new messages: nothing to ask
            try:
                chunk = topic_fold.plan_chunk(
                    chat_id, states, messages[done:], done, len(messages), self.budget
                )
            except LlmInputTooLarge as exc:  # possibly after earlier chunks: they cost too
                exc.usage = list(usages)
                raise
            shown = [state.ref for state in states]
            ids = [message.id for message in chunk.messages]
            drafts = await self._ask(
                chunk.system,
                chunk.user,
                partial(topic_fold.validate_topic_answer, shown_refs=shown, message_ids=ids),
                usages,
                what=f"topics of chat {chat_id}",
            )
            states = topic_fold.fold_drafts(states, drafts, chunk.messages, new_ref)
            done += len(chunk.messages)
        return TopicRewrite(drafts=[state.draft() for state in states], usage=usages)

    async def distil_consensus(
        self, group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
    ) -> ConsensusUpdate:
        """Fold the sources' topics into `previous` over as many sequential requests as the budget needs."""
        usages: list[Usage] = []
        states = consensus_fold.initial_states(previous)
        new_ref = NewRef([item.id for item in previous])
        topics = consensus_fold.flatten_sources(sources)
        done = 0
        while done < len(topics):
            shown = consensus_fold.live(states)
            try:
                chunk = consensus_fold.plan_chunk(
                    group_id, shown, topics[done:], done, len(topics), self.budget
                )
            except LlmInputTooLarge as exc:
                exc.usage = list(usages)
                raise
            changes = await self._ask(
                chunk.system,
                chunk.user,
                partial(consensus_fold.validate_consensus_answer, states=shown, topic_refs=chunk.refs),
                usages,
                what=f"consensus of group {group_id}",
            )
            states = consensus_fold.fold_changes(states, changes, new_ref)
            done += len(chunk.refs)
        return ConsensusUpdate(changes=consensus_fold.final_changes(states), usage=usages)

    async def aclose(self) -> None:
        await self._client.close()

    # --- one question, with repairs ----------------------------------------------------------------

    async def _ask(
        self, system: str, user: str, validate: Callable[[str], T], usages: list[Usage], *, what: str
    ) -> T:
        """Send the prompt, validate the answer, repair up to LLM_MAX_RETRIES times; `usages` grows."""
        conversation: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]
        request = conversation
        last: tuple[str, AnswerProblems] | None = None
        for attempt in range(self.repairs + 1):
            raw, usage = await self._complete(request, usages, what=what)
            try:
                result = validate(raw)
            except AnswerProblems as invalid:
                if usage.error == TRUNCATED_ANSWER:  # the real cause, for the model and the operator
                    invalid = AnswerProblems([TRUNCATED_ANSWER, *invalid.problems])
                usage.ok = False
                usage.error = f"invalid answer: {invalid}"[:1000]
                logger.warning("LLM answer for %s invalid (attempt %d): %s", what, attempt + 1, invalid)
                request = [*conversation, *self._repair_turns(raw, invalid)]
                last = (raw, invalid)
                continue
            return result
        assert last is not None  # the loop ran at least once and every pass without a return set it
        raw, problems = last
        raise LlmAnswerInvalid(
            f"LLM answer for {what} stayed invalid after {self.repairs + 1} attempts: {problems}",
            raw_answer=raw,
            usage=usages,
        )

    def _repair_turns(self, raw: str, problems: AnswerProblems) -> list[ChatCompletionMessageParam]:
        """The invalid answer and the problems, bounded so the repair request stays within the budget."""
        reserve = self.budget.repair_reserve
        problem_lines = truncate_to_tokens("\n".join(f"- {p}" for p in problems.problems), reserve // 3)
        answer = truncate_to_tokens(raw, reserve // 3)
        return [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": render(REPAIR, problems=problem_lines, answer=answer)},
        ]

    # --- one HTTP request ----------------------------------------------------------------------------

    async def _complete(
        self, messages: list[ChatCompletionMessageParam], usages: list[Usage], *, what: str
    ) -> tuple[str, Usage]:
        """One chat completion: (answer text, its usage appended to `usages`), or a translated error."""
        started = time.perf_counter()
        try:
            completion = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=self.temperature,
                response_format={"type": "json_object"} if self.json_mode else openai.omit,
            )
        except openai.APIError as exc:
            usage = self._usage(started, ok=False)
            usages.append(usage)
            error = self._translate(exc, usages)
            usage.error = str(error)[:1000]
            logger.warning("LLM call for %s failed after %d ms: %s", what, usage.latency_ms, error)
            raise error from exc
        if not isinstance(completion, ChatCompletion) or not isinstance(completion.choices, list):
            # a web page or another API at LLM_BASE_URL (the package hands back its text as is)
            usage = self._usage(started, ok=False)
            usages.append(usage)
            error = LlmRejected(
                f"{self.base_url} did not answer like a chat-completions API "
                f"(got {str(completion)[:80]!r}): check LLM_BASE_URL (it usually ends in /v1)",
                status_code=200,
                usage=usages,
            )
            usage.error = str(error)[:1000]
            raise error
        choice = completion.choices[0] if completion.choices else None
        raw = (choice.message.content if choice is not None else None) or ""
        truncated = choice is not None and choice.finish_reason == "length"
        prompt_text = "".join(str(message.get("content") or "") for message in messages)
        reported = completion.usage
        usage = self._usage(
            started,
            ok=True,
            prompt_tokens=reported.prompt_tokens if reported else estimate_tokens(prompt_text),
            completion_tokens=reported.completion_tokens if reported else estimate_tokens(raw),
        )
        if truncated:
            usage.error = TRUNCATED_ANSWER  # ok stays True unless the answer is also invalid
        usages.append(usage)
        logger.info(
            "LLM call for %s: %d+%d tokens, %d ms, $%s",
            what,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.latency_ms,
            usage.cost_usd,
        )
        return raw, usage

    def _usage(
        self, started: float, *, ok: bool, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> Usage:
        return Usage(
            provider=PROVIDER,
            model=self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=round((time.perf_counter() - started) * 1000),
            cost_usd=call_cost(self.prices, self.model, prompt_tokens, completion_tokens),
            ok=ok,
        )

    def _translate(self, exc: openai.APIError, usages: list[Usage]) -> LlmUnavailable | LlmRejected:
        """The job-facing error for a failed request: transient (retry later) or permanent (rejected)."""
        if isinstance(exc, openai.APITimeoutError):
            return LlmUnavailable(
                f"LLM timed out after {self.timeout_seconds:g} s ({self.base_url})", usage=usages
            )
        if isinstance(exc, openai.APIConnectionError):
            return LlmUnavailable(f"cannot reach the LLM at {self.base_url}: {exc.message}", usage=usages)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _server_message(exc)
            if status in TRANSIENT_STATUS or status >= 500:
                retry_after = _retry_after_seconds(exc)
                wait = f"; Retry-After {retry_after:g} s" if retry_after is not None else ""
                return LlmUnavailable(
                    f"LLM unavailable ({status}){wait}: {detail}",
                    retry_after_seconds=retry_after,
                    usage=usages,
                )
            reason = REJECTED.get(status, f"LLM rejected the request ({status})")
            reason = reason.format(model=self.model, base_url=self.base_url)
            return LlmRejected(f"{reason}: {detail}", status_code=status, usage=usages)
        return LlmRejected(f"LLM answer unusable: {exc.message}", status_code=0, usage=usages)


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own error message (OpenAI-style `{"error": {"message": ...}}`), short."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:300]
    return exc.message[:300]


def _retry_after_seconds(exc: openai.APIStatusError) -> float | None:
    """Retry-After (seconds or an HTTP date) or retry-after-ms, capped; None when absent or unreadable."""
    headers = exc.response.headers
    seconds: float | None = None
    if "retry-after-ms" in headers:
        try:
            seconds = float(headers["retry-after-ms"]) / 1000
        except ValueError:
            seconds = None
    if seconds is None and "retry-after" in headers:
        value = headers["retry-after"].strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None:
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_SECONDS)
