from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Response

from mlstack.api.deps import ServicesDep, allow
from mlstack.api.services import Services
from mlstack.auth import Caller
from mlstack.inference import InferenceRequest, InferenceResponse

router = APIRouter(tags=["inference"])
PERMISSION = ("create", "inferences")  # what a caller of POST /inference needs in their home namespace


@router.post("/inference", response_model=InferenceResponse,
             responses={404: {"description": "unknown model, version, alias or deployment"},
                        422: {"description": "bad input, or rows that do not match the model's features"},
                        503: {"description": "model server unavailable after retries"}},
             summary="Predict with a model (name + version or alias; default: the champion) or a deployment")
async def inference(req: InferenceRequest, svc: ServicesDep,
                    caller: Annotated[Caller, allow(*PERMISSION)]) -> Response:
    # mlstack.api.hotpath answers most requests before they get here, with the same answer()
    return Response(await answer(req, svc, caller), media_type="application/json")


async def answer(req: InferenceRequest, svc: Services, caller: Caller) -> bytes:
    """The JSON of the answer to a valid request of a caller allowed ``PERMISSION``."""
    if req.deployment:  # the caller must be allowed to read that deployment
        ns, name = req.deployment.split("/", 1)
        await caller.require("get", "modeldeployments", ns, name)
    # the hot path: serialise once with orjson instead of FastAPI's re-validation + jsonable_encoder
    result = await svc.inference.infer(req, caller.principal.namespace)
    return orjson.dumps(result.model_dump())
