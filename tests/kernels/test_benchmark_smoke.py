"""The benchmark protocol (``benchmarks/``, repository only): its command, its CPU smoke path, and
that its timed region holds the loss only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.protocol import PROTOCOL_WORKLOADS, Provider, liger_provider, workloads
from benchmarks.run import RESULTS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke path is the CPU path")
def test_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--smoke", "--reps", "1", "--only", "ML-S,SEG,REG", "--out", str(tmp_path)]
    assert main([*argv, "--stem", "t"]) == 0
    out = capsys.readouterr().out
    assert "REG" in out and "wrote" in out
    data = json.loads((tmp_path / "t.json").read_text())
    ok = [r for r in data["results"] if r["status"] == "ok"]
    assert {r["workload"] for r in ok} == {"ML-S", "SEG", "REG"}
    assert {r["provider"] for r in ok} == {
        "eager_ref",
        "lossforge_torch",
        "lossforge_torch_unchecked",
    }
    assert data["header"]["device"] == "cpu"
    assert all(r["median_ms"] > 0 for r in ok)
    assert all(r["peak_extra_bytes"] > 0 and r["peak_B_per_logit"] >= 4 for r in ok)
    assert all(r["mem_ratio_vs_eager"] > 0 for r in ok)
    assert (tmp_path / "t.csv").read_text().startswith("workload,")
    md = (tmp_path / "t.md").read_text()
    assert "| workload |" in md and "peak_extra_MB" in md


def test_command_defaults_list_and_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args([])
    assert Path(args.out) == RESULTS == ROOT / "benchmarks" / "results"
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(w in out for w in PROTOCOL_WORKLOADS)
    assert main(["--only", "DET,NOPE", "--out", str(tmp_path)]) == 2
    assert "unknown workload 'NOPE'" in capsys.readouterr().err
    assert main(["--smoke", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "drop --device cuda" in capsys.readouterr().err
    assert main(["--reps", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written by a usage error


def test_cpu_scale_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--cpu-scale S``: the protocol's shapes on the CPU, the large rows' batch sizes times S
    (the 256-image ML rows, classes and spatial sizes as they are), float32, no LLM row; S in
    (0, 1]; not with ``--smoke`` or ``--device cuda``."""
    assert main(["--cpu-scale", "0.25", "--list-rows"]) == 0
    keys = capsys.readouterr().out.split()
    assert "DET:bce:float32:dense:400000x80" in keys
    assert "ML-S:asl:float32:dense:256x80" in keys and "ML-L:bce:float32:dense:256x9605" in keys
    assert "ML-L:bce:float32:dense:1024x9605" in keys
    assert "SEG:ce_ignore[NCHW]:float32:index:2x19x512x1024" in keys
    assert "REG:l1:float32:dense:400000x4" in keys
    assert not any(k.startswith("LLM") or "bfloat16" in k for k in keys)
    for bad in ("0", "1.5", "nan", "-0.5", "x"):
        assert main(["--cpu-scale", bad, "--out", str(tmp_path)]) == 2
        assert "expected a number in (0, 1]" in capsys.readouterr().err
    assert main(["--cpu-scale", "0.5", "--smoke", "--out", str(tmp_path)]) == 2
    assert "give one" in capsys.readouterr().err
    assert main(["--cpu-scale", "0.5", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--cpu-scale runs on the CPU; drop --device cuda" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    full = {(r.workload, r.loss, r.target_format): r.shape for r in workloads("meta", False)}
    tiny = workloads("meta", False, scale=1e-7)
    assert all(r.shape[0] == 1 or r.workload == "ML-L" or r.workload == "ML-S" for r in tiny)
    assert all(
        full[(r.workload, r.loss, r.target_format)][1:] == r.shape[1:] for r in tiny
    )  # (classes, spatial sizes kept)
    with pytest.raises(ValueError, match="not the smoke shapes"):
        workloads("meta", True, scale=0.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_cpu_scale_run_times_value_checks_on_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scaled CPU run (one tiny REG row standing in for the protocol's rows): the eager
    reference and the torch backend with value checks on and off (the unchecked provider really
    runs with them off), ratios against the reference, the scale in the header."""
    import dataclasses

    import benchmarks.protocol as protocol
    import lossforge as lf

    seen: list[bool] = []
    base = next(r for r in workloads("cpu", True) if r.workload == "REG" and r.loss == "l1")

    def torch_backend(d: dict[str, Any]) -> torch.Tensor:
        seen.append(lf.value_checks_enabled(d["x"]))
        return torch.nn.functional.l1_loss(d["x"], d["t"])

    row = dataclasses.replace(
        base,
        make=protocol._reg(64, torch.float32, "cpu"),
        providers={**base.providers, "lossforge_torch": torch_backend},
    )
    monkeypatch.setattr(protocol, "workloads", lambda *a, **k: [row])
    out = protocol.run_protocol("cpu", reps=2, iters=1, count_launches=False, scale=0.5)
    assert out["header"]["scale"] == 0.5 and out["header"]["smoke"] is False
    ok = {r["provider"]: r for r in out["results"] if r["status"] == "ok"}
    assert set(ok) == {"eager_ref", "lossforge_torch", "lossforge_torch_unchecked"}
    assert all(r["speedup_vs_eager"] > 0 for r in ok.values())
    assert True in seen and False in seen  # the checked and the unchecked provider
    assert all(len(r["times_ms"]) == 2 and r["speedup_paired"] > 0 for r in ok.values())
    assert ok["eager_ref"]["speedup_paired"] == 1.0
    with pytest.raises(ValueError, match=r"CPU option in \(0, 1\]"):
        protocol.run_protocol("cpu", scale=2.0)


class _Preparation(TorchDispatchMode):
    """Records the operations that prepare data rather than compute a loss: a copy or dtype
    conversion of a tensor the row prepared (targets, class weights), a clone of the logits, and
    the factories that build constants (``linspace``, ``arange``).

    ``library=True`` is for a lossforge provider, whose call enters the library: what lossforge
    does inside (``arange`` for index targets, a target cast) is the loss being measured, so only
    what the benchmark itself could have added is flagged (a clone of the logits, ``linspace``).
    """

    COPIES = ("aten._to_copy", "aten.clone", "aten.copy_", "aten.copy")

    def __init__(
        self, prepared: dict[str, torch.Tensor], logits: torch.Tensor, library: bool = False
    ) -> None:
        super().__init__()
        self.library = library
        self.FACTORIES = ("aten.linspace",) if library else ("aten.linspace", "aten.arange")
        self.prepared = {t.untyped_storage().data_ptr(): k for k, t in prepared.items()}
        self.logits = logits.untyped_storage().data_ptr()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        name = name if name.startswith("aten.") else f"aten.{name}"
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        ptr = src.untyped_storage().data_ptr() if src is not None else None
        if name.startswith(self.FACTORIES):
            self.found.append(name)
        elif name in self.COPIES and ptr in self.prepared and not self.library:
            self.found.append(f"{name}({self.prepared[ptr]})")
        elif name == "aten.clone" and ptr == self.logits:
            self.found.append(f"{name}(logits)")
        return func(*args, **(kwargs or {}))


def _timed_region_preparations(p: Provider, d: dict[str, Any], library: bool = False) -> list[str]:
    (di,) = p.inputs(d, 1)  # what the protocol runs before its clock starts
    prepared = {k: v for k, v in d.items() if isinstance(v, torch.Tensor) and k != "x"}
    with _Preparation(prepared, d["x"], library) as mode:
        d["x"].grad = None
        p.call(di).backward()
    return mode.found


def test_timed_region_holds_only_the_loss() -> None:
    """Every row's eager reference and lossforge provider, in bfloat16 (where converting a target
    to the logits' dtype is not a no-op, as it is in float32): no conversion of the prepared
    targets or class weights, no constant built, inside the call the protocol times."""
    problems = []
    for row in workloads("cpu", smoke=True, dtypes=[torch.bfloat16]):
        torch.manual_seed(0)
        d = row.make()
        d["meta"] = {}
        for name in ("eager_ref", "lossforge_torch"):
            p = row.providers[name]
            p = p if isinstance(p, Provider) else Provider(p)
            found = _timed_region_preparations(p, d, library=name.startswith("lossforge"))
            if found:
                problems.append(f"{row.workload} {row.loss} {name}: {sorted(set(found))}")
    assert not problems, "\n".join(problems)


def test_liger_gets_fresh_logits_outside_the_timed_region() -> None:
    """Liger overwrites its input with the gradient: the copy is the provider's preparation, made
    before the clock; the timed call only runs the loss (a stand-in module here)."""
    seen = []

    def stand_in(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return torch.nn.functional.cross_entropy(x, t)

    p = liger_provider(stand_in)
    x = torch.randn(16, 11, requires_grad=True)
    d = {"x": x, "t": torch.randint(0, 11, (16,)), "meta": {}}
    assert _timed_region_preparations(p, d) == []
    assert seen[0] is not x and seen[0].data_ptr() != x.data_ptr()  # a copy, made beforehand
    assert x.grad is not None  # the gradient still reaches the logits through the copy
    calls = p.inputs(d, 3)
    assert len({c["x_fresh"].data_ptr() for c in calls}) == 3  # one fresh copy per timed call


class _FakeEvent:
    """Stands in for ``torch.cuda.Event`` so the CUDA measurement code runs on the CPU."""

    log: list[str]

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing

    def record(self) -> None:
        self.log.append("record")

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: _FakeEvent) -> float:
        return 2.0


def test_cuda_measurements_prepare_before_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU paths of the protocol (CUDA events, the fwd/bwd split, peak memory) never run on a
    CPU machine: with the CUDA calls stubbed, every preparation comes before the first event and
    the timed calls between the events."""
    import benchmarks.protocol as P

    log: list[str] = []
    _FakeEvent.log = log
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: log.append("sync"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 4096)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)

    def prepare(d: dict[str, Any]) -> dict[str, Any]:
        log.append("prepare")
        return {**d, "x_fresh": d["x"].clone()}

    def call(d: dict[str, Any]) -> torch.Tensor:
        log.append("call")
        return d["x_fresh"].square().sum()

    p = Provider(call, prepare)
    d = {"x": torch.randn(4, 3, requires_grad=True), "t": torch.zeros(4), "meta": {}}
    assert P.gpu_time(p, d, 3) == pytest.approx(2.0 / 3)
    assert log == ["prepare"] * 3 + ["record"] + ["call"] * 3 + ["record"]
    log.clear()
    single, fwd, bwd = P.split_time(p, d, "cuda")
    assert (fwd, bwd) == (2.0, 2.0) and single > 0
    assert log.index("prepare") < log.index("record")
    assert log.count("call") == 1
    log.clear()
    assert P.memory(p, d, "cuda") == (0, 4096)
    assert log.index("prepare") < log.index("call")
    assert d["x"].grad is None  # memory() leaves no gradient behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="the smoke path is the CPU path")
def test_ratios_compare_rows_of_one_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rows of one workload, loss, dtype and target that differ in shape (ML-L runs 256 and
    4096 rows) each get ratios against their own references: the later row's reference overwrote
    the earlier row's ratios (found by a review: speed-ups of ~57x for equal providers)."""
    import dataclasses

    import benchmarks.protocol as protocol

    base = next(r for r in workloads("cpu", True) if r.workload == "REG" and r.loss == "l1")
    small = dataclasses.replace(base, shape=(64, 4), make=protocol._reg(64, torch.float32, "cpu"))
    large = dataclasses.replace(
        base, shape=(65536, 4), make=protocol._reg(65536, torch.float32, "cpu")
    )
    monkeypatch.setattr(protocol, "workloads", lambda *a, **k: [small, large])
    out = protocol.run_protocol("cpu", reps=1, iters=1, count_launches=False)
    ok = [r for r in out["results"] if r["status"] == "ok" and r["provider"] == "eager_ref"]
    assert len(ok) == 2
    assert all(r["speedup_vs_eager"] == 1.0 for r in ok), [r["speedup_vs_eager"] for r in ok]


def test_paired_speedups_pair_the_reps() -> None:
    """The paired speed-up is the median of per-rep ratios (not the ratio of medians), with its
    quartiles and the order-statistics interval of the median (none for fewer than 6 reps)."""
    from benchmarks.protocol import _paired

    ref = [10.0, 20.0, 10.0, 20.0, 10.0, 20.0, 10.0]
    mine = [5.0, 10.0, 5.0, 10.0, 5.0, 10.0, 5.0]  # each rep twice as fast as its reference
    out = _paired(mine, ref)
    assert out["speedup_paired"] == 2.0
    assert out["speedup_ci_low"] == out["speedup_ci_high"] == 2.0
    swing = [20.0, 10.0, 20.0, 10.0, 20.0, 10.0, 20.0]  # load swings hit both sides of a rep
    assert _paired(swing, swing)["speedup_paired"] == 1.0
    assert _paired(mine[:3], ref[:3])["speedup_ci_low"] is None
    assert _paired(mine, None) == {} and _paired(mine, ref[:3]) == {}


def test_each_row_compares_the_same_loss() -> None:
    """Every CPU row's eager reference and lossforge provider compute the same loss, so the
    speed-ups compare like with like: equal values where the semantics are the same; the ASL
    repository's loss is the sum where lossforge's default is the mean; index-target DET rows
    ignore the anchors labelled -2, which the eager reference counts as negatives; smp's dice
    has no smoothing term where lossforge's default has one (within 1 %)."""
    from benchmarks.protocol import _as_provider

    for row in workloads("cpu", True):
        torch.manual_seed(0)
        d = row.make()
        d["meta"] = {}
        values = {}
        for name in ("eager_ref", "lossforge_torch"):
            provider = _as_provider(row.providers[name])
            (di,) = provider.inputs(d, 1)
            values[name] = float(provider.call(di).detach())
        ref, ours = values["eager_ref"], values["lossforge_torch"]
        if row.loss == "asl":
            ours *= d["x"].numel()
        if (row.workload == "DET" and row.target_format == "index") or row.loss.startswith("dice"):
            assert ours == pytest.approx(ref, rel=1e-2), (row.workload, row.loss, values)
            assert ours != pytest.approx(ref, rel=1e-6), (row.workload, row.loss, values)
        else:
            assert ours == pytest.approx(ref, rel=1e-5), (row.workload, row.loss, values)
