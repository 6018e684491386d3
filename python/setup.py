"""Generates the gRPC stubs for memd.v1 from ../proto/proto while building, into the built
package (memd/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py), so they always match the protos."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTOS = Path(__file__).resolve().parent.parent / "proto" / "proto"


class BuildWithStubs(build_py):
    def run(self) -> None:
        super().run()
        generate(Path(self.build_lib))


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    if not PROTOS.is_dir():
        raise SystemExit(f"memd: {PROTOS} not found; build from a checkout of memd (pip install ./python)")
    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p) for p in (PROTOS / "memd" / "v1").glob("*.proto"))
    code = protoc.main(
        ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *files]
    )
    if code != 0:
        raise SystemExit(f"memd: protoc failed ({code})")
    (out / "memd" / "v1" / "__init__.py").write_text('"""Generated from proto/memd/v1 at build time."""\n')


setup(cmdclass={"build_py": BuildWithStubs})
