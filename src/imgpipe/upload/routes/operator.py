"""The operator's view: queue depth per stage, dead letters with their reasons, replay.

* ``GET /status``: for each stage (``AMQP_EXCHANGE_SUBSCRIBE``,
  ``AMQP_EXCHANGE_PROV`` and ``UPLOAD_STATUS_STAGES``), messages waiting and
  dead-lettered, and the oldest dead letters with reason, error and attempts;
  ``may_replay`` says whether this caller may replay;
* ``POST /dead-letters/{exchange}/replay``: send dead letters back to the
  stage's work queue (all, or ``{"ids": [...]}``), the same operation as
  ``imgpipe dlq replay``, through the Broker protocol. Only the principals
  ``UPLOAD_OPERATORS`` names may (403 otherwise; nobody when it is empty).

With ``UPLOAD_VISIBILITY=own`` the dead letters themselves (they name jobs)
are shown to operators only; everyone sees the counts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.upload.auth import principal_of
from imgpipe.upload.context import UploadContext, context_of

SHOWN_LETTERS = 20
MAX_REPLAY = 1000

routes = web.RouteTableDef()


class NotAnOperator(ImgpipeError):
    reason = "not_an_operator"
    status = 403


class UnknownStage(ImgpipeError):
    reason = "unknown_stage"
    status = 404


def _stages(ctx: UploadContext) -> list[str]:
    settings = ctx.settings
    extra = [s.strip() for s in settings.upload_status_stages.split(",") if s.strip()]
    return list(dict.fromkeys([settings.amqp_exchange_subscribe, *extra,
                               settings.amqp_exchange_prov]))


def is_operator(request: web.Request, ctx: UploadContext) -> bool:
    """Whether the request's principal is one of ``UPLOAD_OPERATORS``."""
    principal = principal_of(request)
    return principal is not None and principal in ctx.settings.operators()


async def _stage(ctx: UploadContext, exchange: str, letters_shown: bool) -> dict[str, Any]:
    broker = ctx.backends.broker
    queue = work_queue_name(exchange)
    dlq = topology(queue).dead_letter_queue
    waiting, dead = await asyncio.gather(broker.queue_depth(queue), broker.queue_depth(dlq))
    letters = await broker.dead_letters(queue, SHOWN_LETTERS) if dead and letters_shown else []
    return {"exchange": exchange, "queue": queue, "waiting": waiting, "dead_lettered": dead,
            "dead_letters": [letter.as_dict() for letter in letters]}


@routes.get("/status")
async def get_status(request: web.Request) -> web.Response:
    """Each stage's queue depth and dead letters (from the broker itself)."""
    ctx = context_of(request)
    operator = is_operator(request, ctx)
    # dead letters name jobs: with UPLOAD_VISIBILITY=own only operators see them (counts: all)
    shown = operator or ctx.settings.upload_visibility == "all"
    stages = await asyncio.gather(*(_stage(ctx, e, shown) for e in _stages(ctx)))
    return web.json_response({"stages": list(stages), "may_replay": operator,
                              "letters_shown": shown})


@routes.post("/dead-letters/{exchange}/replay")
async def post_replay(request: web.Request) -> web.Response:
    """Replay a stage's dead letters (all, or those named by message or job id)."""
    ctx = context_of(request)
    if not is_operator(request, ctx):
        raise NotAnOperator("Replaying dead letters is for operators (the principals "
                            "UPLOAD_OPERATORS names).")
    exchange = request.match_info["exchange"]
    if exchange not in _stages(ctx):
        raise UnknownStage(f"There is no stage {exchange[:100]!r} here; stages: "
                           f"{', '.join(_stages(ctx))}.")
    ids: list[str] = []
    if request.can_read_body:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        given = body.get("ids", []) if isinstance(body, dict) else None
        if not isinstance(given, list) or not all(isinstance(i, str) for i in given):
            raise InvalidInput('Send {"ids": ["<message or job id>", ...]} or no body.',
                               reason="invalid_json")
        ids = given
    replayed = await ctx.backends.broker.replay_dead_letters(work_queue_name(exchange),
                                                             MAX_REPLAY, ids)
    return web.json_response({"exchange": exchange,
                              "replayed": [letter.as_dict() for letter in replayed]})
