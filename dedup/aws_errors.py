"""Turn the AWS errors users hit into clear configuration errors.

The tutorial's "Common Errors" (``QueueUrl not found``, ``AccessDenied``) surface
as botocore stack traces; here they become a :class:`~dedup.errors.ConfigurationError`
saying which resource, which region and endpoint, and what to check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dedup.errors import ConfigurationError

QUEUE_NOT_FOUND_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
NOT_FOUND_CODES = QUEUE_NOT_FOUND_CODES | {"ResourceNotFoundException"}
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "AuthorizationError"})
BAD_CREDENTIALS_CODES = frozenset({
    "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId",
})


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def where(client: Any) -> str:
    """``region R, endpoint E`` of a boto3 client, for error messages."""
    return f"region {client.meta.region_name}, endpoint {client.meta.endpoint_url}"


def explain(exc: BaseException, client: Any, action: str, resource: str) -> ConfigurationError | None:
    """A :class:`ConfigurationError` for a misconfiguration, ``None`` for other errors."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, NoRegionError

    target = where(client)
    if isinstance(exc, NoCredentialsError | NoRegionError):
        return ConfigurationError(f"{action} on {resource}: {exc} ({target}); configure AWS credentials "
                                  "and a region, or use the embedded AWS (--aws embedded)")
    if isinstance(exc, EndpointConnectionError):
        return ConfigurationError(f"{action} on {resource}: cannot reach {exc.kwargs.get('endpoint_url')} "
                                  f"({target}); if AWS_ENDPOINT_URL points at a `dedup aws-server`, "
                                  "is it still running?")
    code = error_code(exc)
    if code in QUEUE_NOT_FOUND_CODES:
        return ConfigurationError(
            f"queue {resource} does not exist ({target}): check the queue name or URL, that the "
            "region is the one it was created in (AWS_DEFAULT_REGION / --region), and that it was "
            "provisioned (`dedup provision`)")
    if code == "ResourceNotFoundException":
        return ConfigurationError(f"{action}: {resource} does not exist ({target}): {_message(exc)}; "
                                  "check the name and region, or run `dedup provision`")
    if code in ACCESS_DENIED_CODES:
        return ConfigurationError(
            f"access denied: {action} on {resource} ({target}): the caller's IAM policy must allow "
            f"{action} on exactly this resource (`dedup provision --print-policies` prints the "
            f"least-privilege documents): {_message(exc)}")
    if code in BAD_CREDENTIALS_CODES:
        return ConfigurationError(f"{action} on {resource}: AWS rejected the credentials ({code}, "
                                  f"{target}): refresh them or check AWS_PROFILE")
    return None


@contextlib.contextmanager
def explained(client: Any, action: str, resource: str) -> Iterator[None]:
    """Re-raise misconfiguration errors from the block as :class:`ConfigurationError`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        clear = explain(exc, client, action, resource)
        if clear is None:
            raise
        raise clear from exc


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", exc))
