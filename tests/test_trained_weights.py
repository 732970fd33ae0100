"""Trained weight sets as zoo entries: registered, fetched safely, their claimed metric proven after export.

The example plugin ships a real one (``digits``: scikit-learn's digits, for the seed's
``multiclass-softmax``); downloads are served from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

import zoo
from zoo.build.trained import resolve_weights
from zoo.errors import DownloadError, UsageError, WeightsError
from zoo.files.cache import cached_files, fetch
from zoo.host.manager import load_zoo

EXAMPLE_DATA = Path(__file__).resolve().parent.parent / "examples" / "zoo-example-plugin" / "zoo_example_plugin" / "data"


class Server:
    """Files by URL path; ``mode`` changes what is sent: ``ok``, ``tampered``, ``truncated``, ``oversized``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mode = "ok"
        self.requests: list[str] = []
        self.release = threading.Event()  # ends a stalled answer
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                if server.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://example.com/digits.safetensors")
                    self.end_headers()
                    return
                if server.mode == "stalled":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:100])
                    self.wfile.flush()
                    server.release.wait(10)
                    return
                if server.mode == "tampered":
                    body = body[:-1] + bytes([body[-1] ^ 1])
                sent = body[: len(body) // 2] if server.mode == "truncated" else body + b"x" * 100 if server.mode == "oversized" else body
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))  # a truncated one lies, as a dropped connection does
                self.end_headers()
                self.wfile.write(sent)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()
    for path in EXAMPLE_DATA.iterdir():
        served.files[f"/{path.name}"] = path.read_bytes()
    yield served
    served.release.set()
    served.httpd.shutdown()
    served.httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE_DIR", str(folder))
    return folder


def company_plugin(example_plugin: types.ModuleType, **changes: object) -> types.ModuleType:
    """A second plugin registering the example's digits weights (changed) for the seed's architecture."""
    digits = example_plugin.weights.DIGITS
    entry = dataclasses.replace(digits, **{"name": "company", "default": False, **changes})
    plugin = types.ModuleType("company_weights")
    plugin.register_weights = zoo.hookimpl(lambda register: register(entry))
    return plugin


def url_entry(example_plugin: types.ModuleType, server: Server, **changes: object) -> dict[str, object]:
    digits = example_plugin.weights.DIGITS
    heldout = dataclasses.replace(digits.claim.eval_set, source=f"{server.url}/digits-heldout.npz")
    return {"source": f"{server.url}/digits.safetensors", "claim": dataclasses.replace(digits.claim, eval_set=heldout), **changes}


def with_company(example_plugin: types.ModuleType, **changes: object) -> zoo.Zoo:
    the_zoo = load_zoo(entry_points=False, extra=[("example", example_plugin), ("company", company_plugin(example_plugin, **changes))])
    assert not the_zoo.problems, the_zoo.problems
    return the_zoo


def test_show_and_list_name_the_weight_set_and_its_metric(run, example_zoo):
    shown = run("show", "multiclass", zoo=example_zoo)
    assert "digits (default)  accuracy 0.972 on the digits held-out split  (plugin example; in_features=64, hidden=32" in shown.stdout
    record = json.loads(run("show", "multiclass", "--json", zoo=example_zoo).stdout)
    (weights,) = record["weights"]
    assert (weights["name"], weights["claim"]["metric"], weights["claim"]["value"]) == ("digits", "accuracy", 0.972)
    listed = run("list", zoo=example_zoo).stdout.splitlines()
    assert "WEIGHTS" in listed[0] and any(line.startswith("multiclass-softmax") and " digits " in line for line in listed)
    assert {r["name"]: r["weights"] for r in json.loads(run("list", "--json", zoo=example_zoo).stdout)}["multiclass-softmax"] == ["digits"]
    plugins = run("plugins", zoo=example_zoo).stdout
    assert "weights: multiclass-softmax.digits" in plugins


