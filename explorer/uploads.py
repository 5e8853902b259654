"""Safe weight uploads: a state dict for a known architecture, checked, never executed.

A browser user uploads weights for a registered architecture (e.g. a retrained ``digits_cnn``)
as safetensors (preferred: a flat header plus raw bytes, nothing to execute) or as a ``.pt``
state dict, which is read with ``torch.load(..., weights_only=True)`` (PyTorch's restricted
unpickler: tensors and plain containers only). Everything is parsed from memory (``BytesIO``):
nothing uploaded is written to disk. The file's size, keys, shapes, dtypes and finiteness are
checked against the architecture and the caller gets its own copy of every tensor.

>>> state = load_uploaded_weights(data, "cnn.safetensors", expected_from_model(model))
>>> model.load_state_dict(state)   # on the session's own copy of the module
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import nn

#: Default upper bound of an upload, in bytes (settable per call).
DEFAULT_MAX_BYTES = 64 * 2**20
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
#: What to upload instead of a pickled model (shown in refusals).
SAFETENSORS_SNIPPET = (
    "from safetensors.torch import save_file\n"
    "save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, \"weights.safetensors\")"
)
_WRAPPER_KEYS = ("state_dict", "model_state_dict")
_SHOW = 8  # names listed per kind of problem

Expected = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


class UploadError(ValueError):
    """An uploaded file was refused; the message says why and what to upload instead."""


def expected_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{key: (shape, dtype)}`` of a state dict: what an upload for it must hold."""
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


