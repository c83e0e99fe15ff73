"""A window store on DynamoDB: no server to run, shared by every consumer of a queue.

One item per storage key (partition key ``pk``)::

    state        "I" while a consumer holds the lease, "D" once completed
    deadline_ms  when the lease or the window ends (the store's clock, epoch ms)
    token        the fencing token of the claim (I only)
    fingerprint  the payload fingerprint, for payload validation
    expires_at   deadline in epoch seconds: the table's TTL attribute

Every decision is a conditional write, so DynamoDB arbitrates races between
consumers per item, with the same semantics as the Redis scripts:

* claim: ``PutItem`` of an I record if ``attribute_not_exists(pk) OR
  deadline_ms <= :now``; when the condition fails, the item returned with the
  failure (``ReturnValuesOnConditionCheckFailure=ALL_OLD``) says DUPLICATE (D)
  or IN_FLIGHT (I) and carries the fingerprint on record; in sliding mode a
  DUPLICATE sighting extends the D record (``UpdateItem``, conditional on it
  still being that live D record);
* complete: ``PutItem`` of a D record if nobody holds the key (absent or
  expired) or the caller's token still holds it;
* extend: ``UpdateItem`` of the deadline if the caller's token still holds a
  live lease on it;
* release: ``DeleteItem`` if the caller's token still holds a live lease on it.

A claim that finds its own token (botocore re-sent it after a lost reply) is
CLAIMED.

Expiry is decided by ``deadline_ms`` against the store's clock, in every
condition: TTL deletion is housekeeping only (DynamoDB deletes expired items up
to about 48 hours late; moto never does).

**Clock skew.** DynamoDB has no server clock a condition can read, so "now" is
the consumer's clock. ``max_clock_skew_s`` is the largest difference allowed
between any two consumers' clocks: a record (lease or window) is taken over
only once the taker's clock is ``max_clock_skew_s`` past its deadline. Within
that bound no lease is taken over while its holder still counts it live, and
every window lasts at least ``window_s`` of real time (up to ``max_clock_skew_s``
longer). A holder extends and releases on its own clock, exactly at its
deadline. Beyond the bound, the guarantee is lost by the excess.

**Why one conditional write per key.** DynamoDB has no batched *conditional*
write: ``BatchWriteItem`` takes no conditions, and ``TransactWriteItems``
(one call for up to 100 items) costs two write units per item and cancels the
whole batch when any one condition fails, i.e. on every duplicate and on every
race with another consumer, exactly when deduplication matters, so it would
retry instead of deciding. Reading first (``BatchGetItem``) cannot replace the
conditional write, which stays the arbiter; it would only save writes on
duplicates, at one extra call and one read unit per key on every batch,
dearer than it saves unless more than about a fifth of events are duplicates
(a read unit costs a fifth of a write unit on demand). So a phase is one
conditional write per distinct key (one write unit for these small items),
issued concurrently (``max_workers``): a batch costs about one round trip of
latency and ``len(batch)`` write units.

Unreachable endpoints, timeouts, throttling and server errors that outlast
botocore's retries raise :class:`~dedup.errors.StoreUnavailableError`; a
missing table, denied access or bad credentials raise a
:class:`~dedup.errors.ConfigurationError` saying what to fix.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from dedup.aws_errors import error_code, explain
from dedup.clock import Clock
from dedup.errors import ConfigurationError
from dedup.extras import require
from dedup.stores.base import DEFAULT_PREFIX, ClaimOutcome, ClaimStatus, WindowStore

_botocore = require("botocore.exceptions")  # dedup[aws]: this module loads only for dynamodb:// stores
ClientError, ConnectionError, HTTPClientError = (
    _botocore.ClientError, _botocore.ConnectionError, _botocore.HTTPClientError)

T = TypeVar("T")

TTL_ATTRIBUTE = "expires_at"
# ClientError codes that mean "DynamoDB cannot serve this now" once botocore's retries are spent.
UNAVAILABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
})
DEFAULT_MAX_WORKERS = 10  # an SQS batch: every key's write in flight at once
# Hosts synced by NTP or the Amazon Time Sync Service stay within milliseconds of each other.
DEFAULT_MAX_CLOCK_SKEW_S = 1.0
TABLE_WAIT_TIMEOUT_S = 300.0
TABLE_POLL_S = 1.0

_NAMES = {"#state": "state", "#deadline": "deadline_ms", "#token": "token"}
_CLAIMABLE = "attribute_not_exists(pk) OR #deadline <= :takeover"
_HELD_BY_TOKEN = "#state = :held AND #token = :token"
_LIVE_HELD_BY_TOKEN = f"{_HELD_BY_TOKEN} AND #deadline > :now"


class DynamoDBUnavailable(Exception):
    """DynamoDB refused a request after botocore's retries (throttling or a server error)."""

    def __init__(self, table: str, error: ClientError):
        self.table = table
        self.code = error_code(error)
        super().__init__(f"{self.code} on table {table} after retries: {error}")


