"""How a grading kernel talks to the grader's judge: length-prefixed messages of JSON and safetensors, no pickle.

Under the grader the kernel's environment names the judge's socket (``ALIGNLAB_JUDGE``); a check then asks the
judge for its cases (inputs and gradient weights only), runs the learner's function on them and sends back
what came out (outputs, gradients, the fingerprints of the code that ran). The judge, outside the student's
sandbox, compares them with the expected outputs it alone holds and answers with the verdict. Without the
variable (a learner's own kernel, Colab) every check runs in the kernel, as it always did.

A message is ``len (8 bytes) | len(json) (4) | json | blob``; the blob is safetensors bytes (or empty).
Values the learner returned are encoded by :func:`encode_value`: tensors go to the blob, numbers, strings,
None and sequences stay in the JSON, anything else travels as its type name and a short description.
"""
from __future__ import annotations

import json
import numbers
import os
import socket
import struct
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

JUDGE_ENV = "ALIGNLAB_JUDGE"          # the judge's socket path, set for the grading kernel only (not a secret)
MAX_MESSAGE = 64 * 2 ** 20            # bytes: the judge refuses a larger reply (outputs of these exercises are small)
TIMEOUT_S = 120.0                     # one request, kernel side


def judge_address() -> str | None:
    """The judge's socket when this kernel runs under the grader, else None (checks run here, as always)."""
    return os.environ.get(JUDGE_ENV) or None


def pack(header: dict, blob: bytes = b"") -> bytes:
    meta = json.dumps(header).encode()
    body = struct.pack(">I", len(meta)) + meta + blob
    return struct.pack(">Q", len(body)) + body


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection mid-message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send(sock: socket.socket, header: dict, blob: bytes = b"") -> None:
    sock.sendall(pack(header, blob))


def receive(sock: socket.socket, limit: int = MAX_MESSAGE) -> tuple[dict, bytes]:
    """One message: (header, blob). Refuses one longer than ``limit`` bytes."""
    (n,) = struct.unpack(">Q", _exactly(sock, 8))
    if n > limit or n < 4:
        raise ValueError(f"a message of {n} bytes (the limit is {limit})")
    body = _exactly(sock, n)
    (m,) = struct.unpack(">I", body[:4])
    if m > n - 4:
        raise ValueError("a malformed message")
    header = json.loads(body[4:4 + m])
    if not isinstance(header, dict):
        raise ValueError("a malformed message header")
    return header, body[4 + m:]


def request(header: dict, blob: bytes = b"", address: str | None = None) -> tuple[dict, bytes]:
    """Send one request to the judge and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.connect(address or judge_address())
        send(sock, header, blob)
        return receive(sock)


def tensors_blob(tensors: dict[str, Tensor]) -> bytes:
    return save_tensors(dict(sorted(tensors.items()))) if tensors else b""


def blob_tensors(blob: bytes) -> dict[str, Tensor]:
    return load_tensors(blob) if blob else {}


# ------------------------------------------------------------------ what the learner returned
class Opaque:
    """Something the learner returned that does not travel (a numpy array, a model, ...): its type and description."""

    def __init__(self, typename: str, text: str):
        self.typename, self.text = typename, text

    def __repr__(self) -> str:
        return self.text


def typename(x: Any) -> str:
    return x.typename if isinstance(x, Opaque) else type(x).__name__


def encode_value(value: Any, key: str, tensors: dict[str, Tensor], depth: int = 0) -> dict:
    """``value`` as JSON, with its tensors stored in ``tensors`` under keys that start with ``key``."""
    if isinstance(value, Tensor):
        try:
            if value.layout != torch.strided or value.is_quantized or value.is_complex() or value.device.type == "meta":
                raise TypeError(value.layout)
            tensors[key] = value.detach().to("cpu").clone().contiguous()
            return {"tensor": key, "requires_grad": bool(value.requires_grad)}
        except Exception:
            return {"opaque": "Tensor", "text": f"a tensor that cannot be compared ({value.dtype}, {value.layout})"}
    if isinstance(value, (tuple, list)) and depth < 3:
        return {"seq": [encode_value(v, f"{key}.{i}", tensors, depth + 1) for i, v in enumerate(value[:64])],
                "list": isinstance(value, list), "length": len(value)}
    if value is None or isinstance(value, (bool, str)):
        return {"value": value if not isinstance(value, str) else value[:1000]}
    if isinstance(value, numbers.Integral):
        return {"value": int(value)}
    if isinstance(value, numbers.Real):
        return {"value": float(value), "type": type(value).__name__}
    text = repr(value)
    return {"opaque": type(value).__name__, "text": text[:200] + ("..." if len(text) > 200 else "")}


def decode_value(entry: dict, tensors: dict[str, Tensor]) -> Any:
    if "tensor" in entry:
        t = tensors[entry["tensor"]]
        if entry.get("requires_grad") and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_(True)            # a leaf that only says the learner's output carried gradient
        return t
    if "seq" in entry:
        items = [decode_value(e, tensors) for e in entry["seq"]]
        items += [Opaque("object", "...")] * max(0, int(entry.get("length", len(items))) - len(items))
        return items if entry.get("list") else tuple(items)
    if "opaque" in entry:
        return Opaque(str(entry["opaque"]), str(entry.get("text", "")))
    return entry.get("value")
