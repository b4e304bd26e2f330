"""Tests for `machine.testing._fake_batches`: the fake Message Batches API, driven through the
real `anthropic` SDK in-process and over the loopback server. Time is an injected clock."""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from runjournal.machine.testing._fake_batches import _TRANSPORT
from runjournal.machine.testing.fake import (
    FAULTS,
    BatchFaults,
    FakeModel,
    FakeSpecError,
    parse_batch_spec,
    parse_spec,
    serve,
)

MODEL = "claude-haiku-4-5"
WALL = 1_700_000_000.0
DAY = 24 * 3600.0


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def params(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def items(count: int, prefix: str = "item") -> list[Any]:
    """`count` requests of a batch; `Any`, as the SDK's `Request` type a test also breaks."""
    return [{"custom_id": f"{prefix}-{i}", "params": params(f"Ticket {i}")} for i in range(count)]


def fake_at(clock: Clock, **settings: Any) -> FakeModel:
    return FakeModel(clock=clock, wall_clock=lambda: WALL + clock.now, **settings)


def results(client: anthropic.Anthropic, batch_id: str) -> list[Any]:
    return list(client.messages.batches.results(batch_id))


def raw_get(fake: FakeModel, path: str) -> httpx2.Response:
    with httpx2.Client(transport=fake.transport()) as http:
        return http.get("http://fake-anthropic.invalid" + path, headers={"x-api-key": "k"})


def test_create_answers_an_in_progress_batch() -> None:
    """Create answers a message_batch in progress whatever the processing time, counts all
    processing, expiring 24 hours after creation, without results_url."""
    clock = Clock()
    fake = fake_at(clock)  # processing_time 0: ended at the first look after the create
    raw = fake.client().messages.batches.with_raw_response.create(requests=items(3))
    body = raw.http_response.json()
    assert body["id"].startswith("msgbatch_") and body["type"] == "message_batch"
    assert body["processing_status"] == "in_progress"
    assert body["request_counts"] == {
        "processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0,
    }  # fmt: skip
    assert {k: body[k] for k in ("ended_at", "cancel_initiated_at", "archived_at")} == {
        "ended_at": None, "cancel_initiated_at": None, "archived_at": None,
    }  # fmt: skip
    assert body["results_url"] is None
    batch = raw.parse()
    assert batch.created_at == datetime.datetime.fromtimestamp(WALL, tz=datetime.UTC)
    assert batch.expires_at - batch.created_at == datetime.timedelta(days=1)
    assert raw.http_response.headers["request-id"].startswith("req_fake_")


def test_batch_ends_processing_time_after_creation() -> None:
    """By the injected clock: in progress until processing_time has passed, then ended with
    every item counted, ended_at that long after created_at, and a results_url."""
    clock = Clock()
    fake = fake_at(clock, processing_time=10.0)
    client = fake.client()
    batch = client.messages.batches.create(requests=items(4))
    clock.now = 9.99
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        results(client, batch.id)  # the SDK asks nothing without a results_url
    assert fake.batches[0].status == "in_progress"
    clock.now = 10.0
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.model_dump() == {
        "processing": 0, "succeeded": 4, "errored": 0, "canceled": 0, "expired": 0,
    }  # fmt: skip
    assert ended.ended_at is not None
    assert ended.ended_at - ended.created_at == datetime.timedelta(seconds=10)
    assert ended.results_url == (
        f"http://fake-anthropic.invalid/v1/messages/batches/{batch.id}/results"
    )


def test_results_before_the_end_are_refused() -> None:
    """Asked for directly, the results of a batch still processing are a 400."""
    clock = Clock()
    fake = fake_at(clock, processing_time=5.0)
    batch = fake.client().messages.batches.create(requests=items(2))
    response = raw_get(fake, f"/v1/messages/batches/{batch.id}/results")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_each_item_is_answered_as_messages_would_answer_it() -> None:
    """A succeeded item carries the content and usage `POST /v1/messages` gives its params,
    under an id of its own; the synchronous answers are not disturbed by the batch."""
    requests = items(6)
    fake = FakeModel()
    client = fake.client()
    batch = client.messages.batches.create(requests=requests)
    got = {line.custom_id: line.result for line in results(client, batch.id)}
    alone = FakeModel().client()
    for request in requests:
        result = got[request["custom_id"]]
        assert result.type == "succeeded"
        expected = alone.messages.create(**request["params"])
        assert result.message.content == expected.content
        assert result.message.usage == expected.usage
        assert result.message.id != expected.id
        # The same body sent synchronously now gets what a fresh fake gives it.
        assert client.messages.create(**request["params"]).id == expected.id
    usage = fake.batches[0].usage
    assert set(usage) == {r["custom_id"] for r in requests}
    assert usage["item-0"] == got["item-0"].message.usage.model_dump(exclude_none=True)


def test_results_come_in_a_seeded_order_not_the_request_order() -> None:
    """Every custom_id comes back once, in an order that is not the request order but is the
    same for the same seed."""
    requests = items(20)

    def order(seed: int) -> list[str]:
        client = FakeModel(faults=parse_spec(f"seed={seed}")).client()
        batch = client.messages.batches.create(requests=requests)
        return [line.custom_id for line in results(client, batch.id)]

    sent = [r["custom_id"] for r in requests]
    first = order(0)
    assert sorted(first) == sorted(sent) and len(set(first)) == len(sent)
    assert first != sent
    assert order(0) == first
    assert order(1) != first


def test_output_faults_reach_items_transport_faults_do_not() -> None:
    """A batch item meets the fake's output faults (it is an answer) but never a 5xx, reset or
    timeout (it is not an HTTP request)."""
    for spec, stop in (("truncated=1", "max_tokens"), ("500=0.5,reset=0.5", "end_turn")):
        client = FakeModel(faults=parse_spec(spec)).client()
        batch = client.messages.batches.create(requests=items(3))
        for line in results(client, batch.id):
            assert line.result.type == "succeeded"
            assert line.result.message.stop_reason == stop


def test_every_fault_is_either_a_transport_fault_or_an_output_fault() -> None:
    """A fault added to the fake is sorted on purpose: batch items skip the transport ones."""
    output = {"prose", "fence", "wrong_types", "missing", "empty", "truncated", "refusal"}
    assert set(FAULTS) == _TRANSPORT | output and not _TRANSPORT & output


def test_list_is_newest_first_and_paginated() -> None:
    """list pages newest first with limit, after_id and before_id, has_more, first_id and
    last_id, as the SDK's SyncPage reads them."""
    fake = FakeModel(processing_time=60.0)
    client = fake.client()
    created = [client.messages.batches.create(requests=items(1, f"b{i}")).id for i in range(5)]
    newest = created[::-1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest  # every page
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest[:2]
    assert (page.has_more, page.first_id, page.last_id) == (True, newest[0], newest[1])
    after = client.messages.batches.list(limit=2, after_id=newest[1])
    assert [b.id for b in after.data] == newest[2:4] and after.has_more
    last = client.messages.batches.list(limit=2, after_id=newest[3])
    assert [b.id for b in last.data] == newest[4:] and not last.has_more
    before = client.messages.batches.list(limit=2, before_id=newest[4])
    assert [b.id for b in before.data] == newest[2:4] and before.has_more
    assert [b.id for b in client.messages.batches.list(before_id=newest[4])] == newest[:4]
    assert [b.id for b in client.messages.batches.list()] == newest  # 20 by default
    for bad in ({"limit": 0}, {"limit": 1001}, {"after_id": "msgbatch_nope"}):
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.list(**bad)


def test_cancel_keeps_finished_items_and_cancels_the_rest() -> None:
    """A cancel makes the batch canceling; once the clock moves on it is ended as of the
    cancel, items finished by then answered and the others canceled. An ended batch cannot be
    canceled."""
    clock = Clock()
    fake = fake_at(clock, processing_time=10.0)
    client = fake.client()
    batch = client.messages.batches.create(requests=items(10))
    clock.now = 4.0
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.cancel_initiated_at - canceling.created_at == datetime.timedelta(seconds=4)
    assert client.messages.batches.retrieve(batch.id).processing_status == "canceling"
    clock.now = 4.5
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at == canceling.cancel_initiated_at
    counts = ended.request_counts
    assert (counts.succeeded, counts.canceled, counts.processing) == (4, 6, 0)
    kinds = [line.result.type for line in results(client, batch.id)]
    assert kinds == ["succeeded"] * 4 + ["canceled"] * 6  # in the order the items finished
    with pytest.raises(anthropic.BadRequestError, match="already finished"):
        client.messages.batches.cancel(batch.id)


def test_delete_only_after_the_end() -> None:
    """A batch still processing cannot be deleted; an ended one can, and is gone from
    retrieve and list but stays in the fake's log, marked deleted."""
    clock = Clock()
    fake = fake_at(clock, processing_time=1.0)
    client = fake.client()
    batch = client.messages.batches.create(requests=items(2))
    with pytest.raises(anthropic.BadRequestError, match="cancel it first"):
        client.messages.batches.delete(batch.id)
    clock.now = 1.0
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)
    assert list(client.messages.batches.list()) == []
    assert [(b.id, b.deleted) for b in fake.batches] == [(batch.id, True)]


def test_items_expire_at_24_hours() -> None:
    """A batch slower than 24 hours ends at 24 hours; the items not finished by then expired."""
    clock = Clock()
    fake = fake_at(clock, processing_time=2 * DAY)
    client = fake.client()
    batch = client.messages.batches.create(requests=items(4))
    clock.now = DAY - 1
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    clock.now = DAY
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.succeeded, counts.expired) == (2, 2)