def test_export_with_a_named_weight_set_rescores_its_claim_and_verify_finds_it(run, example_zoo, tmp_path):
    result = run("export", "multiclass", "--weights", "digits", "--report", "r.json", zoo=example_zoo)
    assert result.exit_code == 0, result.output
    assert "  weights   digits (plugin example), sha256 c47a51395009926a…" in result.stdout
    assert "claim     accuracy 97.2% (claimed 97.2%) on the digits held-out split, 359 rows: torch 97.2%, onnx 97.2%  ok" in result.stdout
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["params"] == {"in_features": 64, "hidden": [32], "n_classes": 10, "activation": "relu"}
    assert record["weights"]["name"] == "digits" and record["weights"]["sha256"].startswith("c47a5139")
    assert record["claim"]["scores"] == {"torch": pytest.approx(0.9721, abs=1e-4), "onnx": pytest.approx(0.9721, abs=1e-4)}
    meta = {p.key: p.value for p in onnx.load(tmp_path / "multiclass-softmax.onnx").metadata_props}
    assert meta["zoo.weights"] == "digits" and meta["zoo.weights_sha256"] == record["weights"]["sha256"]
    verified = run("verify", "multiclass-softmax.onnx", "--json", zoo=example_zoo)  # no --weights: the file names the set
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["claim"]["scores"]["onnx"] == pytest.approx(0.9721, abs=1e-4)


def test_a_claim_the_export_misses_fails_with_the_measured_number_and_places_nothing(run, example_plugin, tmp_path):
    digits = example_plugin.weights.DIGITS
    the_zoo = with_company(example_plugin, claim=dataclasses.replace(digits.claim, value=0.99))
    result = run("export", "multiclass", "--weights", "company", "--json", zoo=the_zoo)
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and not record["claim"]["failures"] == []
    assert "claims accuracy 99.0% on the digits held-out split, but the onnx file reaches 97.2% (tolerance 0.5%)" in record["error"]
    assert not (tmp_path / "multiclass-softmax.onnx").exists()


def test_weights_from_a_loopback_url_download_once_then_come_from_the_cache(run, example_plugin, server, cache):
    the_zoo = with_company(example_plugin, **url_entry(example_plugin, server))
    result = run("export", "multiclass", "--weights", "company", zoo=the_zoo)
    assert result.exit_code == 0, result.output
    assert "claim     accuracy 97.2% (claimed 97.2%)" in result.stdout
    assert sorted(server.requests) == ["/digits-heldout.npz", "/digits.safetensors"]
    assert sorted(c.path.name for c in cached_files(cache)) == ["company.eval.npz", "company.safetensors"]
    verified = run("verify", "multiclass-softmax.onnx", zoo=the_zoo)
    assert verified.exit_code == 0, verified.output
    assert len(server.requests) == 2  # both files came from the cache
    listed = json.loads(run("weights", "--json", zoo=the_zoo).stdout)
    assert {w["name"]: w["cached"] for w in listed["weights"]} == {"company": True, "digits": None}
    removed = json.loads(run("weights", "--remove", "multiclass.company", "--json", zoo=the_zoo).stdout)
    assert len(removed["removed"]) == 2 and removed["cache"]["files"] == [] and cached_files(cache) == []


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("tampered", "has sha256 "),
        ("truncated", "is truncated: 4,960 of 9,920 bytes"),
        ("oversized", "sends 10,020 bytes, over the 9,920 its entry declares"),
    ],
)
def test_a_bad_download_is_refused_and_nothing_is_cached(server, cache, mode, message):
    server.mode = mode
    if mode == "oversized":
        server.files["/digits.safetensors"] += b"x" * 100
    digits = EXAMPLE_DATA / "digits.safetensors"
    sha = __import__("hashlib").sha256(digits.read_bytes()).hexdigest()
    with pytest.raises(DownloadError, match="weight set 'w'") as caught:
        fetch(f"{server.url}/digits.safetensors", sha, digits.stat().st_size, "w.safetensors", "weight set 'w'")
    assert message in str(caught.value) and "nothing was cached" in str(caught.value)
    assert cached_files(cache) == [] and not any(p.is_file() for p in cache.rglob("*"))


