"""The value-check mode (``lossforge.value_checks`` / ``set_value_checks`` / ``LOSSFORGE_CHECKS``):
per thread and asyncio task, blocks that end in any order, and a strict environment variable."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import torch

import lossforge as lf
from lossforge import _checks
from lossforge._checks import _parse_env, value_checks, value_checks_enabled

T = TypeVar("T")
CPU = torch.zeros(1)


def _fresh(fn: Callable[[], T]) -> T:
    """Run ``fn`` in an empty context: what a new thread sees (no mode set there)."""
    return contextvars.Context().run(fn)


def _in_thread(fn: Callable[[], T]) -> T:
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    if errors:
        raise errors[0]
    return out[0]


def _mode() -> bool | None:
    return _checks._mode()


@pytest.fixture(autouse=True)
def _restore_this_context() -> Iterator[None]:
    """Tests here run in pytest's main thread: leave its mode as they found it."""
    saved = _checks._STATE.get()
    yield
    _checks._STATE.set(saved)


# --------------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------------


def test_block_in_one_thread_does_not_leak_into_another() -> None:
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def worker() -> None:
        with value_checks(False):
            seen["worker"] = value_checks_enabled(CPU)
            inside.set()
            release.wait(10)
        seen["worker after"] = value_checks_enabled(CPU)

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(10)
    seen["main while worker is inside"] = value_checks_enabled(CPU)
    seen["other thread"] = _in_thread(lambda: value_checks_enabled(CPU))
    release.set()
    thread.join(10)
    assert seen == {
        "worker": False,
        "main while worker is inside": True,
        "other thread": True,
        "worker after": True,
    }


def test_set_value_checks_is_per_thread() -> None:
    def worker() -> tuple[bool, bool]:
        lf.set_value_checks(False)
        return value_checks_enabled(CPU), _in_thread(lambda: value_checks_enabled(CPU))

    assert _in_thread(worker) == (False, True)
    assert value_checks_enabled(CPU)  # this thread never saw it
    assert _in_thread(lambda: value_checks_enabled(CPU))


def test_threads_interleaving_blocks_cannot_leave_checks_off() -> None:
    """Two threads enter and leave blocks in the order that left a process-global mode off for
    good (A enters False, B enters True, A leaves, B leaves): every thread ends at the default."""
    step = [threading.Event() for _ in range(4)]
    ends: dict[str, bool | None] = {}

    def a() -> None:
        with value_checks(False):
            step[0].set()
            step[1].wait(10)
        step[2].set()
        ends["a"] = _mode()

    def b() -> None:
        step[0].wait(10)
        with value_checks(True):
            step[1].set()
            step[2].wait(10)
        ends["b"] = _mode()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert ends == {"a": None, "b": None}
    assert _mode() is None
    assert _in_thread(_mode) is None


# --------------------------------------------------------------------------------------------------
# Blocks that end out of order in one thread: generators and asyncio
# --------------------------------------------------------------------------------------------------


def _gen(mode: bool | None, log: list[bool | None]) -> Iterator[None]:
    with value_checks(mode):
        log.append(_mode())
        yield
        log.append(_mode())


def test_interleaved_generator_blocks_restore() -> None:
    log: list[bool | None] = []
    a, b = _gen(False, log), _gen(True, log)
    next(a)  # A enters: False
    next(b)  # B enters: True (innermost)
    assert _mode() is True
    next(a, None)  # A resumes under B's block, then ends first
    assert _mode() is True  # B is still active
    next(b, None)  # B ends
    assert _mode() is None  # what it was before either began
    assert log == [False, True, True, True]


def test_nested_and_non_lifo_blocks_with_set_value_checks() -> None:
    outer = value_checks(True)
    inner = value_checks(False)
    outer.__enter__()
    inner.__enter__()
    assert _mode() is False
    lf.set_value_checks(True)  # the base mode; the active blocks still decide
    assert _mode() is False
    outer.__exit__(None, None, None)  # ends first
    assert _mode() is False
    inner.__exit__(None, None, None)
    assert _mode() is True  # the base set inside the blocks
    lf.set_value_checks(None)
    assert _mode() is None


def test_block_restores_after_exception() -> None:
    with pytest.raises(RuntimeError), value_checks(False):
        raise RuntimeError("boom")
    assert _mode() is None


