"""Regenerate the Python protobuf/gRPC code under ``common/pb`` from ``protos/``.

Run with ``python -m common.protogen`` (``make proto``). The generated modules
import each other as ``shop.v1.x``; they are rewritten to ``common.pb.shop.v1.x``
so that no top-level ``shop`` package is needed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "common" / "pb"
_IMPORT = re.compile(r"^from shop\.v1 import ", re.MULTILINE)


def protoc(*options: str) -> None:
    """Run grpc_tools' protoc with ``options`` on every ``.proto`` under ``protos/`` (the
    well-known types on the include path)."""
    import grpc_tools
    from grpc_tools import protoc as grpc_protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", *options, *protos]
    if grpc_protoc.main(args) != 0:
        raise RuntimeError("protoc failed")


def generate(out_root: Path) -> list[Path]:
    """Compile every ``.proto`` under ``protos/`` into ``out_root``; return the files written."""
    out_root.mkdir(parents=True, exist_ok=True)
    protoc(f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}")
    written = []
    for path in sorted(out_root.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        text = path.read_text()
        path.write_text(_IMPORT.sub("from common.pb.shop.v1 import ", text))
        written.append(path)
    for package in (out_root / "shop", out_root / "shop" / "v1"):
        (package / "__init__.py").touch()
    return written


def is_stale() -> bool:
    """True when the committed code differs from what the protos generate now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        fresh_files = {
            p.relative_to(fresh): p.read_bytes() for p in fresh.rglob("*") if p.is_file()
        }
    current = {
        p.relative_to(OUT_ROOT): p.read_bytes()
        for p in OUT_ROOT.rglob("*")
        if p.is_file() and p.suffix in (".py", ".pyi") and p.parent != OUT_ROOT
    }
    return fresh_files != current


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the generated code is stale"
    )
    args = parser.parse_args()
    if args.check:
        stale = is_stale()
        print("generated code is stale: run `make proto`" if stale else "generated code is fresh")
        return 1 if stale else 0
    for path in generate(OUT_ROOT):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