def test_results_are_gone_after_29_days() -> None:
    """29 days after creation the batch is archived and its results are a 404."""
    clock = Clock()
    fake = fake_at(clock)
    client = fake.client()
    batch = client.messages.batches.create(requests=items(1))
    assert len(results(client, batch.id)) == 1
    clock.now = 29 * DAY
    archived = client.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None
    assert archived.archived_at - archived.created_at == datetime.timedelta(days=29)
    with pytest.raises(anthropic.NotFoundError):
        results(client, batch.id)


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "requests: List should have at least 1 item after validation, not 0"),
        (
            [*items(1), {"custom_id": "item-0", "params": params("again")}],
            "requests.1.custom_id: 'item-0' is not unique within the batch",
        ),
        (
            [{"custom_id": "x" * 65, "params": params("long")}],
            "requests.0.custom_id: String should have at most 64 characters",
        ),
        (
            [{"custom_id": "not ok!", "params": params("spaces")}],
            "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        ),
        ([{"custom_id": "", "params": params("x")}], "String should have at least 1 character"),
        ([{"custom_id": "a", "params": "hello"}], "requests.0.params: Input should be a valid"),
        ([{"custom_id": "a"}], "requests.0.params: Field required"),
        (
            [{"custom_id": "a", "params": params("x"), "extra": 1}],
            "requests.0.extra: Extra inputs are not permitted",
        ),
    ],
    ids=["empty", "duplicate", "too-long", "pattern", "blank", "params", "no-params", "extra"],
)
def test_a_malformed_create_is_a_400_and_makes_no_batch(requests: list[Any], message: str) -> None:
    """What is wrong with the shape of a create is a 400 invalid_request_error at once, in
    the API's words, and no batch exists."""
    fake = FakeModel()
    with pytest.raises(anthropic.BadRequestError) as caught:
        fake.client().messages.batches.create(requests=requests)
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert message in caught.value.message
    assert fake.batches == []


