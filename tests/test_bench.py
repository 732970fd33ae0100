"""zoo bench: real exports timed in torch and onnxruntime. Numbers are noisy
here, so tests check the bookkeeping (counts, order, ratios), never speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import zoo as zoo_api
from zoo.bench.plot import check_plot_path, latency_figure, plot_latency
from zoo.bench.results import BenchResult, BenchRow, Timing
from zoo.bench.timing import MIN_CALLS, bench_model, parse_batch_sizes, time_calls
from zoo.build.model import build_model
from zoo.cli.render import bench_lines
from zoo.errors import OutputPathError, UsageError
from zoo.host.manager import load_zoo


def test_time_calls_warms_up_then_times_at_least_min_calls() -> None:
    calls = []
    seconds = time_calls(lambda: calls.append(1), budget_s=0.0)
    assert len(seconds) >= MIN_CALLS
    assert len(calls) >= len(seconds) + 3  # at least three warm-up calls were not timed
    assert all(s >= 0 for s in seconds)


def test_bench_model_times_both_runtimes_per_batch_size(zoo) -> None:
    built = build_model(zoo.architecture("binary"))
    result = bench_model(built, zoo.exporter("onnx"), batch_sizes=(1, 5), budget_s=0.02)
    assert [row.batch for row in result.rows] == [1, 5]
    assert result.providers == ["CPUExecutionProvider"]
    for row in result.rows:
        for timing in (row.torch, row.onnx):
            assert len(timing.seconds) >= MIN_CALLS
            assert 0 < min(timing.seconds) <= timing.median <= timing.p90 <= max(timing.seconds)
            assert timing.throughput == pytest.approx(row.batch / timing.median)
        assert row.speedup == pytest.approx(row.torch.median / row.onnx.median)
    record = result.to_dict()
    assert record["rows"][1]["onnxruntime"]["samples_per_s"] == pytest.approx(result.rows[1].onnx.throughput)


def test_bench_with_fold_linear_times_the_folded_export(zoo) -> None:
    built = build_model(zoo.architecture("stack"))
    result = bench_model(built, zoo.exporter("onnx"), batch_sizes=(2,), budget_s=0.01, options={"fold_linear": True})
    assert result.export_stats["fold_linear"]["nodes_removed"] == 2


def test_bench_threads_sets_both_runtimes_and_restores_torch(zoo) -> None:
    import torch

    before = torch.get_num_threads()
    built = build_model(zoo.architecture("binary"))
    result = bench_model(built, zoo.exporter("onnx"), batch_sizes=(1,), budget_s=0.01, threads=1)
    assert "threads 1" in result.torch_runtime and "threads 1" in result.onnx_runtime
    assert result.onnx_runtime.startswith("onnxruntime ") and result.providers == ["CPUExecutionProvider"]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("text", ["", "0", "1,-2", "a,b", "1;2"])
def test_bad_batch_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--batch-sizes"):
        parse_batch_sizes(text)


def test_cli_bench_table_and_json(run) -> None:
    result = run("bench", "stack", "--batch-sizes", "1,8", "--budget", "0.02")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("SIZES"))
    assert header.split() == ["SIZES", "TORCH", "MEDIAN", "TORCH", "P90", "ORT", "MEDIAN", "ORT", "P90", "TORCH", "SAMPLES/S", "ORT", "SAMPLES/S", "SPEED-UP"]
    rows = [line.split()[0] for line in result.output.splitlines() if line.startswith("batch=")]
    assert rows == ["batch=1", "batch=8"]
    as_json = run("bench", "binary", "--batch-sizes", "3", "--budget", "0.02", "--json")
    assert as_json.exit_code == 0, as_json.output
    record = json.loads(as_json.output)
    assert record["architecture"] == "binary-sigmoid" and [r["batch"] for r in record["rows"]] == [3]


def test_cli_bench_bad_batch_sizes_exit_2(run) -> None:
    result = run("bench", "binary", "--batch-sizes", "0,64")
    assert result.exit_code == 2
    assert "--batch-sizes" in result.output


def test_cli_plot_without_matplotlib_is_one_line_and_exit_2(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without it gives
    result = run("bench", "binary", "--plot", "latency.png")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["zoo: error: --plot needs matplotlib: pip install 'zoo-onnx[plot]'"]


def test_cli_plot_writes_a_png(run, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = run("bench", "binary", "--batch-sizes", "1,4", "--budget", "0.01", "--plot", "latency.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FixedBatch:
    """An architecture whose batch is a fixed 4: nothing for bench to vary."""

    @zoo_api.hookimpl
    def register_architectures(self, register):
        from torch import nn

        def build(features: int = 3) -> nn.Module:
            return nn.Linear(features, 2)

        register(
            zoo_api.Architecture(
                name="fixed", build=build, inputs=(zoo_api.Input("x", (4, "features")),), outputs=(zoo_api.Output("y"),)
            )
        )


def test_bench_needs_a_batch_dimension() -> None:
    zoo = load_zoo(entry_points=False, extra=[("fixed", FixedBatch())])
    with pytest.raises(UsageError, match="no dynamic 'batch'"):
        bench_model(build_model(zoo.architecture("fixed")), zoo.exporter("onnx"))


def test_onnx_load_threads_reach_the_session_bench_times(zoo, tmp_path: Path) -> None:
    from zoo.exporting.pipeline import export_model

    path = tmp_path / "m.onnx"
    assert export_model(build_model(zoo.architecture("binary")), zoo.exporter("onnx"), path).ok
    runner = zoo.runtime("onnxruntime").load(path, "cpu", {"threads": "2"})
    assert runner.session.get_session_options().intra_op_num_threads == 2
    assert runner.info.description.endswith("(threads 2)")


class WithoutSession(zoo_api.Runner):
    """A format's own runner that verifies fine but has no onnxruntime session to time."""

    def __init__(self, path, device) -> None:
        from zoo.exporters import onnx as onnx_format

        self._runner = onnx_format.load(path, device)
        self.info = zoo_api.RunnerInfo("other-onnx", "1.0")
        self.input_names, self.output_names, self.input_shapes = self._runner.input_names, self._runner.output_names, {}

    def run(self, feed):
        return self._runner.run(feed)