@pytest.mark.parametrize(
    ("mode", "message"),
    [("stalled", "cannot download http://127.0.0.1:"), ("redirect", "refused to fetch http://example.com/digits.safetensors")],
)
def test_a_stalled_server_times_out_and_a_redirect_off_loopback_http_is_refused(server, cache, monkeypatch, mode, message):
    import zoo.files.cache

    monkeypatch.setattr(zoo.files.cache, "TIMEOUT_S", 0.5)
    server.mode = mode
    with pytest.raises(DownloadError, match="weight set 'w'") as caught:
        fetch(f"{server.url}/digits.safetensors", "0" * 64, 9920, "w.safetensors", "weight set 'w'")
    assert message in str(caught.value)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_a_tampered_download_on_the_command_line_is_one_line_exit_1(run, example_plugin, server, cache):
    server.mode = "tampered"
    the_zoo = with_company(example_plugin, **url_entry(example_plugin, server))
    result = run("export", "multiclass", "--weights", "company", zoo=the_zoo)
    assert result.exit_code == 1
    assert result.stderr.startswith("zoo: error: weight set 'company' of multiclass-softmax (plugin 'company'): http://127.0.0.1:")
    assert "nothing was cached" in result.stderr and cached_files(cache) == []
    assert not Path("multiclass-softmax.onnx").exists()


def test_a_second_plugins_weights_for_the_first_plugins_architecture_work(example_plugin):
    the_zoo = with_company(example_plugin)
    arch = the_zoo.architecture("multiclass")
    assert [(w.name, w.plugin) for w in the_zoo.weights.of(arch.name)] == [("company", "company"), ("digits", "example")]
    assert the_zoo.plugins["company"].weights == ["multiclass-softmax.company"]
    choice = resolve_weights(the_zoo, arch, "company")
    assert choice.path == EXAMPLE_DATA / "digits.safetensors" and choice.entry.plugin == "company"
    assert resolve_weights(the_zoo, arch, "default").entry.name == "digits"


def test_names_and_files_on_the_command_line(run, example_zoo, tmp_path):
    unknown = run("export", "multiclass", "--weights", "digts", zoo=example_zoo)
    assert unknown.exit_code == 2
    assert "not a weight set of multiclass-softmax (its weight sets: digits) nor a weights file" in unknown.stderr
    no_default = run("export", "binary", "--weights", "default", zoo=example_zoo)
    assert no_default.exit_code == 2 and "binary-sigmoid has no default weight set" in no_default.stderr
    overridden = run("export", "multiclass", "--weights", "digits", "-p", "hidden=16", zoo=example_zoo)
    assert overridden.exit_code == 2 and "does not fit multiclass-softmax" in overridden.stderr  # -p wins, and the file says so
    assert not (tmp_path / "multiclass-softmax.onnx").exists()


def test_a_shipped_file_that_changed_is_refused(example_plugin, tmp_path):
    changed = tmp_path / "digits.safetensors"
    changed.write_bytes((EXAMPLE_DATA / "digits.safetensors").read_bytes()[:-1] + b" ")
    the_zoo = with_company(example_plugin, source=changed)
    with pytest.raises(WeightsError, match=r"weight set 'company' .* has sha256 .*, not the c47a51395009926a… its entry pins; reinstall"):
        resolve_weights(the_zoo, the_zoo.architecture("multiclass"), "company")


