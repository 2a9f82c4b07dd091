"""`mnet-backbones bench`: the tables it prints and a smoke run. Speed itself is never asserted."""

import keras
import pytest

from conftest import REFERENCE
from mnet_tools import bench, cli

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="bench times TensorFlow graph mode and LiteRT; run with KERAS_BACKEND=tensorflow.",
)


def table_rows(text):
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


def test_results_table_figures_and_ratios():
    ms = 1e-3
    rows = [
        bench.Timing("mobilenetv2_100", 3_504_872, 300_000_000, 8 * ms, 80 * ms, 6 * ms, 2 * ms, 12.0, 1, 200e9),
        bench.Timing("keras.applications/mobilenetv2_100", 3_504_872, 300_000_000, 10 * ms, 100 * ms, 5 * ms),
        bench.Timing("mobilenetv4_conv_small", 3_774_024, 186_000_000, 4 * ms),
    ]
    text = bench.results_table(rows, bench.Machine(gemm_rate=100e9, conv_int8_speedup=1.25))
    figures, _, *body = table_rows(text.split("\n\n")[0])
    assert figures[0] == "model" and len(body) == 3
    ours = dict(zip(figures, body[0]))
    assert ours["params (M)"] == "3.50"
    assert ours["MACs (M)"] == "300.0"
    assert ours["TF graph b1 ms"] == "8.00"
    assert ours["int8 speed-up"] == "3.00"  # 6 ms / 2 ms
    assert ours["int8 partitions"] == "1"
    assert ours["MAC bound ms"] == "3.00"  # 2 x 3e8 / 2e11 s: the rate timed alongside this row
    assert ours["fp32 / bound"] == "2.00"
    assert ours["LiteRT peak MiB"] == "12"
    unmeasured = dict(zip(figures, body[2]))
    assert unmeasured["TF graph b32 ms"] == "-" and unmeasured["LiteRT int8 ms"] == "-"
    assert unmeasured["MAC bound ms"] == "3.72"  # no rate of its own: NumPy's, 2 x 1.86e8 / 1e11 s

    ratio_header, _, *ratio_rows = table_rows(text.split("\n\n")[1])
    assert ratio_rows == [["mobilenetv2_100", "0.80", "0.80", "1.20", "-"]]
    assert "NumPy 100.0 GFLOP/s" in text and "LiteRT 200.0-200.0 GFLOP/s" in text
    assert "int8 speed-up of 1x1 convolutions alone (LiteRT): 1.25" in text


def test_ratios_pair_runs_timed_in_turn():
    ms = 1e-3
    # Run 2 hit a slow spell for ours, run 3 for theirs: the ratio of medians
    # (3 / 2 = 1.50) compares a fast run with a slow one; the pairs say 1.00.
    ours = bench.Timing("mobilenetv2_100", 3_504_872, 300_000_000, graph_batch1=3 * ms)
    ours.samples["graph_batch1"] = [1 * ms, 3 * ms, 10 * ms]
    theirs = bench.Timing("keras.applications/mobilenetv2_100", 3_504_872, 300_000_000, graph_batch1=2 * ms)
    theirs.samples["graph_batch1"] = [1 * ms, 6 * ms, 2 * ms]
    # float32 over int8 run by run: 2, 1, 4 -> 2.00 (medians: 4 / 3 = 1.33).
    ours.litert_float32, ours.litert_int8 = 4 * ms, 3 * ms
    ours.samples.update(litert_float32=[4 * ms, 3 * ms, 8 * ms], litert_int8=[2 * ms, 3 * ms, 2 * ms])
    # GEMM probe runs whose rates put the bound of 3e8 MACs at 3, 6, 6 ms: float32
    # over bound is 1.33, 0.50, 1.33 -> 1.33 (medians: 4 / 6 = 0.67).
    ours.samples["gemm"] = [bound * bench.GEMM_FLOPS / (2 * 300_000_000) for bound in (3 * ms, 6 * ms, 6 * ms)]
    ours.gemm_rate = bench.GEMM_FLOPS / ours.samples["gemm"][1]
    text = bench.results_table([ours, theirs], bench.Machine(gemm_rate=100e9))
    header, _, *body = table_rows(text.split("\n\n")[0])
    row = dict(zip(header, body[0]))
    assert row["int8 speed-up"] == "2.00"
    assert row["fp32 / bound"] == "1.33"
    assert row["MAC bound ms"] == "6.00"  # at the probe's median rate
    _, _, ratios = table_rows(text.split("\n\n")[1])
    assert ratios[:2] == ["mobilenetv2_100", "1.00"]


