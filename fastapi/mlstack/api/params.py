"""Path and query parameters named by the vocabulary (``mlstack_operator.contract``): each kind of name is checked
by the same rule in every route, a body or the CRD."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Path, Query

from mlstack_operator.contract import (
    ALIAS_MAX,
    ALIAS_PATTERN,
    DNS_LABEL_MAX,
    DNS_LABEL_PATTERN,
    MODEL_NAME_MAX,
    MODEL_NAME_PATTERN,
    OBJECT_NAME_MAX,
    OBJECT_NAME_PATTERN,
    VERSION_MAX,
    VERSION_PATTERN,
)

ModelNamePath = Annotated[str, Path(min_length=1, max_length=MODEL_NAME_MAX, pattern=MODEL_NAME_PATTERN,
                                    description="a registered model")]
VersionPath = Annotated[str, Path(min_length=1, max_length=VERSION_MAX, pattern=VERSION_PATTERN,
                                  description="a version of the model")]
AliasPath = Annotated[str, Path(min_length=1, max_length=ALIAS_MAX, pattern=ALIAS_PATTERN,
                                description="an alias of the model, e.g. champion")]
DeploymentPath = Annotated[str, Path(min_length=1, max_length=OBJECT_NAME_MAX, pattern=OBJECT_NAME_PATTERN,
                                     description="a ModelDeployment's name")]
ModelNameQuery = Annotated[str | None, Query(min_length=1, max_length=MODEL_NAME_MAX, pattern=MODEL_NAME_PATTERN,
                                             description="a registered model")]
ModelNameForm = Annotated[str, Form(min_length=1, max_length=MODEL_NAME_MAX, pattern=MODEL_NAME_PATTERN,
                                    description="registered model name")]
VersionForm = Annotated[str | None, Form(min_length=1, max_length=VERSION_MAX, pattern=VERSION_PATTERN,
                                         description="a version of the model")]
AliasForm = Annotated[str | None, Form(min_length=1, max_length=ALIAS_MAX, pattern=ALIAS_PATTERN,
                                       description="an alias of the model (default: champion)")]
NamespaceQuery = Annotated[str | None, Query(min_length=1, max_length=DNS_LABEL_MAX, pattern=DNS_LABEL_PATTERN,
                                             description="default: the caller's organisation, else the API's "
                                                         "deployments namespace")]
