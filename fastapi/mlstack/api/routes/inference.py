from __future__ import annotations

from fastapi import APIRouter

from mlstack.api.deps import ServicesDep
from mlstack.inference import InferenceRequest, InferenceResponse

router = APIRouter(tags=["inference"])


@router.post("/inference", response_model=InferenceResponse,
             responses={404: {"description": "unknown model or version"}, 422: {"description": "bad input"},
                        503: {"description": "model server unavailable after retries"}},
             summary="Predict with the champion (or a pinned version) through its model server")
async def inference(req: InferenceRequest, svc: ServicesDep) -> InferenceResponse:
    return await svc.inference.infer(req)
