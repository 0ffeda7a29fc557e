"""Tests for planner.catalog.safetensors_header (header-only safetensors reading)."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from planner.catalog.safetensors_header import (
    INDEX_NAME,
    CheckpointError,
    TensorInfo,
    read_checkpoint,
    read_header,
)

_TEST_BITS = {"F32": 32, "F16": 16, "BF16": 16, "I32": 32, "I8": 8, "U8": 8, "I64": 64,
              "F8_E4M3": 8, "I4": 4}


def write_raw(path: Path, tensors: dict[str, tuple[str, list[int]]], metadata=None) -> Path:
    """Hand-write a valid safetensors file (sparse zero data) for dtypes numpy lacks."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = (int(np.prod(shape)) * _TEST_BITS[dtype] + 7) // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)
    return path


def write_bytes_header(path: Path, header: bytes, length: int | None = None) -> Path:
    """Write an 8-byte length prefix (default: the real length) followed by raw header bytes."""
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header)
    return path


# ---------------------------------------------------------------- happy paths

def test_tensor_info_numel_and_nbytes() -> None:
    assert TensorInfo("s", "F32", ()).numel == 1
    assert TensorInfo("s", "F32", ()).nbytes == 4
    assert TensorInfo("w", "BF16", (4096, 4096)).nbytes == 4096 * 4096 * 2
    assert TensorInfo("b", "BOOL", (10,)).nbytes == 10
    assert TensorInfo("f", "F8_E5M2", (3, 5)).nbytes == 15
    assert TensorInfo("q", "I4", (3,)).nbytes == 2  # 1.5 bytes rounds up
    assert TensorInfo("e", "F16", (0, 7)).numel == 0


def test_single_file_written_by_safetensors(tmp_path: Path) -> None:
    save_file(
        {"a.weight": np.zeros((4, 8), np.float32), "b": np.ones((3,), np.int8),
         "c": np.zeros((2, 2), np.float16)},
        str(tmp_path / "model.safetensors"),
        metadata={"format": "np"},
    )
    s = read_checkpoint(tmp_path)
    assert s is not None
    assert s.files == ("model.safetensors",)
    assert {t.name: (t.dtype, t.shape) for t in s.tensors} == {
        "a.weight": ("F32", (4, 8)), "b": ("I8", (3,)), "c": ("F16", (2, 2))}
    assert dict(s.bytes_by_dtype) == {"F32": 128, "I8": 3, "F16": 8}
    assert s.total_bytes == 139
    assert s.stored_numel() == s.param_count() == 32 + 3 + 4
    assert s.quantization is None


def test_bf16_hand_written_and_str_path(tmp_path: Path) -> None:
    write_raw(tmp_path / "model.safetensors",
              {"embed": ("BF16", [4096, 4096]), "norm": ("F32", [4096])}, metadata={"k": "v"})
    s = read_checkpoint(str(tmp_path))
    assert s is not None
    assert dict(s.bytes_by_dtype) == {"BF16": 4096 * 4096 * 2, "F32": 4096 * 4}
    assert s.param_count() == 4096 * 4096 + 4096
    with pytest.raises(TypeError):
        s.bytes_by_dtype["BF16"] = 0  # type: ignore[index]


def test_sharded_folder_uses_index_and_ignores_strays(tmp_path: Path) -> None:
    save_file({"x": np.zeros((10, 10), np.float32)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"y": np.zeros((5,), np.float16)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    save_file({"lora": np.zeros((99,), np.float32)}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": 210}, "weight_map": {
        "y": "model-00002-of-00002.safetensors", "x": "model-00001-of-00002.safetensors"}}))
    s = read_checkpoint(tmp_path)
    assert s is not None
    assert s.files == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    assert [t.name for t in s.tensors] == ["x", "y"]
    assert s.total_bytes == 400 + 10
    assert s.param_count() == 105


def test_folder_without_index_reads_every_file_sorted(tmp_path: Path) -> None:
    save_file({"b": np.zeros((2,), np.float32)}, str(tmp_path / "b.safetensors"))
    save_file({"a": np.zeros((3,), np.float32)}, str(tmp_path / "a.safetensors"))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle we would ever open")
    s = read_checkpoint(tmp_path)
    assert s is not None and s.files == ("a.safetensors", "b.safetensors")
    assert s.stored_numel() == 5


# ---------------------------------------------------------------- quantization

