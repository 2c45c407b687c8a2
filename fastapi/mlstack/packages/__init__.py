"""Model packages: upload a zipped MLflow model or seed 000's package as a new registry version, and
copy a version as a new version ("save as new version").

Pure parts (no server needed): :mod:`.archive` (zip safety and extraction), :mod:`.seed`
(meta.json / app.py / requirements.txt checks), :mod:`.validate` (layout detection, MLmodel checks).
MLflow parts: :mod:`.pyfunc` (the package as a pyfunc model), :mod:`.register` (runs, versions, undo).
:mod:`.service` is what the routes in ``mlstack.api.routes.packages`` call.
"""

from mlstack.packages.limits import PackageLimits
from mlstack.packages.problems import PackageInvalid, PayloadTooLarge

__all__ = ["PackageInvalid", "PackageLimits", "PayloadTooLarge"]
