"""Delivery policy: what becomes of a message once its handler has run.

Pure functions and names, shared by every :class:`~imgpipe.broker.protocol.Broker`
implementation so that they all treat a handler's outcome the same way:

* the handler returns: **ack** (its effects are stored);
* :class:`~imgpipe.errors.Unavailable` (a backend cannot be reached at
  all): **hold** the message and run the handler again after a back-off,
  without counting an attempt, because the message is not at fault;
* :class:`~imgpipe.errors.PermanentError`: **dead-letter** at once;
* anything else: **retry** after the attempt's delay, until the policy's
  attempts are used up; then **dead-letter**.

A message carries its attempt number in the :data:`ATTEMPT` header; a
dead-lettered one carries why in the ``x-imgpipe-*`` headers below, and a
replayed one the history of its earlier dead-letterings.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imgpipe.errors import ImgpipeError, PermanentError, Unavailable
from imgpipe.runtime.logs import redact

ATTEMPT = "x-imgpipe-attempt"
REASON = "x-imgpipe-reason"
ERROR = "x-imgpipe-error"
QUEUE = "x-imgpipe-queue"
DEAD_LETTERED_AT = "x-imgpipe-dead-lettered-at"
REPLAYS = "x-imgpipe-replays"
HISTORY = "x-imgpipe-history"

DEFAULT_DELAYS: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)


class Action(enum.Enum):
    ACK = "ack"
    HOLD = "hold"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class RetryPolicy:
    """Delays (seconds) before the 2nd, 3rd, ... attempt; attempts are bounded by them."""

    delays: tuple[float, ...] = DEFAULT_DELAYS
    hold_max_delay: float = 10.0

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def delay_before(self, attempt: int) -> float:
        """The delay before attempt number ``attempt`` (2 or more)."""
        return self.delays[min(attempt, self.max_attempts) - 2]

    def hold_delay(self, holds: int) -> float:
        """Back-off before running a held message's handler again."""
        return float(min(0.5 * 2**holds, self.hold_max_delay))


def parse_delays(text: str) -> tuple[float, ...]:
    """``"1,5,30"`` → ``(1.0, 5.0, 30.0)``; refuses negative or missing numbers."""
    delays = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    if not delays or any(d < 0 for d in delays):
        raise ValueError("expected comma-separated non-negative seconds, e.g. 1,5,30,120")
    return delays


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: str | None = None
    message: str | None = None


def describe(error: BaseException) -> tuple[str, str]:
    """A reason code and a sentence for ``error``."""
    if isinstance(error, ImgpipeError):
        return error.reason, error.message
    return "internal_error", f"{type(error).__name__}: {error}"[:500]


def decide(
    error: BaseException | None, attempt: int, policy: RetryPolicy, *, holds: int = 0
) -> Decision:
    """What to do with a message whose handler ended with ``error`` (None: success)."""
    if error is None:
        return Decision(Action.ACK)
    reason, message = describe(error)
    if isinstance(error, Unavailable):
        delay = policy.hold_delay(holds)
        if error.wait_hint is not None:
            delay = max(delay, min(float(error.wait_hint), policy.hold_max_delay))
        return Decision(Action.HOLD, delay, reason, message)
    if isinstance(error, PermanentError):
        return Decision(Action.DEAD_LETTER, 0.0, reason, message)
    if attempt >= policy.max_attempts:
        return Decision(Action.DEAD_LETTER, 0.0, reason,
                        f"gave up after {attempt} attempts: {message}")
    return Decision(Action.RETRY, policy.delay_before(attempt + 1), reason, message)


def attempt_of(headers: Mapping[str, Any]) -> int:
    """The attempt number a message carries (1 when it carries none)."""
    try:
        return max(1, int(headers.get(ATTEMPT, 1)))
    except (TypeError, ValueError):
        return 1


def replays_of(headers: Mapping[str, Any]) -> int:
    """How many times an operator sent a message back from its dead-letter queue."""
    try:
        return max(0, int(headers.get(REPLAYS, 0) or 0))
    except (TypeError, ValueError):
        return 0


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def retry_headers(headers: Mapping[str, Any], attempt: int, decision: Decision) -> dict[str, Any]:
    """Headers of the copy of a message that goes back for attempt ``attempt``."""
    out = {k: v for k, v in headers.items() if k != "x-death"}
    out[ATTEMPT] = attempt
    out[REASON] = decision.reason or ""
    out[ERROR] = redact(decision.message or "")[:1000]
    return out


def dead_letter_headers(
    headers: Mapping[str, Any], attempt: int, queue: str, decision: Decision
) -> dict[str, Any]:
    """Headers of a message as it enters its stage's dead-letter queue."""
    out = retry_headers(headers, attempt, decision)
    out[QUEUE] = queue
    out[DEAD_LETTERED_AT] = datetime.now(UTC).isoformat(timespec="seconds")
    return out


def history_of(headers: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Earlier dead-letterings of a replayed message, oldest first."""
    raw = headers.get(HISTORY)
    try:
        value = json.loads(_text(raw)) if raw else []
    except ValueError:
        return []
    return [dict(v) for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Headers of a dead-lettered message sent back to its work queue by an operator.

    The attempt count starts again; why it was dead-lettered joins its history.
    """
    history: Sequence[dict[str, Any]] = history_of(headers) + [{
        "reason": _text(headers.get(REASON, "")),
        "error": _text(headers.get(ERROR, "")),
        "attempts": attempt_of(headers),
        "dead_lettered_at": _text(headers.get(DEAD_LETTERED_AT, "")),
    }]
    out = {k: v for k, v in headers.items()
           if k not in (REASON, ERROR, QUEUE, DEAD_LETTERED_AT, "x-death")}
    out[ATTEMPT] = 1
    out[REPLAYS] = replays_of(headers) + 1
    out[HISTORY] = json.dumps(list(history))
    return out