def test_paired_ratio_needs_equal_runs():
    assert bench.paired_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 3.0]) == 2.0
    with pytest.raises(ValueError, match="3 and 2"):
        bench.paired_ratio([1.0, 2.0, 3.0], [1.0, 2.0])


def test_unknown_preset_is_a_one_line_error(capsys):
    assert cli.main(["bench", "mobilenetv9"]) == 2
    error = capsys.readouterr().err
    assert "mobilenetv9" in error and "mobilenetv4_conv_small" in error


def test_quick_run_measures_ours_and_the_peer(capsys, tmp_path):
    plot = tmp_path / "pareto.png"
    status = cli.main(["bench", "--quick", "mobilenetv1_025", "--plot", str(plot)])
    assert status == 0
    out = capsys.readouterr().out
    header, _, *rows = table_rows(out.split("\n\n")[0])
    by_model = {row[0]: dict(zip(header, row)) for row in rows}
    assert set(by_model) == {"mobilenetv1_025", "keras.applications/mobilenetv1_025"}
    for row in by_model.values():
        # Same architecture as keras.applications: same parameters, REFERENCE.md's MACs.
        assert row["params (M)"] == f"{REFERENCE['mobilenetv1_025']['classifier_params'] / 1e6:.2f}"
        assert float(row["MACs (M)"]) == pytest.approx(REFERENCE["mobilenetv1_025"]["macs_millions"], rel=0.02)
        for field in ("TF graph b1 ms", "LiteRT fp32 ms", "LiteRT int8 ms"):
            assert float(row[field]) > 0, (field, row)
        assert float(row["LiteRT peak MiB"]) >= 1  # weights, packed copies and activations
        assert int(row["int8 partitions"]) >= 1
        assert row["TF graph b32 ms"] == "-"  # --quick: batch 1 only
    assert by_model["mobilenetv1_025"]["int8 partitions"] == "1"  # XNNPACK takes all of ours
    _, _, ratio = table_rows(out.split("\n\n")[1])
    assert ratio[0] == "mobilenetv1_025" and float(ratio[1]) > 0 and float(ratio[3]) > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert float(out.split("int8 speed-up of 1x1 convolutions alone (LiteRT):")[1].split()[0]) > 0
    litert_rates = out.split("; LiteRT ")[1].split()[0].split("-")
    assert len(litert_rates) == 2 and all(float(rate) > 0 for rate in litert_rates)


