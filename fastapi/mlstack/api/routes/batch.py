"""``POST /predict``: batch scoring of a CSV upload (seed endpoint 003), streamed back as CSV or JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Header, UploadFile
from fastapi.responses import StreamingResponse

from mlstack.api.deps import ServicesDep, allow
from mlstack.api.params import AliasForm, ModelNameForm, VersionForm
from mlstack.auth import Caller
from mlstack.batch import BatchScorer, negotiate
from mlstack.errors import InvalidInput

router = APIRouter(tags=["inference"])


@router.post("/predict", response_class=StreamingResponse,
             responses={200: {"description": "one prediction per row, in the file's order",
                              "content": {"text/csv": {}, "application/json": {}}},
                        404: {"description": "unknown model, version or alias"},
                        406: {"description": "Accept names neither text/csv nor application/json"},
                        413: {"description": "file larger than the limit (MLSTACK_PREDICT_MAX_UPLOAD_BYTES)"},
                        422: {"description": "bad CSV: the line and column that do not fit the model"},
                        503: {"description": "model server unavailable"}},
             summary="Score a CSV file (header + one row per line) with a model version or alias")
async def predict(svc: ServicesDep, caller: Annotated[Caller, allow("create", "inferences")],
                  file: Annotated[UploadFile, File(description="CSV: a header naming the model's features, "
                                                   "then one row of numbers per line")],
                  model: ModelNameForm, version: VersionForm = None, alias: AliasForm = None,
                  accept: Annotated[str | None, Header()] = None) -> StreamingResponse:
    media_type = negotiate(accept)
    if version and alias:
        raise InvalidInput("send version or alias, not both")
    scorer = BatchScorer(svc.inference)
    namespace = caller.principal.namespace
    resolved, batches = await scorer.prepare(file, model, version, alias, namespace)
    return StreamingResponse(scorer.stream(batches, model, resolved, namespace, media_type), media_type=media_type,
                             headers={"X-Model-Name": model, "X-Model-Version": resolved})
