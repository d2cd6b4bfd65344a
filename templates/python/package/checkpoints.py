"""Checkpoint files with numpy alone: safetensors, or numpy's ``.npz``, chosen by the file's extension.

- ``load_safetensors(path, prefix="")`` reads every tensor (or those under ``prefix``, with the prefix
  taken off their names) as numpy arrays; bfloat16 is widened to float32, exactly.
- ``save_safetensors(state, path)`` writes name -> array-like (numpy arrays, torch tensors, anything
  ``numpy.asarray`` takes); a ``.npz`` path is written with ``numpy.savez`` (uncompressed, which
  ``mha-gen convert`` reads too).

A torch checkpoint saved with ``safetensors.torch.save_file(model.state_dict(), "model.safetensors")``
is read here without torch, in any framework's environment.
"""
import json
import os

import numpy as np

__all__ = ["load_safetensors", "save_safetensors"]

# safetensors dtype -> numpy dtype (little-endian); BF16 is read as uint16 and widened.
_DTYPES = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "F16": "<f2", "BF16": "<u2",
    "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8",
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items() if k != "BF16"}
_MAX_HEADER = 100 * 1024 * 1024


def _is_npz(path):
    return os.fspath(path).endswith(".npz")


def _read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    n = int.from_bytes(data[:8], "little")
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"{path}: not a safetensors file (header length {n} does not fit the file)")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as exc:
        raise ValueError(f"{path}: not a safetensors file (header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from None
        if dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {dtype}, which numpy cannot hold")
        np_dtype = np.dtype(_DTYPES[dtype])
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= start <= end <= len(body)) or end - start != count * np_dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r} {dtype} {shape} does not fit its data offsets {[start, end]}")
        arr = np.frombuffer(body[start:end], dtype=np_dtype).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
    return tensors


def load_safetensors(path, prefix=""):
    """name -> numpy array of the tensors in `path` (under `prefix`, which is taken off the names)."""
    path = os.fspath(path)
    if _is_npz(path):
        with np.load(path, allow_pickle=False) as npz:
            tensors = {name: npz[name] for name in npz.files}
    else:
        tensors = _read_safetensors(path)
    if not prefix:
        return tensors
    picked = {name[len(prefix):]: arr for name, arr in tensors.items() if name.startswith(prefix)}
    if not picked:
        tops = sorted({name.rsplit(".", 1)[0] + "." for name in tensors if "." in name})[:8]
        raise KeyError(f"{path}: no tensor under the prefix {prefix!r}; the file has tensors under {tops}")
    return picked


def _array(value, name):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn a scalar into shape (1,))
    if arr.dtype not in _NAMES:
        raise TypeError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
    return arr


def save_safetensors(state, path, metadata=None):
    """Writes `state` (name -> array-like) to `path`: safetensors, or numpy's .npz by extension."""
    path = os.fspath(path)
    arrays = {str(name): _array(value, name) for name, value in state.items()}
    if _is_npz(path):
        if metadata:
            raise ValueError(f"{path}: .npz files hold no metadata")
        np.savez(path, **arrays)
        return
    header, offset, chunks = {}, 0, []
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, arr in arrays.items():
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for raw in chunks:
            f.write(raw)
    os.replace(tmp, path)
