"""zoo's performance ratios, each measured side by side in one run (by hand, not CI).

    python benchmarks/run.py             # ratios 1-4, 6-8: about ten minutes
    python benchmarks/run.py --large     # also 5: 1 GB and 2.15 GB exports against a hand-written one (minutes, 7 GB of memory)
    python benchmarks/run.py --only 6,7  # just these ratios
    python benchmarks/run.py --only 9 --optimum-cli VENV/bin/optimum-cli  # against Optimum (the bench extra)

Whole-process timings alternate the two commands being compared and take
medians, so a burst of load on the machine hits both sides. Latencies come from
``zoo.bench.timing`` (warm-up, then time-budgeted single calls, median per call).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zoo.cli.render import table
from zoo.text import human_seconds

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
LARGE_WIDTH = 23200  # three-layer-stack 10→w→w→5: 2,154,537,620 bytes of float32 weights (external data)
LARGE_INLINE_WIDTH = 16000  # 1,025,280,020 bytes: one file
WIDE_WIDTH = 1024


def machine() -> str:
    import onnxruntime
    import torch

    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "?"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
        f"load average at start {load}"
    )


def wall(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def alternate(first: list[str], second: list[str], repeats: int, cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Median wall time of each command, run in turn (one untimed run each to warm the disk cache)."""
    wall(first, cwd, env), wall(second, cwd, env)
    a, b = [], []
    for _ in range(repeats):
        a.append(wall(first, cwd, env))
        b.append(wall(second, cwd, env))
    return statistics.median(a), statistics.median(b)


def exporter_seconds(command: list[str]) -> float | None:
    """The seconds of ``exporter_call.py``'s one export call; ``None`` where the exporter failed."""
    done = subprocess.run(command, capture_output=True, text=True)
    return float(done.stdout.split()[-1]) if done.returncode == 0 else None


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, what: str, numerator: str, denominator: str, ratio: float, target: str, ok: bool | None) -> None:
        verdict = "-" if ok is None else ("ok" if ok else "MISSED")
        self.rows.append((what, f"{numerator} / {denominator}", f"{ratio:.3g}", target, verdict))
        print(f"  {what}: {numerator} / {denominator} = {ratio:.3g}  (target {target}) {verdict}", flush=True)

    def table(self) -> str:
        return table(("RATIO", "MEASURED", "VALUE", "TARGET", ""), self.rows)


def cli_ratios(report: Report, folder: Path, repeats: int) -> None:
    zoo = [str(BIN / "zoo")]
    listing, torch_import = alternate([*zoo, "list"], [sys.executable, "-c", "import torch"], repeats, folder)
    report.add("1. zoo list / import torch", human_seconds(listing), human_seconds(torch_import), listing / torch_import, "≤ 0.25", listing / torch_import <= 0.25)
    export = [*zoo, "export", "binary", "-f", "-o", str(folder / "binary.onnx")]
    baseline = [sys.executable, str(HERE / "baseline_export.py")]
    ours, theirs = alternate(export, baseline, repeats, folder)
    report.add("2. zoo export binary / hand-written export", human_seconds(ours), human_seconds(theirs), ours / theirs, "≤ 1.05", ours / theirs <= 1.05)


HF_MODELS = {  # zoo architecture (examples/hf_models.py) -> optimum-cli's task for the same saved model
    "hf-distilbert-cls": "text-classification",
    "hf-gpt2": "text-generation",
}


