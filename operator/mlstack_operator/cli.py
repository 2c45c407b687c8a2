"""``mlstack operator render FILE`` and ``mlstack operator run [kopf args...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

EXIT_BAD_INPUT = 2


def render_documents(text: str, *, versions: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The children of every ModelDeployment in ``text`` (multi-doc YAML). Raises ValueError on bad input.

    Without a cluster the model is not resolved: an alias renders as the ``versions`` entry for the
    model name, else as the placeholder version ``"1"``; pinned versions render as they are.
    """
    from mlstack_operator import builders
    from mlstack_operator.contract import ModelDeployment
    from mlstack_operator.settings import get_settings

    settings = get_settings()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ValueError(f"not YAML: {e}") from None
    if not docs:
        raise ValueError("no ModelDeployment in the input")
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(docs, start=1):
        if not isinstance(doc, dict):
            raise ValueError(f"document {i}: not a mapping")
        try:
            md = ModelDeployment.model_validate(doc)
        except ValidationError as e:
            reasons = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in e.errors())
            raise ValueError(f"document {i} ({doc.get('metadata', {}).get('name', '?')}): {reasons}") from None
        stable = md.spec.model.version or (versions or {}).get(md.spec.model.name, "1")
        canary = md.spec.canary.version if md.spec.canary else None
        out.extend(builders.build_children(md, builders.Versions(stable, canary), settings))
    return out


def _render(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as e:
        print(f"error: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if any("=" not in v for v in args.version):
        print("error: --version takes MODEL=VERSION", file=sys.stderr)
        return EXIT_BAD_INPUT
    versions = dict(v.split("=", 1) for v in args.version)
    try:
        children = render_documents(text, versions=versions)
    except ValueError as e:
        print(f"error: {args.file}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from mlstack_operator.builders import dump_yaml_all

    sys.stdout.write(dump_yaml_all(children))
    return 0


def _run(extra: list[str]) -> int:
    """``kopf run`` on the handlers module; extra args go to kopf (e.g. ``--standalone``, ``-A``)."""
    from kopf import cli as kopf_cli

    from mlstack_operator.settings import get_settings

    args = ["run", "-m", "mlstack_operator.handlers"]
    scope = get_settings().namespaces
    if not any(a in ("-A", "--all-namespaces") or a.startswith(("-n", "--namespace")) for a in extra):
        args += [x for ns in scope for x in ("-n", ns)] if scope else ["--all-namespaces"]
    try:
        kopf_cli.main(args=args + extra, prog_name="mlstack operator run", standalone_mode=True)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``mlstack-operator`` (also reached as ``mlstack operator``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="mlstack-operator", description="The ModelDeployment operator.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="print the children a ModelDeployment would create (no cluster needed)")
    r.add_argument("file", help="ModelDeployment YAML (multi-document allowed; '-' reads stdin)")
    r.add_argument("--version", action="append", default=[], metavar="MODEL=VERSION",
                   help="version an alias resolves to (default: 1)")
    sub.add_parser("run", help="run the operator (kopf run); extra arguments go to kopf", add_help=False)
    if argv and argv[0] == "run":
        return _run(argv[1:])
    args = parser.parse_args(argv)
    return _render(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