def test_bench_times_the_runner_of_a_format_without_an_onnxruntime_session(zoo) -> None:
    """bench asks the loaded runner: without a session, it times runner(feed)."""
    from dataclasses import replace

    other = replace(zoo.exporter("onnx"), name="other-onnx", load=WithoutSession)
    result = bench_model(build_model(zoo.architecture("binary")), other, batch_sizes=(1, 3), budget_s=0.01)
    assert (result.format, result.label) == ("other-onnx", "OTHER-ONNX")
    assert [row.onnx.runtime for row in result.rows] == ["other-onnx", "other-onnx"]
    assert all(len(row.onnx.seconds) >= MIN_CALLS for row in result.rows)
    assert "OTHER-ONNX MEDIAN" in "\n".join(bench_lines(result))


def test_bench_size_sets_another_dynamic_dimension_and_every_row_names_it(example_zoo, run) -> None:
    result = run("bench", "text", "--size", "seq=20", "--batch-sizes", "1,3", "--budget", "0.01", "--json", zoo=example_zoo)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["sizes"] == {"seq": 20} and record["format"] == "onnx"
    assert [row["sizes"] for row in record["rows"]] == [{"batch": 1, "seq": 20}, {"batch": 3, "seq": 20}]
    text = run("bench", "text", "--size", "seq=20", "--batch-sizes", "2", "--budget", "0.01", zoo=example_zoo).output
    assert [line.split("  ")[0] for line in text.splitlines() if line.startswith("batch=")] == ["batch=2, seq=20"]


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("seq=65", "give DIM=SIZE with a size 2 to 64"),
        ("seq=x", "give DIM=SIZE with a size 2 to 64"),
        ("batch=3", "batch sizes are --batch-sizes"),
        ("width=3", "'width' is not a dynamic dimension of this architecture; it has: seq"),
    ],
)
def test_bench_size_is_refused_before_any_work(example_zoo, run, size: str, message: str) -> None:
    result = run("bench", "text", "--size", size, zoo=example_zoo)
    assert result.exit_code == 2 and message in result.output


def test_bench_format_pt2_times_the_format_runner(example_zoo, run) -> None:
    result = run("bench", "listing", "--format", "pt2", "--batch-sizes", "2", "--budget", "0.01", zoo=example_zoo)
    assert result.exit_code == 0, result.output
    assert "  pt2       torch.export program" in result.output and "PT2 MEDIAN" in result.output


def test_bench_times_any_format_whose_runner_has_a_session(zoo) -> None:
    from dataclasses import replace

    renamed = replace(zoo.exporter("onnx"), name="my-onnx", plugin="someone-else")
    result = bench_model(build_model(zoo.architecture("binary")), renamed, batch_sizes=(1,), budget_s=0.01)
    assert [row.batch for row in result.rows] == [1]