@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_bnb_4bit_layout(tmp_path: Path, kind: str) -> None:
    w = "model.layers.0.self_attn.q_proj.weight"
    write_raw(tmp_path / "model.safetensors", {
        w: ("U8", [8192, 1]),
        f"{w}.absmax": ("F32", [256]),
        f"{w}.quant_map": ("F32", [16]),
        f"{w}.nested_absmax": ("F32", [1]),
        f"{w}.nested_quant_map": ("F32", [256]),
        f"{w}.quant_state.bitsandbytes__{kind}": ("U8", [100]),
        "model.norm.weight": ("F16", [128]),
    })
    s = read_checkpoint(tmp_path)
    assert s is not None
    assert s.quantization == "bnb-4bit"
    assert s.param_count() == 16384 + 128
    assert s.stored_numel() == 8192 + 256 + 16 + 1 + 256 + 100 + 128


def test_bnb_8bit_layout(tmp_path: Path) -> None:
    write_raw(tmp_path / "model.safetensors", {
        "l.weight": ("I8", [64, 32]), "l.SCB": ("F32", [64]), "l.weight_format": ("U8", []),
        "l.bias": ("F16", [64]),
    })
    s = read_checkpoint(tmp_path)
    assert s is not None and s.quantization == "bnb-8bit"
    assert s.param_count() == 64 * 32 + 64


@pytest.mark.parametrize(("with_g_idx", "expected"), [(True, "gptq"), (False, "awq")])
def test_gptq_and_awq(tmp_path: Path, with_g_idx: bool, expected: str) -> None:
    p = "model.layers.0.mlp.up_proj"
    tensors = {f"{p}.qweight": ("I32", [16, 64]), f"{p}.qzeros": ("I32", [1, 8]),
               f"{p}.scales": ("F16", [1, 64]), f"{p}.bias": ("F16", [64]),
               "lm_head.weight": ("F16", [10, 128])}
    if with_g_idx:
        tensors[f"{p}.g_idx"] = ("I32", [128])
    write_raw(tmp_path / "model.safetensors", tensors)
    s = read_checkpoint(tmp_path)
    assert s is not None and s.quantization == expected
    assert s.param_count() == 16 * 64 * 8 + 64 + 1280


def test_fp8_detection_skips_scales(tmp_path: Path) -> None:
    write_raw(tmp_path / "model.safetensors", {
        "l.weight": ("F8_E4M3", [32, 32]), "l.weight_scale": ("F32", []),
        "l.input_scale": ("F32", []), "norm.weight": ("BF16", [32])})
    s = read_checkpoint(tmp_path)
    assert s is not None and s.quantization == "fp8"
    assert s.param_count() == 1024 + 32
    assert s.bytes_by_dtype["F8_E4M3"] == 1024


def test_unknown_int_vs_small_int_buffers(tmp_path: Path) -> None:
    write_raw(tmp_path / "model.safetensors", {"pos_ids": ("I64", [1, 512]), "w": ("F32", [4])})
    assert read_checkpoint(tmp_path).quantization is None  # type: ignore[union-attr]
    write_raw(tmp_path / "model.safetensors", {"w": ("I8", [1024, 1024])})
    assert read_checkpoint(tmp_path).quantization == "unknown-int"  # type: ignore[union-attr]


# ---------------------------------------------------------------- nothing to read

def test_folder_without_safetensors_returns_none(tmp_path: Path) -> None:
    assert read_checkpoint(tmp_path) is None
    assert read_checkpoint(tmp_path / "missing") is None


def test_bin_only_folder_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 pickle bytes that must never be loaded")
    assert read_checkpoint(tmp_path) is None


# ---------------------------------------------------------------- errors

def _entry(**kw: object) -> bytes:
    return json.dumps({"t": kw}).encode()