class DynamoDBStore(WindowStore):
    """A window store on a DynamoDB table with partition key ``pk`` (string).

    ``client`` is a boto3 DynamoDB client (thread-safe: the writes of a phase are
    issued from up to ``max_workers`` threads); ``close_client`` closes it with
    the store. Provision the table with :func:`ensure_table`. Several
    applications may share one table through distinct ``prefix`` values.
    ``max_clock_skew_s`` bounds the consumers' clock disagreement (see the module
    docstring); 0 takes a record over exactly at its deadline (one clock).
    """

    name = "dynamodb"
    unavailable_errors = (ConnectionError, HTTPClientError, DynamoDBUnavailable)

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
        max_workers: int = DEFAULT_MAX_WORKERS,
        close_client: bool = False,
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
    ) -> None:
        super().__init__(clock=clock, prefix=prefix)
        if not table_name:
            raise ConfigurationError("a DynamoDB store needs a table name")
        if not (isinstance(max_clock_skew_s, int | float) and 0 <= max_clock_skew_s < math.inf):
            raise ConfigurationError(f"max_clock_skew_s must be finite and >= 0, got {max_clock_skew_s!r}")
        self.max_clock_skew_ms = round(max_clock_skew_s * 1000)
        if max_workers < 1:
            raise ConfigurationError(f"max_workers must be at least 1, got {max_workers}")
        self.client = client
        self.table_name = table_name
        self._close_client = close_client
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="dedup-dynamodb") \
            if max_workers > 1 else None

    def describe(self) -> str:
        meta = self.client.meta
        return f"dynamodb table {self.table_name} (region {meta.region_name}, endpoint {meta.endpoint_url})"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._close_client:
            self.client.close()

    # ---- hooks ------------------------------------------------------------

    def _ping(self) -> None:
        self._request(self.client.describe_table)

    def _claim(self, skeys, tokens, fingerprints, now_ms, lease_ms, slide_ms):
        first: dict[str, int] = {}
        for i, skey in enumerate(skeys):
            first.setdefault(skey, i)
        unique = list(first.values())
        results = self._each(
            lambda i: self._claim_one(skeys[i], tokens[i], fingerprints[i], now_ms, lease_ms, slide_ms),
            unique,
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            # Undo the claims granted before the failure, so the undecided batch does not
            # hold its keys IN_FLIGHT for a lease; best effort, the lease bounds it.
            granted = [(skeys[i], tokens[i], fingerprints[i]) for i, r in zip(unique, results, strict=True)
                       if isinstance(r, ClaimOutcome) and r.status is ClaimStatus.CLAIMED]
            if granted:
                self._each(lambda owned: self._release_one(*owned, now_ms), granted)
            raise failure
        by_key = {skeys[i]: r for i, r in zip(unique, results, strict=True)}
        out = []
        for i, skey in enumerate(skeys):
            outcome = by_key[skey]
            if first[skey] != i and outcome.status is ClaimStatus.CLAIMED:
                outcome = ClaimOutcome(ClaimStatus.IN_FLIGHT, outcome.fingerprint)  # held by its first copy
            out.append(outcome)
        return out

    def _complete(self, owned, now_ms, window_ms):
        return self._all(self._each(lambda o: self._complete_one(*o, now_ms, window_ms), owned))

    def _extend(self, owned, now_ms, lease_ms):
        return self._all(self._each(lambda o: self._extend_one(*o, now_ms, lease_ms), owned))

    def _settle(self, done, held, now_ms, window_ms, lease_ms):
        """Every completion and extension issued at once: one round trip of latency."""
        def one(job: tuple[bool, tuple[str, str, str]]) -> bool:
            completing, owned = job
            return (self._complete_one(*owned, now_ms, window_ms) if completing
                    else self._extend_one(*owned, now_ms, lease_ms))

        results = self._all(self._each(one, [(True, o) for o in done] + [(False, o) for o in held]))
        return results[:len(done)], results[len(done):]

    def _release(self, owned, now_ms):
        return self._all(self._each(lambda o: self._release_one(*o, now_ms), owned))

    # ---- one item ---------------------------------------------------------

    def _claim_one(self, skey: str, token: str, fp: str, now_ms: int, lease_ms: int, slide_ms: int
                   ) -> ClaimOutcome:
        try:
            self._request(
                self.client.put_item,
                Item=_record(skey, "I", now_ms + lease_ms, fp, token),
                ConditionExpression=_CLAIMABLE,
                ExpressionAttributeNames={"#deadline": "deadline_ms"},
                ExpressionAttributeValues={":takeover": {"N": str(now_ms - self.max_clock_skew_ms)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return ClaimOutcome(ClaimStatus.CLAIMED, fp)
        except _ConditionFailed as failed:
            old = failed.item
        rec_fp = old.get("fingerprint", {}).get("S", "")
        if old["state"]["S"] != "D":
            mine = old.get("token", {}).get("S") == token  # our own write, re-sent by botocore
            return ClaimOutcome(ClaimStatus.CLAIMED if mine else ClaimStatus.IN_FLIGHT, rec_fp)
        if slide_ms:
            deadline_ms = now_ms + slide_ms
            # Extend the window, unless the record changed since it was seen done: it was a
            # duplicate when claimed, and whoever changed it since decides the rest.
            with contextlib.suppress(_ConditionFailed):
                self._request(
                    self.client.update_item,
                    Key={"pk": {"S": skey}},
                    UpdateExpression="SET #deadline = :deadline, #ttl = :ttl",
                    ConditionExpression="#state = :done AND #deadline > :takeover",
                    ExpressionAttributeNames={"#state": "state", "#deadline": "deadline_ms",
                                              "#ttl": TTL_ATTRIBUTE},
                    ExpressionAttributeValues={
                        ":deadline": {"N": str(deadline_ms)}, ":ttl": {"N": str(_epoch_s(deadline_ms))},
                        ":done": {"S": "D"}, ":takeover": {"N": str(now_ms - self.max_clock_skew_ms)},
                    },
                )
        return ClaimOutcome(ClaimStatus.DUPLICATE, rec_fp)

    def _complete_one(self, skey: str, token: str, fp: str, now_ms: int, window_ms: int) -> bool:
        try:
            self._request(
                self.client.put_item,
                Item=_record(skey, "D", now_ms + window_ms, fp),
                ConditionExpression=f"{_CLAIMABLE} OR ({_HELD_BY_TOKEN})",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={":takeover": {"N": str(now_ms - self.max_clock_skew_ms)},
                                           ":held": {"S": "I"}, ":token": {"S": token}},
            )
            return True
        except _ConditionFailed:
            return False

    def _extend_one(self, skey: str, token: str, _fp: str, now_ms: int, lease_ms: int) -> bool:
        deadline_ms = now_ms + lease_ms
        try:
            self._request(
                self.client.update_item,
                Key={"pk": {"S": skey}},
                UpdateExpression="SET #deadline = :deadline, #ttl = :ttl",
                ConditionExpression=_LIVE_HELD_BY_TOKEN,
                ExpressionAttributeNames={**_NAMES, "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":deadline": {"N": str(deadline_ms)}, ":ttl": {"N": str(_epoch_s(deadline_ms))},
                    ":held": {"S": "I"}, ":token": {"S": token}, ":now": {"N": str(now_ms)},
                },
            )
            return True
        except _ConditionFailed:
            return False

    def _release_one(self, skey: str, token: str, _fp: str, now_ms: int) -> bool:
        try:
            self._request(
                self.client.delete_item,
                Key={"pk": {"S": skey}},
                ConditionExpression=_LIVE_HELD_BY_TOKEN,
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={":held": {"S": "I"}, ":token": {"S": token},
                                           ":now": {"N": str(now_ms)}},
            )
            return True
        except _ConditionFailed:
            return False

    # ---- plumbing ---------------------------------------------------------

    def _request(self, operation: Callable[..., Any], **params: Any) -> Any:
        """Call ``operation`` on the table; failures become the store's error types."""
        try:
            return operation(TableName=self.table_name, **params)
        except ClientError as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                raise _ConditionFailed(exc.response.get("Item", {})) from None
            if code in UNAVAILABLE_CODES:
                raise DynamoDBUnavailable(self.table_name, exc) from exc
            clear = explain(exc, self.client, operation.__name__, f"table {self.table_name}")
            if clear is not None:
                raise clear from exc
            raise

    def _each(self, fn: Callable[[Any], T], items: list[Any]) -> list[T | BaseException]:
        """``fn`` over ``items`` (concurrently when there is a pool); each result or exception."""
        if self._pool is None or len(items) < 2:
            return [_capture(fn, item) for item in items]
        futures: list[Future] = [self._pool.submit(fn, item) for item in items]
        return [f.exception() or f.result() for f in futures]

    @staticmethod
    def _all(results: list[T | BaseException]) -> list[T]:
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
        return results  # type: ignore[return-value]


class _ConditionFailed(Exception):
    """A conditional write found the item in another state; ``item`` is the item on record."""

    def __init__(self, item: dict[str, Any]):
        super().__init__("conditional check failed")
        self.item = item


def _capture(fn: Callable[[Any], T], item: Any) -> T | BaseException:
    try:
        return fn(item)
    except Exception as exc:
        return exc


def _record(skey: str, state: str, deadline_ms: int, fp: str, token: str | None = None) -> dict[str, Any]:
    item = {
        "pk": {"S": skey},
        "state": {"S": state},
        "deadline_ms": {"N": str(deadline_ms)},
        "fingerprint": {"S": fp},
        TTL_ATTRIBUTE: {"N": str(_epoch_s(deadline_ms))},
    }
    if token is not None:
        item["token"] = {"S": token}
    return item


def _epoch_s(deadline_ms: int) -> int:
    return math.ceil(deadline_ms / 1000)


# ---- provisioning -----------------------------------------------------------


def ensure_table(client: Any, table_name: str, *, timeout_s: float = TABLE_WAIT_TIMEOUT_S) -> None:
    """Create the table if missing (on-demand billing, ``pk`` string key), wait until it is
    ACTIVE, and enable TTL on ``expires_at``. Idempotent; an existing table with another
    key schema is a :class:`ConfigurationError`."""
    resource = f"table {table_name}"
    try:
        client.create_table(
            TableName=table_name,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise explain(exc, client, "CreateTable", resource) or exc from exc
    table = _wait_for(client, table_name, lambda t: t is not None and t["TableStatus"] == "ACTIVE", timeout_s)
    if table["KeySchema"] != [{"AttributeName": "pk", "KeyType": "HASH"}]:
        raise ConfigurationError(
            f"{resource} exists with key schema {table['KeySchema']}; a window store needs a "
            "single string partition key named 'pk': pick another table name"
        )
    ttl = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    elif ttl.get("AttributeName") != TTL_ATTRIBUTE:
        raise ConfigurationError(
            f"{resource} has TTL on {ttl.get('AttributeName')!r}, not {TTL_ATTRIBUTE!r}: "
            "its items would never be cleaned up; pick another table name"
        )


def delete_table(client: Any, table_name: str, *, timeout_s: float = TABLE_WAIT_TIMEOUT_S) -> bool:
    """Delete the table and wait until it is gone; ``False`` when it did not exist."""
    try:
        client.delete_table(TableName=table_name)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return False
        raise explain(exc, client, "DeleteTable", f"table {table_name}") or exc from exc
    _wait_for(client, table_name, lambda t: t is None, timeout_s)
    return True


def _wait_for(client: Any, table_name: str, done: Callable[[dict | None], bool], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            table = client.describe_table(TableName=table_name)["Table"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            table = None
        if done(table):
            return table
        if time.monotonic() >= deadline:
            raise ConfigurationError(f"table {table_name} did not settle within {timeout_s:.0f} s: {table}")
        time.sleep(TABLE_POLL_S)


# ---- dynamodb://TABLE -------------------------------------------------------


def table_of(spec: str) -> str:
    """The table named by ``dynamodb://TABLE[?...]``; one parse for the store and for ``provision``."""
    parts = urlsplit(spec)
    table = parts.netloc or parts.path.lstrip("/")
    if parts.scheme != "dynamodb" or not table:
        raise ConfigurationError(f"expected dynamodb://TABLE, got {spec!r}")
    return table


def from_url(spec: str, *, clock: Clock | None = None, prefix: str = DEFAULT_PREFIX) -> DynamoDBStore:
    """Open ``dynamodb://TABLE[?region=REGION][&max_clock_skew_s=S]`` with boto3's default configuration.

    The endpoint and credentials come from the environment (``AWS_ENDPOINT_URL``
    points it at a moto server); the table must exist (:func:`ensure_table`).
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    table = table_of(spec)
    query = parse_qs(urlsplit(spec).query)
    region = query.get("region", [None])[0]
    try:
        skew_s = float(query.get("max_clock_skew_s", [DEFAULT_MAX_CLOCK_SKEW_S])[0])
    except ValueError:
        raise ConfigurationError(f"max_clock_skew_s in {spec!r} must be a number of seconds") from None
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=5,
                    max_pool_connections=DEFAULT_MAX_WORKERS)
    try:
        client = boto3.client("dynamodb", region_name=region, config=config)
    except NoRegionError as exc:
        raise ConfigurationError(
            f"{spec} needs an AWS region: set AWS_DEFAULT_REGION or add ?region=REGION"
        ) from exc
    return DynamoDBStore(client, table, clock=clock, prefix=prefix, close_client=True,
                         max_clock_skew_s=skew_s)