def hf_ratios(report: Report, folder: Path, repeats: int, optimum_cli: str | None) -> None:
    """``zoo export`` of a small Hugging Face model saved with ``save_pretrained``
    (loaded with --weights) against ``optimum-cli export onnx`` of the same folder;
    both whole processes, alternating."""
    if optimum_cli is None:
        print("  9. skipped: no optimum-cli (pip install -c constraints.txt 'zoo-onnx[bench]' in a venv of its own; --optimum-cli PATH)")
        return
    plugin = HERE.parent / "examples" / "hf_models.py"
    sys.path.insert(0, str(plugin.parent))
    import torch
    from hf_models import distilbert, gpt2

    for name, build in (("hf-distilbert-cls", distilbert), ("hf-gpt2", gpt2)):
        torch.manual_seed(0)
        build().save_pretrained(folder / name)
        ours = [str(BIN / "zoo"), "--plugin", str(plugin), "export", name, "-f", "--weights", str(folder / name / "model.safetensors"),
                "-o", str(folder / f"{name}.onnx")]
        theirs = [optimum_cli, "export", "onnx", "--model", str(folder / name), "--task", HF_MODELS[name], str(folder / f"{name}-optimum")]
        zoo_s, optimum_s = alternate(ours, theirs, repeats, folder)
        ratio = zoo_s / optimum_s
        report.add(f"9. zoo export {name} / optimum-cli export onnx", human_seconds(zoo_s), human_seconds(optimum_s), ratio, "≤ 1.0", ratio <= 1.0)
        # why: the exporter call alone, each in a fresh process (optimum-cli passes dynamo=False)
        call = [sys.executable, str(HERE / "exporter_call.py"), str(folder / name)]
        dynamo = [exporter_seconds([*call, "dynamo"]) for _ in range(repeats)]
        script = [exporter_seconds([*call, "torchscript"]) for _ in range(repeats)]
        if None in dynamo or None in script:
            print(f"  9. {name}: the exporter call alone: {'dynamo' if None in dynamo else 'TorchScript'} fails on this transformers' model")
            continue
        report.add(f"9. {name}: torch.onnx.export dynamo=True / dynamo=False, the call alone", human_seconds(statistics.median(dynamo)),
                   human_seconds(statistics.median(script)), statistics.median(dynamo) / statistics.median(script), "(why)", None)


def latency_ratios(report: Report, budget: float, threads: int) -> None:
    from zoo.bench.timing import bench_model
    from zoo.build.model import build_model
    from zoo.host.manager import load_zoo

    zoo = load_zoo()
    for name in ("binary-sigmoid", "multiclass-softmax", "three-layer-stack"):
        built = build_model(zoo.architecture(name))
        result = bench_model(built, zoo.exporter("onnx"), (1, 4096), budget_s=budget, threads=threads)
        for row in result.rows:
            ratio = row.onnx.median / row.torch.median
            target = "≤ 0.5" if row.batch == 1 else "-"
            ok = ratio <= 0.5 if row.batch == 1 else None
            report.add(f"3. {name} batch {row.batch}: onnxruntime / torch", human_seconds(row.onnx.median), human_seconds(row.torch.median), ratio, target, ok)


def fold_ratios(report: Report, folder: Path, budget: float, threads: int) -> None:
    from zoo.bench.timing import onnx_call, time_calls
    from zoo.build.model import build_model
    from zoo.exporting.pipeline import export_model
    from zoo.host.manager import load_zoo

    zoo = load_zoo()
    for params in ({}, {"width": WIDE_WIDTH}):
        built = build_model(zoo.architecture("three-layer-stack"), params)
        inputs = built.sample_inputs({"batch": 4096})
        medians = {}
        for fold in (False, True):
            path = folder / f"stack-{'folded' if fold else 'plain'}.onnx"
            result = export_model(built, zoo.exporter("onnx"), path, force=True, options={"fold_linear": True} if fold else {})
            assert result.ok, result.error
            session = zoo.exporter("onnx").load(path, "cpu", threads=threads).session
            medians[fold] = statistics.median(time_calls(onnx_call(session, inputs, "cpu"), budget))
        label = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        ratio = medians[True] / medians[False]
        report.add(f"4. stack ({label}) batch 4096: folded / unfolded", human_seconds(medians[True]), human_seconds(medians[False]), ratio, "≤ 0.5", ratio <= 0.5)


