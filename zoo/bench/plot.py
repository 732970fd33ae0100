"""``zoo bench --plot``: the latency figure, drawn with matplotlib (an optional
dependency: ``zoo-onnx[plot]``), and the checks made before any timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.bench.results import BenchResult
from zoo.errors import UsageError
from zoo.files.paths import check_file_path
from zoo.files.writing import write_atomically
from zoo.spec.params import format_value
from zoo.text import human_seconds


def plot_latency(result: BenchResult, path: Path) -> None:
    """Draw ``latency_figure`` to ``path`` (atomically)."""
    import matplotlib.pyplot as plt


    figure = latency_figure(result)
    try:
        write_atomically(
            path, lambda handle: figure.savefig(handle, dpi=120, format=path.suffix[1:].lower() or "png"), "--plot", "write the plot"
        )
    finally:
        plt.close(figure)


def latency_figure(result: BenchResult) -> Any:
    """Median latency (p90 as the band's top) against batch size, one line per
    runtime, each batch's speed-up written above it, in readable time units."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    batches = [row.batch for row in result.rows]
    figure, axes = plt.subplots(figsize=(8, 5))
    providers = f" [{result.providers[0]}]" if result.providers else ""
    series = [
        (result.torch_runtime, [row.torch for row in result.rows]),
        (f"{result.onnx_runtime}{providers}", [row.onnx for row in result.rows]),
    ]
    if result.variant is not None:
        verdict = "" if result.variant["accepted"] else ", not accepted"
        series.append((f"{result.variant['name']} variant{verdict}", [row.variant for row in result.rows]))
    for label, timings in series:
        medians = [t.median for t in timings]
        axes.plot(batches, medians, marker="o", label=label)
        axes.fill_between(batches, medians, [t.p90 for t in timings], alpha=0.2)
    for row in result.rows:  # the speed-up above the slower runtime's point
        axes.annotate(
            f"{row.speedup:.2g}×" if row.speedup < 10 else f"{row.speedup:.0f}×",
            (row.batch, max(row.torch.median, row.onnx.median)),
            textcoords="offset points", xytext=(0, 9), ha="center", fontsize="small", fontweight="bold",
        )
    axes.set_xscale("log", base=2)
    axes.set_xticks(batches, [str(b) for b in batches])
    axes.minorticks_off()
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda seconds, _: human_seconds(seconds)))
    axes.margins(y=0.15)
    others = "".join(f", {name}={size}" for name, size in result.sizes.items())
    axes.set_xlabel(f"batch size{others}")
    axes.set_ylabel("latency per call (median; band to p90)")
    params = ", ".join(f"{k}={format_value(v)}" for k, v in result.params.items())
    axes.set_title(
        f"{result.architecture} on {result.device}: torch eager vs {result.format}, speed-up per batch\n{params}", fontsize="medium"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def check_plot_path(path: Path) -> None:
    """Refuse a ``--plot`` path that cannot be written, before minutes of timing."""
    from matplotlib.backend_bases import FigureCanvasBase


    check_file_path(path, "--plot", example=" such as latency.png")

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise UsageError(f"--plot {path.name!r}: matplotlib cannot draw {path.suffix!r} files; use .png (or {', '.join(sorted(formats))})")


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'zoo-onnx[plot]'") from None