CORRUPT_FILES = {
    "too_short": lambda p: p.write_bytes(b"\x01\x02\x03"),
    "empty": lambda p: p.write_bytes(b""),
    "length_past_eof": lambda p: write_bytes_header(p, b"{}", length=1000),
    "length_over_100mb": lambda p: write_bytes_header(p, b"{}", length=200 * 1024 * 1024),
    "not_utf8": lambda p: write_bytes_header(p, b"{\xff\xfe}"),
    "not_json": lambda p: write_bytes_header(p, b"{not json"),
    "empty_header": lambda p: write_bytes_header(p, b""),
    "json_list": lambda p: write_bytes_header(p, b"[1, 2]"),
    "entry_not_object": lambda p: write_bytes_header(p, b'{"t": 3}'),
    "missing_dtype": lambda p: write_bytes_header(p, _entry(shape=[1])),
    "missing_shape": lambda p: write_bytes_header(p, _entry(dtype="F32")),
    "negative_dim": lambda p: write_bytes_header(p, _entry(dtype="F32", shape=[2, -1])),
    "float_dim": lambda p: write_bytes_header(p, _entry(dtype="F32", shape=[2.5])),
    "bool_dim": lambda p: write_bytes_header(p, _entry(dtype="F32", shape=[True])),
    "shape_not_list": lambda p: write_bytes_header(p, _entry(dtype="F32", shape="4x4")),
    "unknown_dtype": lambda p: write_bytes_header(p, _entry(dtype="Q7", shape=[1])),
    "dtype_not_str": lambda p: write_bytes_header(p, _entry(dtype=["F32"], shape=[1])),
    "bad_offsets": lambda p: write_bytes_header(p, _entry(dtype="F32", shape=[1], data_offsets=[4, 0])),
    "truncated_data": lambda p: write_bytes_header(p, _entry(dtype="F32", shape=[1], data_offsets=[0, 4])),
    "deep_nesting": lambda p: write_bytes_header(p, b"[" * 100_000 + b"]" * 100_000),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_FILES))
def test_corrupt_file_raises_one_line_checkpoint_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "broken-shard.safetensors"
    CORRUPT_FILES[case](path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "broken-shard.safetensors" in message
    assert isinstance(info.value, ValueError)


def test_over_100mb_message_names_the_limit(tmp_path: Path) -> None:
    path = write_bytes_header(tmp_path / "x.safetensors", b"{}", length=200 * 1024 * 1024)
    with path.open("r+b") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: the file really is big enough
    with pytest.raises(CheckpointError, match="100 MB"):
        read_header(path)


def _good_shard(folder: Path) -> None:
    save_file({"x": np.zeros((2,), np.float32)}, str(folder / "model-00001-of-00001.safetensors"))


INDEX_CASES = {
    "not_json": b"{oops",
    "not_utf8": b"\xff\xff",
    "json_list": b"[]",
    "no_weight_map": b'{"metadata": {}}',
    "weight_map_list": b'{"weight_map": ["a"]}',
    "empty_weight_map": b'{"weight_map": {}}',
    "non_string_file": b'{"weight_map": {"x": 7}}',
    "missing_shard": b'{"weight_map": {"x": "model-00001-of-00001.safetensors", "y": "gone.safetensors"}}',
    "bin_shard": b'{"weight_map": {"x": "pytorch_model.bin"}}',
    "escaping_path": b'{"weight_map": {"x": "../model-00001-of-00001.safetensors"}}',
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_bad_index_raises_one_line_checkpoint_error(tmp_path: Path, case: str) -> None:
    _good_shard(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    (tmp_path / INDEX_NAME).write_bytes(INDEX_CASES[case])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path)
    message = str(info.value)
    assert "\n" not in message and INDEX_NAME in message
    if case == "missing_shard":
        assert "gone.safetensors" in message


# ---------------------------------------------------------------- properties

def test_module_does_not_import_heavy_libraries() -> None:
    code = ("import sys, planner.catalog.safetensors_header; "
            "bad = {'torch', 'numpy', 'safetensors'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def _parse_or_checkpoint_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.safetensors").write_bytes(data)
        try:
            read_checkpoint(tmp)
        except CheckpointError as exc:
            assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_parse_or_raise_checkpoint_error(data: bytes) -> None:
    _parse_or_checkpoint_error(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**20) | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
_entries = st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["F32", "BF16", "I4", "F8_E4M3", "XX"]) | _json,
    "shape": st.lists(st.integers(-2, 10**6), max_size=4) | _json,
    "data_offsets": st.lists(st.integers(-2, 64), max_size=3) | _json,
}) | _json


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=12), _entries, max_size=5), st.binary(max_size=64))
def test_random_json_headers_parse_or_raise_checkpoint_error(header: dict, tail: bytes) -> None:
    blob = json.dumps(header).encode()
    _parse_or_checkpoint_error(struct.pack("<Q", len(blob)) + blob + tail)
