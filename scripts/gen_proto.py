"""Regenerate gateway/pb from proto/ (protoc via grpcio-tools, plus mypy-protobuf stubs).

Usage: python scripts/gen_proto.py [--check]
--check regenerates into a scratch folder and fails when gateway/pb differs (CI).
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
TARGET = ROOT / "gateway" / "pb"
# protoc writes `from tongban.v1 import x_pb2`; our package lives under gateway.pb.
IMPORT = re.compile(r"^from tongban\.v1 import", re.MULTILINE)


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    # protoc finds the mypy-protobuf plugins on PATH; they sit beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        path.write_text(IMPORT.sub("from gateway.pb.tongban.v1 import", text))
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


def differ(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [*cmp.left_only, *cmp.right_only, *cmp.diff_files]
    for name, sub in cmp.subdirs.items():
        out += [f"{name}/{x}" for x in differ(Path(sub.left), Path(sub.right))]
    return out


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pb"
        out.mkdir()
        generate(out)
        if check:
            stale = differ(out, TARGET)
            if stale:
                print(f"gateway/pb is stale ({', '.join(stale)}): run python scripts/gen_proto.py")
                return 1
            print("gateway/pb is fresh")
            return 0
        shutil.rmtree(TARGET, ignore_errors=True)
        shutil.copytree(out, TARGET)
    print(f"generated {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
