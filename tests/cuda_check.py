"""Every CUDA path in one go, on a machine with a GPU: ``make cuda-check``.

Runs the tests marked ``cuda``, then ``zoo check``, ``export``, ``verify`` (``--runtime
onnxruntime``, and ``onnxruntime:provider=tensorrt`` where TensorRT's provider is
installed) and ``bench`` with ``--device cuda`` on every installed architecture (the seed's,
and the example plugin's when it is installed), and prints a table last. Exit 0
only when every step passed; without a GPU it says so once and exits 77
(nothing was checked). ``--device cpu`` runs the same steps on the CPU:
the test suite does that, so the script itself is known to work where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ZOO = [sys.executable, "-m", "zoo"]


def step(rows: list[tuple[str, ...]], what: str, arch: str, command: list[str], cwd: Path, timeout: int = 600) -> bool:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        code, out, err = -1, "", f"timed out after {timeout} s"
    seconds = time.perf_counter() - start
    lines = (err or out).strip().splitlines()
    note = lines[-1][:90] if code != 0 and lines else ""
    rows.append((what, arch, "ok" if code == 0 else f"FAILED ({code})", f"{seconds:.1f}s", note))
    print(f"--- {what} {arch}: exit {code} in {seconds:.1f}s", flush=True)
    if code != 0:
        print(out[-3000:], err[-3000:], sep="\n", flush=True)
    return code == 0


NOTHING_CHECKED = 77  # the "skipped" status of automake and meson: neither passed nor failed


def cuda_available() -> bool:
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True)
    return done.stdout.strip() == "True"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--only", help="a wildcard of architectures (default: all installed)")
    parser.add_argument("--no-tests", action="store_true", help="skip 'pytest -m cuda'")
    args = parser.parse_args()
    if args.device == "cuda" and not cuda_available():
        print("cuda-check: no CUDA GPU here (torch.cuda.is_available() is False): nothing was checked; run it on a machine "
              "with an NVIDIA GPU, or with --device cpu to try the steps", file=sys.stderr)
        return NOTHING_CHECKED
    device = ["--device", args.device]
    rows: list[tuple[str, ...]] = []
    listed = subprocess.run([*ZOO, "list", *([args.only] if args.only else []), "--json"], capture_output=True, text=True, check=True)
    names = [a["name"] for a in json.loads(listed.stdout)]
    import onnxruntime

    tensorrt = ["tensorrt"] if args.device == "cuda" and "TensorrtExecutionProvider" in onnxruntime.get_available_providers() else []
    with tempfile.TemporaryDirectory(prefix="zoo-cuda-check-") as folder:
        work = Path(folder)
        if not args.no_tests:
            step(rows, "pytest -m cuda", "-", [sys.executable, "-m", "pytest", "-q", "-m", "cuda", str(HERE.parent)], HERE.parent, 1200)
        for name in names:
            if not step(rows, "check", name, [*ZOO, "check", name, *device], work):
                continue
            if not step(rows, "export", name, [*ZOO, "export", name, *device, "-o", f"{name}.onnx", "-f"], work):
                continue
            step(rows, "verify", name, [*ZOO, "verify", f"{name}.onnx", *device, "--runtime", "onnxruntime"], work)
            for provider in tensorrt:  # the same --runtime path, on TensorRT's provider where installed
                step(rows, "verify tensorrt", name, [*ZOO, "verify", f"{name}.onnx", *device, "--runtime", f"onnxruntime:provider={provider}"], work)
            step(rows, "bench", name, [*ZOO, "bench", name, *device, "--budget", "0.1", "--batch-sizes", "1,64", "--json"], work)
    widths = [max(len(r[i]) for r in [("STEP", "ARCHITECTURE", "STATUS", "TIME", "NOTE"), *rows]) for i in range(5)]
    print()
    for row in [("STEP", "ARCHITECTURE", "STATUS", "TIME", "NOTE"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    failed = sum(1 for r in rows if r[2] != "ok")
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
