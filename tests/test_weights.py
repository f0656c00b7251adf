"""The safetensors reader and writer: round trips of every dtype, agreement with the safetensors library both ways,
tied tensors, and one-line errors for truncated or corrupt files."""

from __future__ import annotations

import json

import pytest
import torch

from fastweights.weights import DTYPES, load_module, load_safetensors, save_module, save_safetensors


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, dtype in DTYPES.items():
        if dtype.is_floating_point:
            t = torch.randn(3, 5, generator=g).to(dtype)
        elif dtype == torch.bool:
            t = torch.rand(3, 5, generator=g) > 0.5
        else:
            t = torch.randint(0, 100, (3, 5), generator=g).to(dtype)
        out[f"t.{name}"] = t
    out["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    out["empty"] = torch.zeros(0, 4)
    out["strided"] = torch.arange(12.0).view(3, 4).t()  # not contiguous
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(-1).view(torch.uint8) if a[k].numel() else a[k],
                           b[k].reshape(-1).contiguous().view(torch.uint8) if b[k].numel() else b[k]), k


def test_round_trip_every_dtype_bit_for_bit(tmp_path):
    tensors = sample_tensors()
    save_safetensors(tmp_path / "w.safetensors", tensors, {"note": "x"})
    back, meta = load_safetensors(tmp_path / "w.safetensors")
    assert meta == {"note": "x"}
    assert_same({k: v.contiguous() for k, v in tensors.items()}, back)
    header_len = int.from_bytes((tmp_path / "w.safetensors").read_bytes()[:8], "little")
    assert header_len % 8 == 0  # the data starts aligned


def test_agrees_with_the_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.torch", reason="the safetensors library comes with the [hf] extra")
    tensors = {k: v.contiguous() for k, v in sample_tensors().items()
               if k not in ("t.U16", "t.U32", "t.U64")}  # dtypes older safetensors releases do not know
    save_safetensors(tmp_path / "mine.safetensors", tensors, {"format": "pt"})
    assert_same(tensors, st.load_file(str(tmp_path / "mine.safetensors")))
    st.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"format": "pt"})
    back, meta = load_safetensors(tmp_path / "theirs.safetensors")
    assert_same(tensors, back)
    assert meta == {"format": "pt"}


def test_module_round_trip_writes_tied_weights_once(tmp_path):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(7, 4)
    model = torch.nn.ModuleDict({"emb": emb, "out": torch.nn.Linear(4, 7)})
    model["out"].weight = emb.weight  # tied
    save_module(model, tmp_path / "m.safetensors")
    stored, meta = load_safetensors(tmp_path / "m.safetensors")
    assert sorted(stored) == ["emb.weight", "out.bias"] and meta == {"format": "pt"}
    fresh = torch.nn.ModuleDict({"emb": torch.nn.Embedding(7, 4), "out": torch.nn.Linear(4, 7)})
    fresh["out"].weight = fresh["emb"].weight
    load_module(fresh, tmp_path / "m.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    assert fresh["out"].weight is fresh["emb"].weight


def test_load_module_checks_everything_before_loading(tmp_path):
    save_module(torch.nn.Linear(3, 2), tmp_path / "m.safetensors")
    target = torch.nn.Linear(3, 4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"tensor 'weight' is torch.float32 of shape \[2, 3\], the model expects "
                                         r"torch.float32 of shape \[4, 3\]"):
        load_module(target, tmp_path / "m.safetensors")
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())  # untouched
    with pytest.raises(ValueError, match=r"does not fit the model: missing \['0.weight', '0.bias'\]"):
        load_module(torch.nn.Sequential(torch.nn.Linear(3, 2)), tmp_path / "m.safetensors")


def _corrupt(tmp_path, data: bytes):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError) as exc:
        load_safetensors(path)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"weights: {path}")
    return str(exc.value)


def test_truncated_and_corrupt_files_fail_in_one_line(tmp_path):
    save_safetensors(tmp_path / "ok.safetensors", {"a": torch.arange(10.0), "b": torch.ones(3, dtype=torch.int64)})
    good = (tmp_path / "ok.safetensors").read_bytes()
    n = int.from_bytes(good[:8], "little")
    assert "truncated" in _corrupt(tmp_path, good[:5])
    assert "truncated: the header needs" in _corrupt(tmp_path, good[: 8 + n // 2])
    assert "truncated: the tensors need" in _corrupt(tmp_path, good[:-3])
    assert "bytes after the last tensor" in _corrupt(tmp_path, good + b"\0")
    assert "header length" in _corrupt(tmp_path, (2**40).to_bytes(8, "little") + good[8:])
    assert "not JSON" in _corrupt(tmp_path, good[:8] + b"[" + good[9:])

    def with_header(header: dict) -> bytes:
        text = json.dumps(header).encode()
        return len(text).to_bytes(8, "little") + text + good[8 + n:]

    header = json.loads(good[8:8 + n])
    assert "dtype 'F99'" in _corrupt(tmp_path, with_header({**header, "a": {**header["a"], "dtype": "F99"}}))
    assert "needs 44" in _corrupt(tmp_path, with_header({**header, "a": {**header["a"], "shape": [11]}}))
    assert "without gaps or overlaps" in _corrupt(
        tmp_path, with_header({**header, "a": {**header["a"], "data_offsets": [16, 56]}}))
    assert "exactly dtype, shape and data_offsets" in _corrupt(tmp_path, with_header({**header, "a": [1]}))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_safetensors(tmp_path / "missing.safetensors")