def test_more_than_100000_requests_is_a_400() -> None:
    """The reference's maxItems: 100000."""
    fake = FakeModel()
    body = {"requests": [{"custom_id": f"r{i}", "params": {}} for i in range(100_001)]}
    reply = fake._batch_request(
        "POST", "http://x/v1/messages/batches", json.dumps(body).encode(), {"x-api-key": "k"}
    )[1]
    assert reply.status == 400  # type: ignore[union-attr]
    assert "at most 100000 items" in reply.body["error"]["message"]  # type: ignore[union-attr]
    assert fake.batches == []


def test_a_bad_params_item_comes_back_errored() -> None:
    """Params are checked as the guide says, when the batch ends: an item the fake would
    refuse as a `POST /v1/messages` body comes back errored with that refusal; the rest
    succeed."""
    requests: list[Any] = [
        {"custom_id": "good", "params": params("fine")},
        {"custom_id": "no-model", "params": params("x", model="claude-nonexistent-1")},
        {"custom_id": "no-max", "params": {"model": MODEL, "messages": []}},
        {"custom_id": "too-long", "params": params("x", max_tokens=10_000_000)},
    ]
    client = FakeModel().client()
    batch = client.messages.batches.create(requests=requests)
    got = {line.custom_id: line.result for line in results(client, batch.id)}
    assert got["good"].type == "succeeded"
    errors = {}
    for custom_id in ("no-model", "no-max", "too-long"):
        result = got[custom_id]
        assert result.type == "errored"
        errors[custom_id] = (result.error.error.type, result.error.error.message)
    assert errors["no-model"] == ("not_found_error", "model: claude-nonexistent-1")
    assert errors["no-max"] == ("invalid_request_error", "max_tokens: Field required")
    assert errors["too-long"][0] == "invalid_request_error"
    assert "max_tokens: 10000000 >" in errors["too-long"][1]
    assert client.messages.batches.retrieve(batch.id).request_counts.errored == 3


