"""Fixtures for DynamoDB stores over moto's HTTP server (not the in-process mock).

``dynamodb_aws`` is the session's :class:`~dedup.aws.embedded.EmbeddedAWS`;
``dynamodb_table`` provisions a fresh table per test (moto's state is
process-wide, and other test areas reset it between their tests, so no table
outlives its test); ``dynamodb_store_factory`` builds stores on that table.
"""

from __future__ import annotations

import functools
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dedup.aws.dynamodb_store import DynamoDBStore, delete_table, ensure_table
from dedup.aws.embedded import EmbeddedAWS
from dedup.clock import Clock
from dedup.stores import WindowStore

# moto checks a write's condition and then applies it as two Python steps, and its
# HTTP server handles requests on concurrent threads: unlike DynamoDB, a conditional
# write is not atomic per item. Serialising moto's item writes restores DynamoDB's
# guarantee, so a race test exercises the store's conditions, not moto's threading.
_MOTO_ITEM_WRITES = ("put_item", "update_item", "delete_item")


def _serialised(method: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    @functools.wraps(method)
    def write(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return write


@pytest.fixture(scope="session")
def dynamodb_aws(embedded_aws: EmbeddedAWS) -> Iterator[EmbeddedAWS]:
    """The session's moto server, with atomic item writes for the rest of the session."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.Lock()
    with pytest.MonkeyPatch.context() as patch:
        for name in _MOTO_ITEM_WRITES:
            patch.setattr(DynamoDBBackend, name, _serialised(getattr(DynamoDBBackend, name), lock))
        yield embedded_aws


@pytest.fixture(scope="session")
def dynamodb_client(dynamodb_aws: EmbeddedAWS) -> Any:
    """One boto3 DynamoDB client of the session's server (clients are thread-safe)."""
    return dynamodb_aws.client("dynamodb")


@pytest.fixture
def dynamodb_table(dynamodb_client: Any) -> Iterator[str]:
    """The name of a window table made for this test, deleted after it."""
    name = f"dedup-test-{uuid.uuid4().hex[:12]}"
    ensure_table(dynamodb_client, name)
    yield name
    delete_table(dynamodb_client, name)


@pytest.fixture
def dynamodb_store_factory(dynamodb_client: Any, dynamodb_table: str
                           ) -> Iterator[Callable[[Clock], WindowStore]]:
    """``factory(clock) -> DynamoDBStore`` on the test's fresh table.

    Each store gets its own prefix, so the stores made in one test are apart, as
    fresh stores are (consumers sharing a window share one store's prefix). The
    stores of a test share one clock, so they allow no clock skew: records are
    taken over exactly at their deadline, as on the other backends.
    """
    prefixes = (f"t{n}:" for n in itertools.count())
    stores: list[WindowStore] = []

    def factory(clock: Clock) -> WindowStore:
        store = DynamoDBStore(dynamodb_client, dynamodb_table, clock=clock, prefix=next(prefixes),
                              max_clock_skew_s=0)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()
