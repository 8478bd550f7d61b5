"""OpenAI `POST /v1/embeddings`: deterministic unit vectors derived from a hash of each input."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from ._usage import count_raw_input
from ._wire import BadRequest, Call, JsonReply

__all__ = ["embeddings", "vector_for"]

_DEFAULT_DIMENSIONS = 8
_MAX_DIMENSIONS = 16_384


def vector_for(key: bytes, dimensions: int) -> list[float]:
    """A unit vector from SHAKE-256 of `key`, already rounded to float32.

    Rounding first means the float-list and base64 encodings carry exactly the same numbers.
    """
    words = struct.unpack(f"<{dimensions}I", hashlib.shake_256(key).digest(4 * dimensions))
    values = [w / 2**31 - 1.0 for w in words]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def _inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [value]  # one token array
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return list(value)
    raise BadRequest("'input' must be a string, a list of strings, or token arrays")


def embeddings(call: Call) -> JsonReply:
    inputs = _inputs(call.body.get("input"))
    dimensions = call.body.get("dimensions") or _DEFAULT_DIMENSIONS
    if not isinstance(dimensions, int) or not 0 < dimensions <= _MAX_DIMENSIONS:
        raise BadRequest(f"'dimensions' must be an integer between 1 and {_MAX_DIMENSIONS}")
    as_base64 = call.body.get("encoding_format") == "base64"  # the openai SDK's default
    data = []
    for index, item in enumerate(inputs):
        key = item.encode() if isinstance(item, str) else ("tokens:" + ",".join(map(str, item))).encode()
        vector = vector_for(key, dimensions)
        encoded: Any = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_raw_input(item, call.model) for item in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    body = {"object": "list", "data": data, "model": call.model, "usage": usage}
    return JsonReply(body, usage=usage)