def test_asyncio_tasks_each_have_their_own_mode() -> None:
    async def task(mode: bool | None, first: asyncio.Event, second: asyncio.Event) -> list:
        seen = []
        with value_checks(mode):
            seen.append(_mode())
            first.set()
            await second.wait()
            seen.append(_mode())
        seen.append(_mode())
        return seen

    async def main() -> tuple[list, list, bool | None, bool | None]:
        a_in, b_in, b_go = asyncio.Event(), asyncio.Event(), asyncio.Event()
        ta = asyncio.create_task(task(False, a_in, b_in))
        await a_in.wait()
        between = _mode()  # A is inside its block, suspended
        tb = asyncio.create_task(task(True, b_in, b_go))
        seen_a = await ta  # B enters its block, then A resumes and ends while B is inside
        b_go.set()
        seen_b = await tb
        return seen_a, seen_b, between, _mode()

    seen_a, seen_b, between, after = asyncio.run(main())
    assert seen_a == [False, False, None]
    assert seen_b == [True, True, None]
    assert between is None and after is None
    assert _mode() is None


def test_ending_a_block_in_another_thread_warns() -> None:
    block = value_checks(False)
    _fresh(block.__enter__)
    with pytest.warns(RuntimeWarning, match="another thread or asyncio task"):
        block.__exit__(None, None, None)
    assert _mode() is None  # this context was never changed


# --------------------------------------------------------------------------------------------------
# Arguments and the environment variable
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["yes", 1, 0, "off"])
def test_mode_must_be_a_bool_or_none(bad: object) -> None:
    with pytest.raises(TypeError, match="set_value_checks: expected `mode` True, False or None"):
        lf.set_value_checks(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value_checks: expected `mode` True, False or None"):
        value_checks(bad)  # type: ignore[arg-type]
    assert _mode() is None


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ("1", True),
        ("true", True),
        (" On ", True),
        ("YES", True),
        ("0", False),
        ("false", False),
        ("off", False),
        ("no", False),
        ("", None),
        ("auto", None),
    ],
)
def test_environment_values(raw: str, mode: bool | None) -> None:
    assert _parse_env(raw) is mode


@pytest.mark.parametrize("raw", ["flase", "2", "disabled", "-1", "none", "1.0"])
def test_environment_junk_is_rejected(raw: str) -> None:
    with pytest.raises(ValueError, match=rf"LOSSFORGE_CHECKS: expected 1, true.*got {raw!r}"):
        _parse_env(raw)


@pytest.mark.parametrize(("raw", "enabled"), [("0", False), ("1", True), ("auto", True)])
def test_environment_is_the_default_of_every_context(
    monkeypatch: pytest.MonkeyPatch, raw: str, enabled: bool
) -> None:
    monkeypatch.setenv("LOSSFORGE_CHECKS", raw)
    monkeypatch.setattr(_checks, "_env_default", [])  # as if nothing had read it yet
    meta = torch.zeros(1, device="meta")
    assert _fresh(lambda: value_checks_enabled(CPU)) is enabled
    assert _in_thread(lambda: value_checks_enabled(meta)) is (raw == "1")
    with value_checks(None):  # an explicit mode does not consult it
        assert value_checks_enabled(CPU)


def test_environment_junk_raises_at_first_use_and_an_explicit_mode_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOSSFORGE_CHECKS", "flase")
    monkeypatch.setattr(_checks, "_env_default", [])
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    for _ in range(2):  # every use, not only the first, says so
        with pytest.raises(ValueError, match="LOSSFORGE_CHECKS: expected .* got 'flase'"):
            _fresh(lambda: lf.cross_entropy(x, y))
    with value_checks(False):
        lf.cross_entropy(x, y)
    _fresh(lambda: (lf.set_value_checks(True), lf.cross_entropy(x, y)))


def test_compiled_code_skips_checks_without_reading_the_mode() -> None:
    """``value_checks_enabled`` asks ``torch.compiler.is_compiling()`` first: while tracing it
    never reads the context variable (no graph break with ``fullgraph=True``)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if value_checks_enabled(x) else x * 3

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    with value_checks(True):
        assert torch.equal(compiled(torch.ones(2)), torch.full((2,), 3.0))
    assert torch.equal(f(torch.ones(2)), torch.full((2,), 2.0))
