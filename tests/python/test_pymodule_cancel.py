"""Ctrl-C, exceptions from the progress callback and the GIL during a command run from Python.

Every write here pauses 1.5 s at its middle chunk (CKPTKIT_TEST_HOLD=half, read once by the
library, so it is set before anything runs): long enough to interrupt it, or to watch another
Python thread run meanwhile. An interrupted command must raise the interruption and leave no
output and no temporary behind."""
import os
import signal
import sys
import threading
import time

os.environ["CKPTKIT_TEST_HOLD"] = "half:1.5"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_testlib as tl  # noqa: E402

import ckptkit  # noqa: E402

HOLD = 1.5


@pytest.fixture()
def src(tmp_path):
    path = str(tmp_path / "in.safetensors")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(4):
        w = rng.standard_normal((256, 256)).astype(np.float32)
        rows.append((f"t{i}.weight", "F32", w.shape, w.tobytes()))
    tl.write_safetensors(path, rows)
    return path


def run_convert(src, out, progress=None):
    return ckptkit.convert(src, out, dtype="f16", threads=1, progress=progress)


def test_keyboard_interrupt_from_the_callback_cancels(src, tmp_path):
    out = str(tmp_path / "out.safetensors")
    calls = []

    def progress(done, total):
        calls.append(done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_convert(src, out, progress)
    assert len(calls) == 1  # not called again once the work is cancelled
    assert sorted(os.listdir(tmp_path)) == ["in.safetensors"]


def test_other_exceptions_from_the_callback_propagate(src, tmp_path):
    out = str(tmp_path / "out.safetensors")

    def progress(done, total):
        raise ValueError("stop here")

    with pytest.raises(ValueError, match="stop here"):
        run_convert(src, out, progress)
    assert sorted(os.listdir(tmp_path)) == ["in.safetensors"]


def test_sigint_from_another_thread_cancels_promptly(src, tmp_path):
    out = str(tmp_path / "out.safetensors")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_convert(src, out)
    finally:
        timer.cancel()
    # The signal is seen within 50 ms; the work then stops at its next chunk (after the hold).
    assert time.monotonic() - t0 < HOLD + 1.0
    assert sorted(os.listdir(tmp_path)) == ["in.safetensors"]


def test_raise_signal_cancels(src, tmp_path):
    out = str(tmp_path / "out.safetensors")

    def progress(done, total):
        signal.raise_signal(signal.SIGINT)  # as a Ctrl-C arriving during the work

    with pytest.raises(KeyboardInterrupt):
        run_convert(src, out, progress)
    assert not os.path.exists(out)


def test_the_gil_is_released_during_the_work(src, tmp_path):
    out = str(tmp_path / "out.safetensors")
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    th = threading.Thread(target=spin)
    th.start()
    t0 = time.monotonic()
    try:
        report = run_convert(src, out)
    finally:
        t1 = time.monotonic()
        stop.set()
        th.join()
    assert report["tensors_converted"] == 4
    during = [t for t in ticks if t0 < t < t1]
    assert t1 - t0 >= HOLD
    # The other thread ran all along: many ticks, and no gap as long as the hold.
    assert len(during) > 200
    gaps = np.diff([t0] + during + [t1])
    assert gaps.max() < 0.5