def test_interleaved_medians_time_each_callable_in_turn():
    calls = []
    medians = bench.interleaved_medians([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up of each, then strictly alternating
    assert len(medians) == 2 and all(m >= 0 for m in medians)


def test_block_profile_splits_the_time_and_the_macs_by_block(capsys):
    status = cli.main(["bench", "--blocks", "--repeats", "2", "mobilenetv1_025"])
    assert status == 0
    out = capsys.readouterr().out
    assert out.startswith("mobilenetv1_025")
    header, _, *rows = table_rows(out)
    by_block = {row[0]: dict(zip(header, row)) for row in rows}
    # V1: the stem, 13 depthwise-separable blocks, the head, and the total.
    assert list(by_block)[0] == "stem" and list(by_block)[-2:] == ["classifier head", "total"]
    assert len(rows) == 1 + 13 + 2
    assert by_block["stem"]["output"] == "112x112x8"
    total_macs = float(by_block["total"]["MACs (M)"])
    assert total_macs == pytest.approx(REFERENCE["mobilenetv1_025"]["macs_millions"], rel=0.02)
    assert sum(float(row["MACs (M)"]) for name, row in by_block.items() if name != "total") == pytest.approx(
        total_macs, abs=0.1 * len(rows)
    )
    assert float(out.split("float32 GEMM rate: ")[1].split()[0]) > 0 and "GFLOP/s (LiteRT" in out


def test_block_profile_rejects_an_unknown_preset():
    with pytest.raises(ValueError, match="mobilenetv9"):
        bench.block_profile("mobilenetv9")


def test_task_table_ratios_to_torchvision_pair_runs_and_say_what_is_compared():
    ms = 1e-3
    ours = bench.TaskTiming("lraspp_mobilenetv3_large_voc", 3_221_538, (520, 520), 2_100_000_000)
    ours.torchvision_note = "torchvision 0.28 eager (torch 2.13), 2 threads"
    # Run 2 was slow for ours, run 3 for torchvision: the pairs say 0.50, medians 4 / 8.
    ours.samples.update(
        graph_batch1=[2 * ms, 9 * ms, 4 * ms],
        litert_float32=[1 * ms, 2 * ms, 1 * ms],
        torchvision=[4 * ms, 8 * ms, 30 * ms],
    )
    ours.graph_batch1, ours.litert_float32, ours.torchvision = 4 * ms, 1 * ms, 8 * ms
    ours.int8_partitions = 1
    alone = bench.TaskTiming("deeplabv3_mobilenetv3_large_voc", 11_029_328, (520, 520), graph_batch1=30 * ms)
    alone.torchvision_note = "torchvision not available (ModuleNotFoundError); not compared"
    text = bench.task_results_table([ours, alone])
    header, _, *body = table_rows(text.split("\n\n")[0])
    row, other = dict(zip(header, body[0])), dict(zip(header, body[1]))
    assert row["input"] == "520x520" and row["params (M)"] == "3.22" and row["MACs (M)"] == "2100"
    assert row["torchvision CPU ms"] == "8.00"
    assert row["TF graph / tv"] == "0.50"  # 2/4, 9/8, 4/30 -> median 0.50
    assert row["LiteRT fp32 / tv"] == "0.25"
    assert row["LiteRT int8 / tv"] == "-" and row["int8 partitions"] == "1"
    assert other["torchvision CPU ms"] == "-" and other["TF graph / tv"] == "-" and other["MACs (M)"] == "-"
    notes = text.split("\n\n")[1]
    assert "lraspp_mobilenetv3_large_voc: torchvision column: torchvision 0.28 eager" in notes
    assert "deeplabv3_mobilenetv3_large_voc: torchvision column: torchvision not available" in notes


def test_without_torchvision_nothing_stands_in_for_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    monkeypatch.setitem(sys.modules, "torchvision.models.segmentation", None)
    run, note = bench.torchvision_runner("lraspp_mobilenetv3_large_voc", (64, 64))
    assert run is None and "not compared" in note


def test_task_run_times_every_runtime_in_turn_with_torchvision(monkeypatch):
    calls = []
    monkeypatch.setattr(
        bench, "torchvision_runner", lambda name, size, checkpoint=None: (lambda: calls.append(size), "a stand-in")
    )
    (timing,) = bench.run_task_benchmark(["lraspp_mobilenetv3_large_voc"], repeats=3, image_size=(64, 80), int8=False)
    assert timing.image_size == (64, 80) and timing.params == 3_221_538  # torchvision's num_params
    assert calls == [(64, 80)] * (2 + 3)  # warm-up, then once per round
    for field in ("graph_batch1", "litert_float32", "torchvision"):
        assert len(timing.samples[field]) == 3 and getattr(timing, field) > 0
    assert timing.litert_int8 is None and timing.torchvision_note == "a stand-in"
    with pytest.raises(ValueError, match="mobilenetv9"):
        bench.run_task_benchmark(["mobilenetv9"])
    with pytest.raises(ValueError, match=r"\(320, 320\)"):
        bench.pretrained_head("ssdlite320_mobilenetv3_large_coco", image_size=(64, 64))


def test_torchvision_runner_runs_torchvisions_builder_in_eval_mode(monkeypatch):
    # A stand-in torchvision package: the runner's own glue (builder, eval, threads, inference mode) is what runs.
    import sys
    import types

    torch = pytest.importorskip("torch")
    built = []

    class Segmenter(torch.nn.Module):
        def forward(self, images):
            assert not self.training and torch.is_inference_mode_enabled()
            return {"out": images.mean(1, keepdim=True)}

    def lraspp_mobilenet_v3_large(weights, weights_backbone):
        assert weights is None and weights_backbone is None
        built.append(Segmenter())
        return built[-1]

    fake = types.ModuleType("torchvision")
    fake.__version__ = "0.0-test"
    fake.models = types.ModuleType("torchvision.models")
    fake.models.segmentation = types.SimpleNamespace(lraspp_mobilenet_v3_large=lraspp_mobilenet_v3_large)
    fake.models.detection = types.SimpleNamespace()
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.models", fake.models)
    threads = torch.get_num_threads()
    try:
        run, note = bench.torchvision_runner("lraspp_mobilenetv3_large_voc", (24, 40))
        assert tuple(run().shape) == (1, 1, 24, 40) and len(built) == 1
        assert torch.get_num_threads() == bench.litert.THREADS
        assert "torchvision 0.0-test eager" in note and "the whole model" in note
    finally:
        torch.set_num_threads(threads)
