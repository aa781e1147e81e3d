"""Tests for zecon_core.files.convert (pt -> safetensors)."""

from __future__ import annotations

import builtins
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from zecon_core.files import convert as cv


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        # exact, NaN-safe: compare the raw bytes (torch.testing.assert_close is slow to warm up)
        ab = a[k].contiguous().reshape(-1).view(torch.uint8)
        bb = b[k].contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(ab, bb), k


def _sample_state_dict() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    return {
        "a.weight": base,
        "b.weight": base,  # tied: the very same tensor under two keys
        "view.rows": base[1:3],  # view with an offset into the shared storage
        "view.t": base.t(),  # non-contiguous view
        "strided": torch.arange(20.0).reshape(4, 5)[:, ::2],
        "half": torch.randn(3, generator=g).half(),
        "bf16": torch.randn(2, 2, generator=g).bfloat16(),
        "int": torch.arange(5),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "empty2": torch.zeros(0),
        "nan": torch.tensor([float("nan"), 1.0, float("inf")]),
    }


def test_round_trip_same_keys_and_values(tmp_path):
    sd = _sample_state_dict()
    src = tmp_path / "model.pt"
    torch.save(sd, src)
    out = cv.convert_to_safetensors(src)
    assert out == tmp_path / "model.safetensors"
    loaded = load_file(out)
    assert set(loaded) == set(sd)
    _assert_same(sd, loaded)
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "converted_from": "model.pt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.safetensors"]


def test_unwraps_state_dict_and_model_wrappers(tmp_path):
    inner = {"w": torch.ones(2, 2), "b": torch.zeros(2)}
    for wrapper in ("state_dict", "model"):
        src = tmp_path / f"{wrapper}.pth"
        torch.save({wrapper: inner, "epoch": 3, "optimizer": {"lr": 0.1}}, src)
        out = cv.convert_to_safetensors(src, tmp_path / f"{wrapper}.safetensors")
        _assert_same(inner, load_file(out))


def test_tensor_dict_with_model_key_is_not_unwrapped(tmp_path):
    sd = {"model": torch.ones(3), "other": torch.zeros(1)}
    src = tmp_path / "m.bin"
    torch.save(sd, src)
    _assert_same(sd, load_file(cv.convert_to_safetensors(src)))


def test_non_tensor_values_rejected(tmp_path):
    src = tmp_path / "mixed.pt"
    torch.save({"w": torch.ones(2), "step": 5, "name": "x"}, src)
    with pytest.raises(cv.ConvertError) as ei:
        cv.convert_to_safetensors(src)
    msg = str(ei.value)
    assert "'step' (int)" in msg and "'name' (str)" in msg and "tensor" in msg
    assert not (tmp_path / "mixed.safetensors").exists()


def test_not_a_dict_rejected(tmp_path):
    src = tmp_path / "list.pt"
    torch.save([torch.ones(2)], src)
    with pytest.raises(cv.ConvertError, match="expected a dict of tensors"):
        cv.convert_to_safetensors(src)


def test_truncated_file_rejected(tmp_path):
    src = tmp_path / "cut.pt"
    torch.save({"w": torch.ones(100)}, src)
    src.write_bytes(src.read_bytes()[:50])
    with pytest.raises(cv.ConvertError, match="Could not read"):
        cv.convert_to_safetensors(src)


class _Evil:
    """Unpickling this would call builtins.open(marker, "w"), creating the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_refused_without_running(tmp_path, fmt):
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.pt"
    payload = {"w": torch.ones(2), "x": _Evil(marker)}
    if fmt == "torch_zip":
        torch.save(payload, src)
    else:
        with open(src, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    assert not marker.exists()  # writing the pickle did not run it
    with pytest.raises(cv.ConvertError) as ei:
        cv.convert_to_safetensors(src)
    assert not marker.exists(), "the pickled code was executed"
    msg = str(ei.value)
    assert "Refused to load evil.pt" in msg
    assert "Nothing from it was executed" in msg
    assert not (tmp_path / "evil.safetensors").exists()
    # sanity check: the payload really is armed (plain pickle would create the marker)
    if fmt == "raw_pickle":
        with open(src, "rb") as f:
            obj = pickle.load(f)  # noqa: S301 - deliberately, in a temp dir, to prove the test is meaningful
        obj["x"].close()
        assert marker.exists()


def test_existing_destination_needs_overwrite(tmp_path):
    src = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, src)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"old")
    with pytest.raises(cv.ConvertError, match="already exists"):
        cv.convert_to_safetensors(src, dst)
    assert dst.read_bytes() == b"old"
    cv.convert_to_safetensors(src, dst, overwrite=True)
    _assert_same({"w": torch.ones(2)}, load_file(dst))


def test_refuses_safetensors_source_and_same_path(tmp_path):
    src = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, src)
    with pytest.raises(cv.ConvertError, match="source"):
        cv.convert_to_safetensors(src, src, overwrite=True)
    out = cv.convert_to_safetensors(src)
    with pytest.raises(cv.ConvertError, match="already a .safetensors"):
        cv.convert_to_safetensors(out, tmp_path / "again.safetensors")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch as st

    src = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, src)

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", broken_save)
    with pytest.raises(cv.ConvertError, match="disk full"):
        cv.convert_to_safetensors(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_cli(tmp_path, capsys):
    src = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, src)
    assert cv.main([str(src)]) == 0
    assert (tmp_path / "m.safetensors").exists()
    assert str(tmp_path / "m.safetensors") in capsys.readouterr().out
    assert cv.main([str(src)]) == 1  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    assert cv.main([str(src), "--force"]) == 0