def expected_from_model(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{key: (shape, dtype)}`` of ``model.state_dict()`` (parameters and buffers)."""
    return expected_from_state(model.state_dict())


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOW])
    return shown + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def _pickle_refusal(filename: str, detail: str) -> UploadError:
    return UploadError(
        f"{filename!r} was refused: it holds pickled Python objects, not only tensors ({detail}). "
        "Unpickling such a file could run arbitrary code, so uploads are read with "
        "torch.load(weights_only=True), which refuses them. Upload the model's state_dict instead, "
        f"preferably as safetensors:\n{SAFETENSORS_SNIPPET}"
    )


def _read_safetensors(data: bytes, filename: str) -> dict[str, torch.Tensor]:
    if data[:2] == b"PK" or data[:1] == b"\x80":
        raise UploadError(f"{filename!r} is not safetensors but looks like a torch.save file; "
                          f"name it .pt (it is read with weights_only=True) or save it as safetensors:\n{SAFETENSORS_SNIPPET}")
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise UploadError(f"{filename!r} is not a readable safetensors file (truncated or corrupt?): {err}") from None


def _check_zip(data: bytes, filename: str, max_bytes: int) -> None:
    """A torch.save zip must store its records uncompressed and unpack to at most ``max_bytes``
    (``torch.save`` writes them so; a compressed record could unpack to far more than was uploaded)."""
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, EOFError, ValueError) as err:
        raise UploadError(f"{filename!r} is not a readable torch.save file (truncated or corrupt?): {err}") from None
    compressed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise UploadError(f"{filename!r} has compressed records ({_names(compressed)}); torch.save stores them "
                          f"uncompressed: upload the file torch.save wrote, or safetensors:\n{SAFETENSORS_SNIPPET}")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > max_bytes:
        raise UploadError(f"{filename!r} unpacks to {_mib(unpacked)}; the upload limit is {_mib(max_bytes)}")


def _read_torch(data: bytes, filename: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise _pickle_refusal(filename, f"it references {found.group(1)}") from None
        found = re.search(r"Unsupported operand (\d+)", text)
        if found:
            raise _pickle_refusal(filename, f"a raw pickle stream (opcode {found.group(1)}), not a torch.save "
                                            "state_dict") from None
        raise UploadError(f"{filename!r} is not a readable torch.save file (truncated or corrupt?): {text[:200]}") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise UploadError(f"{filename!r} is not a readable torch.save file (truncated or corrupt?): "
                          f"{type(err).__name__}: {str(err)[:200]}") from None


def _as_state(obj: Any, filename: str) -> dict[str, torch.Tensor]:
    """The flat ``{key: tensor}`` dict in a loaded file (a ``{'state_dict': ...}`` wrapper is unwrapped)."""
    if isinstance(obj, nn.Module):  # cannot come out of weights_only, kept for clarity
        raise _pickle_refusal(filename, "a whole nn.Module")
    if not isinstance(obj, Mapping):
        raise UploadError(f"{filename!r} holds a {type(obj).__name__}; upload a state_dict (a dict of tensors)")
    for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping) and not isinstance(obj.get(key), torch.Tensor):
            obj = obj[key]
            break
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str)]
    if not_tensors:
        raise UploadError(f"{filename!r} is not a flat state_dict: {_names(not_tensors)} are not tensors; "
                          "upload model.state_dict() itself")
    return dict(obj)


def check_state(state: Mapping[str, torch.Tensor], expected: Expected, filename: str = "upload",
                allow_missing: bool = False) -> dict[str, torch.Tensor]:
    """``state`` checked against ``expected`` and cast to its dtypes, as own contiguous copies.

    Refused (every problem listed): missing keys (unless ``allow_missing``), unexpected keys,
    wrong shapes, a non-floating tensor where a floating one is expected (or a dtype of another
    kind), and NaN/Inf values (after the cast, so float64 overflowing float32 is caught too).
    """
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing and not allow_missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        hint = " (saved from DataParallel? strip the 'module.' prefix)" if all(k.startswith("module.") for k in unexpected) else ""
        problems.append(f"unexpected keys: {_names(unexpected)}{hint}")
    out, shapes, kinds, bad = {}, [], [], []
    for key in (k for k in expected if k in state):  # in the model's order
        tensor, (shape, dtype) = state[key], expected[key]
        if tuple(tensor.shape) != tuple(shape):
            shapes.append(f"{key!r} is {tuple(tensor.shape)}, expected {tuple(shape)}")
            continue
        same_kind = (tensor.is_floating_point() == dtype.is_floating_point
                     and tensor.is_complex() == dtype.is_complex and (tensor.dtype == torch.bool) == (dtype == torch.bool))
        if not same_kind:
            kinds.append(f"{key!r} is {tensor.dtype}, expected {dtype}")
            continue
        cast = tensor.detach().to(device="cpu", dtype=dtype).contiguous().clone()
        if cast.is_floating_point() and not bool(torch.isfinite(cast).all()):
            bad.append(key)
        out[key] = cast
    if shapes:
        problems.append("wrong shapes: " + "; ".join(shapes[:_SHOW]) + (f"; and {len(shapes) - _SHOW} more" if len(shapes) > _SHOW else ""))
    if kinds:
        problems.append("wrong dtypes (floating tensors expected where the model has them): " + "; ".join(kinds[:_SHOW]))
    if bad:
        problems.append(f"non-finite values (NaN or Inf) in {_names(bad)}")
    if problems:
        raise UploadError(f"{filename!r} does not fit this model: " + "; ".join(problems))
    return out


def load_uploaded_weights(data: bytes, filename: str, expected: Expected, max_bytes: int = DEFAULT_MAX_BYTES,
                          *, allow_missing: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in an uploaded file, checked against ``expected`` (``{key: (shape, dtype)}``).

    ``filename`` picks the reader: ``.safetensors`` or a ``.pt``/``.pth``/``.bin`` state dict read
    with ``torch.load(BytesIO(data), weights_only=True)``; parsing is from memory, nothing touches
    disk. Files over ``max_bytes`` (or torch.save zips unpacking to more) are refused before parsing; a pickled model (or any pickled
    object other than tensors) is refused without being unpickled, with what to upload instead.
    Every refusal is an :class:`UploadError` (a ``ValueError``) saying what was wrong.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise UploadError(f"upload data must be bytes, got {type(data).__name__}")
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    name = str(filename or "upload")
    if len(data) > max_bytes:
        raise UploadError(f"{name!r} is {_mib(len(data))}; the upload limit is {_mib(max_bytes)}")
    if not data:
        raise UploadError(f"{name!r} is empty")
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in SAFETENSORS_SUFFIXES:
        state = _read_safetensors(data, name)
    elif suffix in TORCH_SUFFIXES:
        if data[:2] == b"PK":
            _check_zip(data, name, max_bytes)
        state = _as_state(_read_torch(data, name), name)
    else:
        raise UploadError(f"{name!r}: unknown file type {suffix or '(none)'}; upload "
                          f"{' or '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)} (a state_dict)")
    if not state:
        raise UploadError(f"{name!r} holds no tensors")
    return check_state(state, expected, name, allow_missing=allow_missing)