def test_expired_and_errored_faults() -> None:
    """batch_faults make some items expired and some errored (an api_error), the same for
    the same seed; only the succeeded ones carry usage."""
    fake = FakeModel(batch_faults=BatchFaults(expired=0.3, errored=0.3))
    client = fake.client()
    batch = client.messages.batches.create(requests=items(40))
    lines = results(client, batch.id)
    kinds = {line.custom_id: line.result.type for line in lines}
    assert set(kinds.values()) == {"succeeded", "errored", "expired"}
    for line in lines:
        if line.result.type == "errored":
            assert line.result.error.error.type == "api_error"
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert counts.expired == list(kinds.values()).count("expired")
    assert counts.errored == list(kinds.values()).count("errored")
    assert set(fake.batches[0].usage) == {k for k, v in kinds.items() if v == "succeeded"}
    again = FakeModel(batch_faults=BatchFaults(expired=0.3, errored=0.3)).client()
    repeat = results(again, again.messages.batches.create(requests=items(40)).id)
    assert {line.custom_id: line.result.type for line in repeat} == kinds
    everything = FakeModel(batch_faults=BatchFaults(expired=1.0)).client()
    gone = everything.messages.batches.create(requests=items(3))
    assert {line.result.type for line in results(everything, gone.id)} == {"expired"}