def tiny_result() -> BenchResult:
    rows = [BenchRow(b, Timing("torch", b, [2e-5, 3e-5]), Timing("onnxruntime", b, [1e-5, 2e-5])) for b in (1, 8)]
    return BenchResult("binary-sigmoid", {}, 0, "cpu", "torch", "onnxruntime", ["CPUExecutionProvider"], 0.01, rows)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("/proc/p.png", "--plot folder '/proc' is not writable"),  # a folder that refuses new files, even to root
        ("missing/p.png", "--plot folder 'missing' does not exist"),
        ("p.nope", "matplotlib cannot draw '.nope' files"),
    ],
)
def test_cli_plot_path_is_refused_before_timing(run, where: str, message: str) -> None:
    pytest.importorskip("matplotlib")
    if where.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    result = run("bench", "binary", "--plot", where)
    assert result.exit_code == 2
    assert result.stdout == ""  # nothing was timed
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("zoo: error: ") and message in line


def test_plot_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(OutputPathError, match="is a directory"):
        check_plot_path(tmp_path)


def test_plot_write_failure_is_a_zoo_error_and_leaves_nothing(tmp_path: Path) -> None:
    """The folder vanished, or a folder took the name, after the checks and the timing."""
    pytest.importorskip("matplotlib")
    with pytest.raises(OutputPathError, match="cannot write the plot .*ENOENT.* with --plot"):
        plot_latency(tiny_result(), tmp_path / "gone" / "p.png")
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(OutputPathError, match="cannot write the plot .*taken.png"):
        plot_latency(tiny_result(), tmp_path / "taken.png")
    assert [p.name for p in tmp_path.iterdir()] == ["taken.png"]  # no temporary file left


def test_plot_keeps_the_suffix_format(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot_latency(tiny_result(), tmp_path / "p.svg")
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()[:500]
    assert [p.name for p in tmp_path.iterdir()] == ["p.svg"]


@pytest.mark.cuda
def test_bench_on_cuda_times_the_cuda_provider(zoo) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    built = build_model(zoo.architecture("binary"), device="cuda")
    result = bench_model(built, zoo.exporter("onnx"), batch_sizes=(1, 64), budget_s=0.05)
    assert result.device == "cuda"
    if not result.note:  # an onnxruntime with the CUDA provider
        assert result.providers[0] == "CUDAExecutionProvider"
    assert all(row.onnx.median > 0 and row.torch.median > 0 for row in result.rows)


def test_plot_reads_in_time_units_with_speedups_and_parameters() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    result = tiny_result()
    result.params = {"hidden": (4, 3)}
    result.sizes = {"seq": 128}
    figure = latency_figure(result)
    try:
        figure.canvas.draw()
        (axes,) = figure.axes
        ticks = [t.get_text() for t in axes.get_yticklabels() if t.get_text()]
        assert ticks and all(t.endswith("µs") for t in ticks), ticks  # not 10⁻⁵
        assert [a.get_text() for a in axes.texts] == ["1.7×?", "1.7×?"]  # 2 calls each: not a measurement
        assert "hidden=4,3" in axes.get_title() and "seq=128" in axes.get_xlabel()
    finally:
        plt.close(figure)


def test_a_timing_of_few_calls_or_wide_spread_is_flagged_and_its_speedup_not_stated() -> None:
    steady = [1e-3 + 1e-6 * i for i in range(20)]
    assert Timing("torch", 1, steady).unreliable is None
    assert Timing("torch", 1, steady[:5]).unreliable == "5 calls (fewer than 10)"
    # the Wav2Vec2: a few calls of 1 ms among calls of 844 ms
    noisy = [1e-3] * 6 + [0.844] * 6
    assert "wider than the median" in Timing("torch", 1, noisy).unreliable
    result = tiny_result()
    result.rows = [BenchRow(1, Timing("torch", 1, [0.844] * 3 + [1e-3, 1e-3]), Timing("onnxruntime", 1, [1e-4] * 50))]
    from zoo.records import to_json

    record = json.loads(json.dumps(to_json(result)))
    row = record["rows"][0]
    assert row["speedup_reliable"] is False and row["torch"]["unreliable"] == "5 calls (fewer than 10)"
    assert row["onnxruntime"]["unreliable"] is None
    text = "\n".join(bench_lines(result))
    assert f"({result.rows[0].speedup:.2f}×?)" in text and f" {result.rows[0].speedup:.2f}× " not in text
    assert "warning: batch=1 torch: 5 calls (fewer than 10); its speed-up (in brackets) is no measurement" in text


def test_a_real_bench_reports_whether_each_timing_is_a_measurement(run) -> None:
    result = run("bench", "binary", "--batch-sizes", "1", "--budget", "0.2", "--json")
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)["rows"][0]
    assert isinstance(row["speedup_reliable"], bool)
    assert row["speedup_reliable"] == (row["torch"]["unreliable"] is None and row["onnxruntime"]["unreliable"] is None)
