"""Scenario 5: the command service is SIGKILLed while posts with Idempotency-Keys are in
flight (some produced, not yet answered); it restarts and the client retries each post with
the same key. Each logical post must exist once: one post id in the read model and one
post.created event on the topic."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict

import asyncpg
import pytest

from shared import codec
from shared.events import PostCreated
from tests.fault.conftest import FaultStack
from tests.fault.harness import (
    Account,
    client_session,
    create_post,
    post_counts,
    register,
    topic_records,
    wait_caught_up,
)
from tests.fault.history import History, Outcome, check

pytestmark = pytest.mark.fault

POSTS = 80
MAX_ATTEMPTS = 5


async def test_command_killed_mid_request_then_retried_with_same_key(
    fault_stack: FaultStack, report: list[str]
) -> None:
    s = fault_stack.settings
    command = fault_stack.service("command")
    projector = fault_stack.service("projector")
    command.start()
    projector.start()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)

    history = History()
    async with client_session(15.0) as http:
        authors = [await register(http, command.url, f"s5_author_{i}") for i in range(4)]
        # Logical post i: text 's5 <i>' (the history's key) and its Idempotency-Key.
        work = [(authors[i % len(authors)], f"s5 {i}", f"s5-key-{seed}-{i}") for i in range(POSTS)]
        first_answer = asyncio.Event()
        gate = asyncio.Semaphore(40)

        async def send(author_text_key: tuple[Account, str, str]) -> None:
            author, text, key = author_text_key
            async with gate:
                _, _, outcome = await create_post(
                    http,
                    command.url,
                    author,
                    text,
                    history,
                    idempotency_key=key,
                )
            if outcome is Outcome.OK:
                first_answer.set()

        burst = asyncio.gather(*(send(w) for w in work))
        # Kill once answers flow, so requests are caught in every stage: queued in the socket,
        # waiting for the broker's ack, acked but not yet committed and answered.
        async with asyncio.timeout(30):
            await first_answer.wait()
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        command.kill()
        await burst
        after_kill = Counter(o.value for o in history.outcomes().values())

        command.start()
        # The client's retry: every post without a definite ok, with the same key.
        for _ in range(MAX_ATTEMPTS):
            pending = {k for k, o in history.outcomes().items() if o is not Outcome.OK}
            if not pending:
                break
            await asyncio.gather(*(send(w) for w in work if w[1] in pending))

    await wait_caught_up(s, 60)
    conn = await asyncpg.connect(s.database_url)
    try:
        seen = await post_counts(conn, "s5 ")
    finally:
        await conn.close()
    events_per_post: dict[str, set[str]] = defaultdict(set)
    for _, _, raw in await topic_records(s):
        event = codec.decode(raw)
        if isinstance(event, PostCreated) and event.data.text.startswith("s5 "):
            events_per_post[event.data.text].add(str(event.id))
    on_topic_twice = sorted(t for t, ids in events_per_post.items() if len(ids) > 1)

    verdict = check(history.outcomes(), seen)
    report.append(
        verdict.summary(5)
        + f" after_kill={dict(after_kill)} attempts={len(history.attempts)}"
        + f" topic_duplicated={len(on_topic_twice)} seed={seed}"
    )
    print(report[-1])

    assert verdict.valid, verdict
    assert verdict.ok == POSTS, f"not every post was eventually acknowledged: {verdict}"
    assert not on_topic_twice, f"logical posts with several post.created events: {on_topic_twice}"
