"""Safe uploads: accepted state dicts equal what was saved; everything else refused clearly, nothing executed."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch
from safetensors.torch import save
from torch import nn

from prunescope.explorer.uploads import (
    SAFETENSORS_SNIPPET,
    UploadError,
    expected_from_model,
    load_uploaded_weights,
)
from prunescope.sample_models import get_sample_model


@pytest.fixture(scope="module")
def cnn():
    spec = get_sample_model("digits_cnn")
    return spec, spec.load()


def perturbed_state(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """'Retrained' weights: the shipped ones plus seeded noise."""
    g = torch.Generator().manual_seed(seed)
    return {k: (v + 0.05 * torch.randn(v.shape, generator=g)).contiguous() for k, v in model.state_dict().items()}


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_safetensors_upload_is_accepted_and_equal(cnn):
    spec, model = cnn
    state = perturbed_state(model)
    got = load_uploaded_weights(save(state), "retrained.safetensors", expected_from_model(model))
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    got["fc1.weight"].zero_()  # the session's own copy
    assert not torch.equal(state["fc1.weight"], got["fc1.weight"])
    fresh = spec.build()
    fresh.load_state_dict(load_uploaded_weights(save(state), "r.safetensors", expected_from_model(model)))
    x, _ = spec.data("test")
    with torch.no_grad():
        assert not torch.allclose(fresh.eval()(x), model(x))  # other weights, other logits


def test_pt_state_dict_upload_is_accepted_and_cast(cnn):
    _, model = cnn
    state = perturbed_state(model, seed=1)
    got = load_uploaded_weights(torch_bytes({k: v.double() for k, v in state.items()}), "w.pt", expected_from_model(model))
    assert all(got[k].dtype == torch.float32 and torch.equal(got[k], state[k].double().float()) for k in state)
    wrapped = load_uploaded_weights(torch_bytes({"state_dict": state, "epoch": 3}), "ckpt.pth", expected_from_model(model))
    assert all(torch.equal(wrapped[k], state[k]) for k in state)


def refusal(data: bytes, filename: str, expected, **kwargs) -> str:
    with pytest.raises(UploadError) as err:
        load_uploaded_weights(data, filename, expected, **kwargs)
    assert isinstance(err.value, ValueError)
    return str(err.value)


def test_pickled_model_is_refused_with_what_to_upload_instead(cnn):
    _, model = cnn
    message = refusal(torch_bytes(model), "model.pt", expected_from_model(model))
    assert "DigitsCNN" in message and "could run arbitrary code" in message and "weights_only=True" in message
    assert SAFETENSORS_SNIPPET in message and "save_file" in message


def test_wrong_shapes_keys_dtypes_are_refused(cnn):
    _, model = cnn
    expected = expected_from_model(model)
    state = perturbed_state(model)
    wrong = {**state, "fc1.weight": torch.zeros(64, 100)}
    assert "wrong shapes: 'fc1.weight' is (64, 100), expected (64, 512)" in refusal(save(wrong), "w.safetensors", expected)
    fewer = {k: v for k, v in state.items() if k != "fc2.bias"}
    assert "missing keys: 'fc2.bias'" in refusal(save(fewer), "w.safetensors", expected)
    assert load_uploaded_weights(save(fewer), "w.safetensors", expected, allow_missing=True).keys() == fewer.keys()
    more = {**state, "fc3.weight": torch.zeros(2)}
    assert "unexpected keys: 'fc3.weight'" in refusal(save(more), "w.safetensors", expected)
    prefixed = {f"module.{k}": v for k, v in state.items()}
    assert "strip the 'module.' prefix" in refusal(save(prefixed), "w.safetensors", expected)
    ints = {**state, "conv1.bias": torch.zeros(16, dtype=torch.int64)}
    assert "'conv1.bias' is torch.int64, expected torch.float32" in refusal(save(ints), "w.safetensors", expected)
    assert "not a flat state_dict" in refusal(torch_bytes({"a": [1, 2]}), "w.pt", expected)
    assert "holds a list" in refusal(torch_bytes([state["fc1.weight"]]), "w.pt", expected)


def test_non_finite_weights_are_named(cnn):
    _, model = cnn
    state = perturbed_state(model)
    state["conv2.weight"][0, 0, 0, 0] = float("nan")
    state["fc2.bias"][3] = float("inf")
    message = refusal(save(state), "w.safetensors", expected_from_model(model))
    assert "non-finite values (NaN or Inf) in 'conv2.weight', 'fc2.bias'" in message
    big = {k: v.double() for k, v in perturbed_state(model).items()}
    big["fc1.bias"][0] = 1e300  # finite in float64, Inf once cast to the model's float32
    assert "'fc1.bias'" in refusal(save(big), "w.safetensors", expected_from_model(model))


def test_truncated_oversized_empty_and_unknown_files(cnn):
    _, model = cnn
    expected = expected_from_model(model)
    state = perturbed_state(model)
    st, pt = save(state), torch_bytes(state)
    assert "truncated" in refusal(st[: len(st) // 2], "w.safetensors", expected)
    assert "truncated" in refusal(st[:6], "w.safetensors", expected)
    assert "truncated" in refusal(pt[: len(pt) // 2], "w.pt", expected)
    message = refusal(st, "w.safetensors", expected, max_bytes=len(st) - 1)
    assert "the upload limit is" in message and "MiB" in message
    assert load_uploaded_weights(st, "w.safetensors", expected, max_bytes=len(st)).keys() == state.keys()
    assert "is empty" in refusal(b"", "w.safetensors", expected)
    assert "unknown file type .onnx" in refusal(st, "model.onnx", expected)
    assert "looks like a torch.save file; name it .pt" in refusal(pt, "w.safetensors", expected)


def test_compressed_or_inflating_zips_are_refused(cnn):
    import zipfile

    _, model = cnn
    expected = expected_from_model(model)
    pt = torch_bytes(perturbed_state(model))
    src = zipfile.ZipFile(io.BytesIO(pt))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert "has compressed records" in refusal(out.getvalue(), "w.pt", expected)
    assert load_uploaded_weights(pt, "w.pt", expected).keys() == expected.keys()  # torch.save's own zip is fine


class CreatesAFile:
    """Unpickling this object opens (creates) ``path``: a stand-in for any code a pickle can run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("wrap", ["torch.save", "pickle protocol 2", "pickle protocol 5", "as safetensors"])