def variant_ratios(report: Report, folder: Path, budget: float, threads: int) -> None:
    """int8 against float32, both in onnxruntime, on a model with weights worth quantizing.

    Latency only: seeded initial weights are no trained model, and this int8 file
    does not meet the default acceptance criteria for regression (its p99 error
    is about 0.3× the output's RMS), so it is timed, not placed.

    At batch 1 int8 saves memory traffic, not arithmetic: where the float32
    weights (4 MB at width 1024) stay in the processor's cache, int8 gains less
    than where they do not. The row at width 4096 (64 MB) shows that side; it
    has no target."""
    from zoo.bench.timing import onnx_call, time_calls
    from zoo.build.model import build_model
    from zoo.exporting.pipeline import export_model, variant_of
    from zoo.host.manager import load_zoo
    from zoo.verification.acceptance import Acceptance
    from zoo.verification.artifact import exported_metadata

    zoo = load_zoo()
    exporter = zoo.exporter("onnx")
    for width, targets in ((WIDE_WIDTH, {1: 0.25, 256: 0.6}), (4 * WIDE_WIDTH, {1: None})):
        built = build_model(zoo.architecture("three-layer-stack"), {"width": width, "activation": "relu"})
        source = folder / f"stack-{width}.onnx"
        assert export_model(built, exporter, source, force=True).ok
        target, made, _ = variant_of(exporter, built, source, exported_metadata(exporter, source), "int8", Acceptance(), folder / f"int8-{width}", source)
        sessions = {name: exporter.load(path, "cpu", threads=threads).session for name, path in (("fp32", source), ("int8", target))}
        for batch, target_ratio in targets.items():
            inputs = built.sample_inputs({"batch": batch})
            medians = {name: statistics.median(time_calls(onnx_call(session, inputs, "cpu"), budget)) for name, session in sessions.items()}
            ratio = medians["int8"] / medians["fp32"]
            report.add(
                f"6. stack (width={width}, relu) batch {batch}: int8 / fp32 onnxruntime",
                human_seconds(medians["int8"]), human_seconds(medians["fp32"]), ratio,
                "-" if target_ratio is None else f"≤ {target_ratio}", None if target_ratio is None else ratio <= target_ratio,
            )
        if width == WIDE_WIDTH:
            ratio = made["bytes"] / made["float32_bytes"]
            report.add("6. stack int8 file / fp32 file", f"{made['bytes'] / 1e6:.2f} MB", f"{made['float32_bytes'] / 1e6:.2f} MB", ratio, "≤ 0.3", ratio <= 0.3)
        for path in (source, target):
            path.unlink()


GENERATED_PLUGIN = """\"\"\"A generated zoo for the benchmark: regression stacks of mixed widths and depths.\"\"\"
import zoo

SIZES = [((16, 64, 256, 1024, 2048, 32)[i % 6], 2 + i % 3) for i in range({count})]


def make(width, depth):
    def build():
        from torch import nn

        layers = [nn.Linear(12, width), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(width, 3))

    return build


@zoo.hookimpl
def register_architectures(register):
    for index, (width, depth) in enumerate(SIZES):
        register(zoo.Architecture(
            name=f"gen-{{index:02d}}-w{{width}}-d{{depth}}", build=make(width, depth),
            inputs=(zoo.Input("x", ("batch", 12)),), outputs=(zoo.Output("y", task="regression", shape=("batch", 3)),),
        ))
"""
GENERATED_COUNT = 24


def generated_zoo(folder: Path) -> dict[str, str]:
    """The environment of a zoo with a generated plugin of GENERATED_COUNT architectures
    beside the seed's, installed as an entry point (a dist-info folder on PYTHONPATH)."""
    site = folder / "generated-site"
    dist = site / "zoo_generated_zoo-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "zoo_generated_zoo.py").write_text(GENERATED_PLUGIN.format(count=GENERATED_COUNT))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-generated-zoo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[zoo]\ngenerated = zoo_generated_zoo\n")
    return {**os.environ, "PYTHONPATH": str(site), "ZOO_LOAD_PLUGINS": "zoo-generated-zoo"}


def zoo_ratios(report: Report, folder: Path, repeats: int) -> None:
    """Over the generated zoo: ``--all --update`` with nothing changed against the first
    ``--all`` (8), and ``--all --jobs 2`` against ``--jobs 1`` (7)."""
    env = generated_zoo(folder)
    listed = json.loads(subprocess.run([str(BIN / "zoo"), "list", "--json"], env=env, capture_output=True, check=True).stdout)
    count = len(listed)
    out = folder / "all"

    def command(*extra: str) -> list[str]:
        return [str(BIN / "zoo"), "export", "--all", "-o", str(out), *extra]

    firsts, updates = [], []
    for _ in range(repeats):
        subprocess.run(["rm", "-rf", str(out)], check=True)
        firsts.append(wall(command(), folder, env))
        updates.append(wall(command("--update"), folder, env))
    first, update = statistics.median(firsts), statistics.median(updates)
    report.add(
        f"8. export --all --update, nothing changed / first --all ({count} architectures)", human_seconds(update),
        human_seconds(first), update / first, "≤ 0.2", update / first <= 0.2,
    )
    two, one = alternate(command("-f", "--jobs", "2"), command("-f", "--jobs", "1"), repeats, folder, env)
    report.add(
        f"7. export --all ({count} architectures): --jobs 2 / --jobs 1", human_seconds(two), human_seconds(one),
        two / one, "≤ 0.6", two / one <= 0.6,
    )