def test_a_lost_create_leaves_a_batch_that_list_shows() -> None:
    """With lost=1 the batch is created but the create times out (or its connection resets);
    list shows it, with its request count, and the fake's log marks its create unanswered."""
    fake = FakeModel(processing_time=60.0, batch_faults=BatchFaults(lost=1.0))
    client = fake.client()
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.batches.create(requests=items(3, "run1"))
    [listed] = client.messages.batches.list()
    assert listed.processing_status == "in_progress" and listed.request_counts.processing == 3
    [held] = fake.batches
    assert (held.id, held.answered, held.custom_ids) == (
        listed.id, False, ("run1-0", "run1-1", "run1-2"),
    )  # fmt: skip
    fake.set_batch_faults(BatchFaults(lost=1.0, lost_as="reset"))
    with pytest.raises(anthropic.APIConnectionError) as caught:
        client.messages.batches.create(requests=items(3, "run2"))
    assert not isinstance(caught.value, anthropic.APITimeoutError)
    fake.set_batch_faults(BatchFaults())
    answered = client.messages.batches.create(requests=items(3, "run3"))
    assert [(b.id == answered.id, b.answered) for b in fake.batches] == [
        (False, False), (False, False), (True, True),
    ]  # fmt: skip
    assert fake.batch_faults == BatchFaults()


def test_the_same_create_twice_makes_two_batches() -> None:
    """The API has no idempotency key: a create sent again is a second batch."""
    fake = FakeModel()
    client = fake.client()
    first = client.messages.batches.create(requests=items(2))
    second = client.messages.batches.create(requests=items(2))
    assert first.id != second.id
    assert len(fake.batches) == 2


def test_batch_calls_need_a_key() -> None:
    """Like every call to the API, a batch call without a key is a 401."""
    client = FakeModel().client()
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.batches.list(extra_headers={"Authorization": anthropic.omit})


def test_concurrent_creates_are_each_one_batch() -> None:
    """Creates from many threads at once each make one batch with an id of its own."""
    fake = FakeModel(processing_time=1.0)
    client = fake.client()
    ids: list[str] = []

    def create() -> None:
        for _ in range(5):
            ids.append(client.messages.batches.create(requests=items(2)).id)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 40
    assert sorted(b.id for b in fake.batches) == sorted(ids)


def test_parse_batch_spec() -> None:
    """The batch faults as a spec string; bad ones raise FakeSpecError."""
    assert parse_batch_spec("none") == BatchFaults()
    assert parse_batch_spec("expired=0.1, errored=0.2,lost=1,lost_as=reset") == BatchFaults(
        expired=0.1, errored=0.2, lost=1.0, lost_as="reset"
    )
    for bad in (
        "late=0.1", "expired", "expired=x", "expired=2", "lost=0.1,lost=0.2",
        "lost_as=never", "expired=0.6,errored=0.6", "expired=nan",
    ):  # fmt: skip
        with pytest.raises(FakeSpecError):
            parse_batch_spec(bad)


def test_over_the_loopback_server(tmp_path: Path) -> None:
    """Through `serve`, the SDK creates, polls, lists and reads results (results_url points
    at the server), a lost create's connection is reset, and each call is one log line."""
    log = tmp_path / "requests.jsonl"
    fake = FakeModel(batch_faults=BatchFaults(lost=1.0, lost_as="reset"))
    with serve(fake, log=log) as server:
        client = anthropic.Anthropic(api_key="k-secret", base_url=server.url, max_retries=0)
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.batches.create(requests=items(2, "lost"))
        fake.set_batch_faults(BatchFaults())
        batch = client.messages.batches.create(requests=items(3))
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert ended.results_url == f"{server.url}/v1/messages/batches/{batch.id}/results"
        assert len(list(client.messages.batches.list())) == 2
        lines = results(client, batch.id)
        assert sorted(line.custom_id for line in lines) == ["item-0", "item-1", "item-2"]
        assert {line.result.type for line in lines} == {"succeeded"}
        deleted = client.messages.batches.delete(batch.id)
        assert deleted.type == "message_batch_deleted"
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["endpoint"], line["status"]) for line in logged] == [
        ("create", None), ("create", 200), ("retrieve", 200), ("list", 200),
        ("retrieve", 200), ("results", 200), ("delete", 200),
    ]  # fmt: skip
    assert logged[0]["fault"] == "lost" and logged[0]["batch_id"] == fake.batches[0].id
    assert "k-secret" not in log.read_text()