def test_security_a_malicious_pickle_never_runs(tmp_path, cnn, wrap):
    _, model = cnn
    target = tmp_path / "pwned.txt"
    payloads = {
        "torch.save": (lambda obj: torch_bytes({"fc1.weight": obj}), "weights.pt"),
        "pickle protocol 2": (lambda obj: pickle.dumps(obj, protocol=2), "weights.pt"),
        "pickle protocol 5": (lambda obj: pickle.dumps(obj, protocol=5), "weights.pth"),
        "as safetensors": (lambda obj: pickle.dumps(obj, protocol=2), "weights.safetensors"),
    }
    make, filename = payloads[wrap]
    # The payload is live: really unpickling it (here, with a sibling path) creates the file.
    probe = tmp_path / "probe.txt"
    pickle.loads(make(CreatesAFile(str(probe)))) if wrap != "torch.save" else \
        torch.load(io.BytesIO(make(CreatesAFile(str(probe)))), weights_only=False)
    assert probe.exists()
    data = make(CreatesAFile(str(target)))
    message = refusal(data, filename, expected_from_model(model))
    assert not target.exists(), "code in the uploaded file ran"
    assert not os.path.exists(str(target))
    if filename.endswith((".pt", ".pth")):
        assert "could run arbitrary code" in message and "safetensors" in message