def peak_run(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, alone."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not the benchmark's
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed: {process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss * 1024


def large_ratios(report: Report, folder: Path, widths: tuple[int, ...] = (LARGE_INLINE_WIDTH, LARGE_WIDTH)) -> None:
    """``zoo export`` of a 1 GB (one file) and a 2.15 GB (external data) stack against
    the hand-written script (5): wall time, and peak RSS above a tiny export's per weight byte."""
    zoo = str(BIN / "zoo")
    _, tiny = peak_run([zoo, "export", "binary", "-f", "-o", str(folder / "tiny.onnx")])
    for width in widths:
        weight_bytes = 4 * (10 * width + width + width * width + width + width * 5 + 5)
        record_path = folder / "large.json"
        ours, our_peak = peak_run([zoo, "export", "three-layer-stack", "--param", f"width={width}", "-o", str(folder / "large.onnx"), "-f", "--report", str(record_path)])
        record = json.loads(record_path.read_text())
        for f in record["files"]:
            Path(f["path"]).unlink(missing_ok=True)
        theirs, their_peak = peak_run([sys.executable, str(HERE / "handwritten_large.py"), str(width), str(folder / "hand.onnx")])
        for f in folder.glob("hand.onnx*"):
            f.unlink()
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in record["timings_s"].items())
        print(f"  width {width}: zoo {ours:.1f} s ({timings}), peak {our_peak / 1e9:.2f} GB; hand-written {theirs:.1f} s, peak {their_peak / 1e9:.2f} GB; tiny export peak {tiny / 1e9:.2f} GB")
        size = f"{weight_bytes / 1e9:.2f} GB"
        report.add(f"5. zoo export / hand-written, {size} stack: wall", human_seconds(ours), human_seconds(theirs), ours / theirs, "≤ 0.8", ours / theirs <= 0.8)
        ratio = (our_peak - tiny) / weight_bytes
        report.add(f"5. {size} stack: (peak RSS − tiny export's) / weights", f"{(our_peak - tiny) / 1e9:.2f} GB", size, ratio, "≤ 1.3", ratio <= 1.3)
        # the floor while every check runs: zoo check's backward pass holds the weights and a weight-sized gradient
        _, check_peak = peak_run([zoo, "check", "three-layer-stack", "--param", f"width={width}"])
        report.add(f"5. {size} stack, zoo check alone: (peak RSS − tiny export's) / weights", f"{(check_peak - tiny) / 1e9:.2f} GB", size, (check_peak - tiny) / weight_bytes, "-", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="also export and verify 1 GB and 2.15 GB models (ratio 5)")
    parser.add_argument("--repeats", type=int, default=5, help="whole-process runs per command (ratios 1, 2)")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of timed calls per runtime and batch size")
    parser.add_argument("--only", type=lambda text: {int(n) for n in text.split(",")}, default=None, help="ratio numbers to measure, e.g. 6,7 (5 needs no --large here)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and onnxruntime (ratios 3, 4)")
    parser.add_argument("--optimum-cli", default=shutil.which("optimum-cli"), help="optimum-cli to compare with (ratio 9; default: on PATH)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"latencies: median per call, {args.budget:g} s budget after warm-up, {args.threads} intra-op thread(s) in both runtimes")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="zoo-benchmarks-") as name:
        folder = Path(name)
        steps = {
            (1, 2): lambda: cli_ratios(report, folder, args.repeats),
            (3,): lambda: latency_ratios(report, args.budget, args.threads),
            (4,): lambda: fold_ratios(report, folder, args.budget, args.threads),
            (6,): lambda: variant_ratios(report, folder, args.budget, args.threads),
            (7, 8): lambda: zoo_ratios(report, folder, max(1, args.repeats // 2)),
            (5,): lambda: large_ratios(report, folder),
            (9,): lambda: hf_ratios(report, folder, max(1, args.repeats // 2) + 1, args.optimum_cli),
        }
        wanted = args.only if args.only is not None else {1, 2, 3, 4, 6, 7, 8} | ({5} if args.large else set())
        for numbers, step in steps.items():
            if wanted & set(numbers):
                step()
    print()
    print(report.table())


if __name__ == "__main__":
    main()
