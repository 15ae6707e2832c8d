"""``POST /generate`` (CG-Image's own route): parse, translate, and hand it to the shared flow."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.body import parse_json
from api.deps import ApiKeyDep, StateDep
from api.dialects.anthropic_messages.router import message_renderer
from api.dialects.simple import translate
from api.dialects.simple.schemas import GenerateRequest, MessageResponse
from api.flow import Render, respond
from api.state import AppState
from api.submit import Submission
from core.generation import Dialect

router = APIRouter(tags=["CG-Image simple"])


@router.post(
    "/generate",
    response_model=MessageResponse,
    openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": GenerateRequest.model_json_schema()}}, "required": True}},
)
async def generate(request: Request, key: ApiKeyDep, state: StateDep) -> Response:
    wire = parse_json(await request.body(), GenerateRequest)
    return await respond(request, state, key=key, submission=Submission(Dialect.SIMPLE, translate.to_generation(wire)),
                         render=_render(state))


def _render(state: AppState) -> Render:
    return message_renderer(state, message_id=translate.message_id, headers=lambda job_id: {})
