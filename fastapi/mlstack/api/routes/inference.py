from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Response

from mlstack.api.deps import ServicesDep, allow
from mlstack.auth import Caller
from mlstack.inference import InferenceRequest, InferenceResponse

router = APIRouter(tags=["inference"])


@router.post("/inference", response_model=InferenceResponse,
             responses={404: {"description": "unknown model or version"}, 422: {"description": "bad input"},
                        503: {"description": "model server unavailable after retries"}},
             summary="Predict with the champion (or a pinned version) through its model server")
async def inference(req: InferenceRequest, svc: ServicesDep,
                    caller: Annotated[Caller, allow("create", "inferences")]) -> Response:
    # the hot path: serialise once with orjson instead of FastAPI's re-validation + jsonable_encoder
    result = await svc.inference.infer(req, caller.principal.namespace)
    return Response(orjson.dumps(result.model_dump()), media_type="application/json")