def test_registration_faults_are_isolated_and_named(example_plugin):
    digits = example_plugin.weights.DIGITS

    def plugin(*entries: object, raises: bool = False) -> types.ModuleType:
        module = types.ModuleType("faulty")

        def register_weights(register):
            for entry in entries:
                register(entry)
            if raises:
                raise RuntimeError("boom")

        module.register_weights = zoo.hookimpl(register_weights)
        return module

    the_zoo = load_zoo(
        entry_points=False,
        extra=[
            ("example", example_plugin),
            ("unknown_arch", plugin(dataclasses.replace(digits, name="x", architecture="nope", default=False))),
            ("bad_params", plugin(dataclasses.replace(digits, name="y", params={"widht": 3}, default=False))),
            ("taken", plugin(dataclasses.replace(digits, default=False))),
            ("not_weights", plugin("digits.safetensors")),
            ("raises", plugin(dataclasses.replace(digits, name="z", default=False), raises=True)),
        ],
    )
    problems = "\n".join(the_zoo.problems)
    assert "plugin 'unknown_arch': weight set 'x' names architecture 'nope', which no plugin registered; skipped" in problems
    assert "plugin 'bad_params': weight set 'y': multiclass-softmax has no parameter 'widht'" in problems
    assert "plugin 'taken': weight set 'digits' of multiclass-softmax is already registered by plugin 'example'; skipped" in problems
    assert "plugin 'not_weights': register() got str, not a zoo.Weights; skipped" in problems
    assert "plugin 'raises': register_weights raised RuntimeError: boom; nothing it registered was kept" in problems
    assert [w.name for w in the_zoo.weights] == ["digits"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"source": "http://example.com/w.safetensors", "size": 10}, "must be an https:// URL (http:// only to a loopback address)"),
        ({"source": "https://example.com/w.safetensors", "size": None}, "a URL source needs size="),
        ({"sha256": "abc"}, "sha256 must be 64 lowercase hex digits"),
        ({"source": "w.safetensors"}, "an absolute file path"),
        ({"format": "state_dict"}, "a state_dict file ends in .pt, .pth, .bin"),
        ({"name": "default"}, "'default' is reserved"),
        ({"claim": "accuracy"}, "claim must be a zoo.MetricClaim"),
    ],
)
def test_weights_entries_are_checked_where_they_are_written(example_plugin, changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        dataclasses.replace(example_plugin.weights.DIGITS, **changes)


def test_the_example_weights_reach_their_claim_in_pytorch(example_zoo, tmp_path):
    """The shipped entry is real: trained weights on a held-out split zoo can read."""
    from zoo.build.model import build_model
    from zoo.verification.claim import claimed_metric, load_eval_set, score

    arch = example_zoo.architecture("multiclass")
    choice = resolve_weights(example_zoo, arch, "digits")
    built = build_model(arch, choice.entry.params, weights=choice.path)
    inputs, labels = load_eval_set(EXAMPLE_DATA / "digits-heldout.npz", built, "held-out")
    import torch

    probabilities = built.forward({"x": torch.from_numpy(inputs["x"])})["probabilities"].numpy()
    accuracy = claimed_metric(arch.outputs[0], choice.entry.claim, "digits")
    assert labels.shape == (359,) and score(accuracy, arch.outputs[0], probabilities, labels) == pytest.approx(0.9721, abs=1e-4)
    with pytest.raises(UsageError, match=r"digits claims mae, but output 'probabilities' \(multiclass\) scores accuracy; tell the plugin's authors"):
        claimed_metric(arch.outputs[0], dataclasses.replace(choice.entry.claim, metric="mae"), "digits")
    with pytest.raises(UsageError, match="it needs x and labels"):
        import numpy as np

        np.savez(tmp_path / "bad.npz", x=inputs["x"])
        load_eval_set(tmp_path / "bad.npz", built, "held-out")


def test_bench_takes_the_same_names(example_zoo):
    from zoo.bench.timing import BenchRequest, plan_bench

    plan = plan_bench(example_zoo, BenchRequest("multiclass", ("activation=tanh",), "1", weights="default"))
    assert plan.weights == EXAMPLE_DATA / "digits.safetensors" and plan.weights_entry.name == "digits"
    assert plan.overrides == {"in_features": 64, "hidden": (32,), "n_classes": 10, "activation": "tanh"}  # -p wins


def test_download_progress_is_announced_and_ctrl_c_leaves_nothing(server, cache):
    from zoo.progress import showing

    digits = EXAMPLE_DATA / "digits.safetensors"
    sha = __import__("hashlib").sha256(digits.read_bytes()).hexdigest()
    url = f"{server.url}/digits.safetensors"

    def interrupt(_text: str) -> None:
        raise KeyboardInterrupt

    with showing(interrupt), pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle of the download
        fetch(url, sha, 9920, "w.safetensors", "weight set 'w'")
    assert not any(cache.rglob("*"))  # no temporary file, no folder
    stages: list[str] = []
    with showing(stages.append):
        path = fetch(url, sha, 9920, "w.safetensors", "weight set 'w'")
    assert stages[0] == "downloading weight set 'w': 9.9 kB of 9.9 kB" and stages[-1].startswith("downloaded weight set 'w' in ")
    assert path.read_bytes() == digits.read_bytes() and path == cache / sha / "w.safetensors"
