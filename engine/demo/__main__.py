"""A real push to watch: start a local registry, make a sample image, push it with live progress.

``python3 -m engine.demo [--layers N] [--layer-mib M] [--progress MODE]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from engine.demo.registry import running_registry
from engine.demo.sample import LayerSpec, write_docker_archive

#: Where ``cli.py`` lies: beside the ``engine`` package, in a checkout and in site-packages alike.
ROOT = Path(__file__).resolve().parents[2]


def _hoist(root: Path, *args: str) -> None:
    command = [sys.executable, str(ROOT / "cli.py"), "--root", str(root), *args]
    print(f"$ hoist {' '.join(args)}", flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--layer-mib", type=int, default=24)
    parser.add_argument("--progress", default="auto", choices=["auto", "tty", "plain", "json"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hoist-demo-") as tmp, running_registry() as registry:
        work = Path(tmp)
        target = f"{registry.host}/demo/hello:v1"
        layers = [LayerSpec(size=args.layer_mib << 20, seed=i) for i in range(args.layers)]
        print(f"Local registry (CNCF Distribution) on {registry.url}", flush=True)
        print(f"Making a sample image: {args.layers} layers of {args.layer_mib} MiB", flush=True)
        write_docker_archive(work / "hello.tar", layers, [target], work / "build")
        _hoist(work / "root", "load", "-i", str(work / "hello.tar"))
        _hoist(work / "root", "push", "--progress", args.progress, target)
        print("\nPushing again: every layer is already there.", flush=True)
        _hoist(work / "root", "push", "--progress", "plain", target)
        _hoist(work / "root", "images")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
    except KeyboardInterrupt:
        sys.exit(130)
