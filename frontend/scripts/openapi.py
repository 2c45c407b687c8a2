"""Write the API's OpenAPI document to frontend/openapi.json offline: `app.openapi()` needs no lifespan, no services.

Run from the repository root: ``.venv/bin/python frontend/scripts/openapi.py`` (or ``npm run openapi`` in frontend/,
which also regenerates src/lib/api-schema.d.ts from it). ``--check`` exits 1 when the committed file is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "openapi.json"


def document() -> str:
    """The app's current OpenAPI document as the committed file holds it (FastAPI's order, 2-space indent)."""
    from mlstack.api.main import create_app  # settings only feed the lifespan and middleware, not the document

    return json.dumps(create_app().openapi(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = document()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run `npm run openapi` in frontend/", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
