from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Response

from mlstack.api.deps import ServicesDep, allow
from mlstack.auth import Caller
from mlstack.inference import InferenceRequest, InferenceResponse

router = APIRouter(tags=["inference"])


@router.post("/inference", response_model=InferenceResponse,
             responses={404: {"description": "unknown model, version, alias or deployment"},
                        422: {"description": "bad input, or rows that do not match the model's features"},
                        503: {"description": "model server unavailable after retries"}},
             summary="Predict with a model (name + version or alias; default: the champion) or a deployment")
async def inference(req: InferenceRequest, svc: ServicesDep,
                    caller: Annotated[Caller, allow("create", "inferences")]) -> Response:
    if req.deployment:  # the caller must be allowed to read that deployment
        ns, name = req.deployment.split("/", 1)
        await caller.require("get", "modeldeployments", ns, name)
    # the hot path: serialise once with orjson instead of FastAPI's re-validation + jsonable_encoder
    result = await svc.inference.infer(req, caller.principal.namespace)
    return Response(orjson.dumps(result.model_dump()), media_type="application/json")
