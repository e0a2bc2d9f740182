"""The agent's command line: ``python -m serving.host COMMAND --base-dir DIR …`` prints one JSON object.

``{"ok": true, …}`` with the command's answer and exit 0, or ``{"ok": false, "error": …}`` and exit 1.
Each command is one entry of ``COMMANDS``: a function of the parsed arguments and the base directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import serving.host
from serving.host.bundles import fetch, unpack
from serving.host.environments import ensure_venv
from serving.host.errors import HostError
from serving.host.labelled import labelled
from serving.host.server import activate, start, status, stop

PROG = "python -m serving.host"
DEFAULT_TIMEOUT_S = 180


def _fetch(args: argparse.Namespace, base: Path) -> dict:
    # The URL comes on stdin: a presigned URL is a credential, and every user of the host sees arguments (ps).
    return fetch(base, sys.stdin.readline().strip(), args.sha256, args.name, args.timeout)


def _unpack(args: argparse.Namespace, base: Path) -> dict:
    return unpack(base, args.bundle, args.version)


def _ensure_venv(args: argparse.Namespace, base: Path) -> dict:
    if args.python:
        return {"python": args.python, "created": False, "note": "--python given: no environment needed"}
    return ensure_venv(base, args.version, args.timeout)


def _start(args: argparse.Namespace, base: Path) -> dict:
    return start(base, args.version, args.host, args.port, args.python, args.timeout, args.metadata_sha256,
                 args.workers)


def _activate(args: argparse.Namespace, base: Path) -> dict:
    return activate(base, args.version, args.host, args.port, args.metadata_sha256)


def _stop(args: argparse.Namespace, base: Path) -> dict:
    return stop(base)


def _status(args: argparse.Namespace, base: Path) -> dict:
    return status(base, args.host, args.port)


def _labelled(args: argparse.Namespace, base: Path) -> dict:
    return labelled(base, args.host, args.port, args.version, args.since)


COMMANDS: dict[str, Callable[[argparse.Namespace, Path], dict]] = {
    "fetch": _fetch, "unpack": _unpack, "ensure-venv": _ensure_venv, "start": _start, "activate": _activate,
    "stop": _stop, "status": _status, "labelled": _labelled,
}


def parser() -> argparse.ArgumentParser:
    """The one argument parser of every command (an option means the same on each)."""
    p = argparse.ArgumentParser(prog=PROG, description=serving.host.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=list(COMMANDS))
    p.add_argument("--sha256", help="fetch: the bundle's SHA-256 (what arrives must hash to it)")
    p.add_argument("--name", help="fetch: the bundle's file name in incoming/")
    p.add_argument("--base-dir", required=True, type=Path, help="the host's base directory (releases, run, venvs)")
    p.add_argument("--bundle", type=Path, help="unpack: the bundle to unpack")
    p.add_argument("--version", help="the registry version the command is about")
    p.add_argument("--host", default="127.0.0.1", help="the address the server binds")
    p.add_argument("--port", type=int, default=8000, help="the port the server binds")
    p.add_argument("--python", default=None, help="interpreter for the server (default: the release's venv)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds the operation may take")
    p.add_argument("--since", type=float, default=0.0, help="labelled: rows scored from (epoch seconds)")
    p.add_argument("--workers", default=None,
                   help="start: server processes, a number or auto (one per CPU); default 1")
    p.add_argument("--metadata-sha256", default=None,
                   help="what the registry recorded for the version's metadata.json (the server checks it)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command and print its JSON answer; 0 when it succeeded, 1 when it did not."""
    args = parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args, args.base_dir.resolve())
    except (HostError, OSError, ValueError, zipfile.BadZipFile) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    print(json.dumps({"ok": True, **result}))
    return 0
