"""Errors of the upload path: every problem of a refused package, listed; an oversize upload."""

from __future__ import annotations

from mlstack.errors import InvalidInput, MlstackError


class PackageInvalid(InvalidInput):
    """422: the package is refused; ``problems`` lists every reason (the message joins them)."""

    def __init__(self, problems: list[str], what: str = "model package refused"):
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(f"{what} ({n} problem{'s' if n != 1 else ''}): " + "; ".join(self.problems))


class PayloadTooLarge(MlstackError):
    status_code = 413
