"""Runtime faults at the engine level: interrupts, out of memory, non-finite values."""

import gc
import warnings

import pytest
import torch

from zecon_core.guidance.core import NonFiniteError
from zecon_core.pixel.memory import OutOfMemory
from zecon_core.pixel.pipeline import invert, stylize

from tiny_models import FAST, source_image, tiny_models


class Stop(Exception):
    pass


def raises(exc_type, fn, match=""):
    """Like pytest.raises, but keeps no reference to the exception (its traceback holds the step's tensors)."""
    import re

    try:
        fn()
    except exc_type as e:
        message = str(e)
    else:
        raise AssertionError(f"{exc_type.__name__} not raised")
    assert re.search(match, message), message


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some gc-tracked module proxies warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def run(**kw):
    model, clip, vgg = tiny_models()
    return stylize(source_image(), "a sketch with crayon", model=model, clip=clip, vgg_model=vgg, seed=5,
                   **{**FAST, **kw})


def stop_at(step):
    def callback(k, total, x, pred):
        if k == step:
            raise Stop(f"interrupted at {k}/{total}")
    return callback


def test_interrupt_during_sampling_stops_at_once_and_the_next_run_is_correct():
    reference = run()
    before = live_tensors()
    seen = []

    def callback(k, total, x, pred):
        seen.append(k)
        stop_at(2)(k, total, x, pred)

    raises(Stop, lambda: run(callback=callback))
    assert seen == [1, 2]
    assert live_tensors() <= before
    assert torch.equal(run(), reference)


def test_interrupt_during_inversion_stops_at_once():
    model, _, _ = tiny_models()
    seen = []

    def callback(k, total, x, pred):
        seen.append(k)
        raise Stop

    with pytest.raises(Stop):
        invert(model, source_image(), respacing="10", skip=2, callback=callback)
    assert seen == [1]


def test_out_of_memory_is_a_clear_error_and_leaks_nothing():
    model, _, _ = tiny_models()
    reference = run()
    calls = {"n": 0}

    def hook(module, args, output):
        if output.device.type == "meta":   # the memory estimate runs the network on the meta device
            return
        calls["n"] += 1
        if calls["n"] == 8:   # inversion has 5 UNet calls; fail during the third guided step
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    before = live_tensors()
    handle = model.unet.middle_block.register_forward_hook(hook)
    try:
        raises(OutOfMemory, run, r"out of memory during guided sampling at 64x64 \(batch 1\); use a smaller size")
    finally:
        handle.remove()
    assert live_tensors() <= before
    assert torch.equal(run(), reference)


def test_out_of_memory_during_inversion_names_the_phase():
    model, _, _ = tiny_models()

    def hook(module, args, output):
        if output.device.type != "meta":
            raise torch.OutOfMemoryError("simulated")

    handle = model.unet.middle_block.register_forward_hook(hook)
    try:
        with pytest.raises(OutOfMemory, match="during DDIM inversion at 64x64"):
            invert(model, source_image(), respacing="10", skip=5)
    finally:
        handle.remove()


def test_a_loss_that_goes_non_finite_stops_with_its_name_and_step():
    model, clip, vgg = tiny_models()
    original = vgg.forward
    calls = {"n": 0}

    def poisoned(x):
        calls["n"] += 1
        a, b = original(x)
        return (a * float("nan"), b) if calls["n"] >= 5 else (a, b)   # 2 VGG calls per step: step 3

    vgg.forward = poisoned
    try:
        with pytest.raises(NonFiniteError, match=r"step 3/5 \(index 2\).*non-finite loss: vgg"):
            run()
    finally:
        del vgg.forward


def test_a_non_finite_latent_stops_with_the_step():
    model, _, _ = tiny_models()

    def hook(module, args, output):
        return output if output.device.type == "meta" else output * float("inf")

    handle = model.unet.out.register_forward_hook(hook)
    try:
        with pytest.raises(NonFiniteError, match="DDIM inversion step 1/5"):
            invert(model, source_image(), respacing="10", skip=5)
    finally:
        handle.remove()
