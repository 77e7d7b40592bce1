"""Requests to the OpenAI-compatible API, checked at the door: every
parameter of chat and text completions validated (a 400 naming it), the
model a key may call, and the sampling parameters the worker will take."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.models import ApiKey
from inference.protocol import (
    MAX_BEAMS,
    MAX_CHOICES,
    MAX_STOP_LENGTH,
    MAX_TOP_LOGPROBS,
    SamplingError,
    SamplingParams,
)
from inference.structured import (
    StructuredError,
    response_format_check,
    response_format_constrains,
)
from models_admin.models import KnowledgeBase, ModelVersion
from models_admin.selectors import model_version_get_production
from models_admin.selectors.knowledge import knowledge_base_for_api

logger = logging.getLogger(__name__)

#: Parameters of the chat completions API this server understands.
KNOWN = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "logprobs",
    "top_logprobs",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "best_of",
    "use_beam_search",
    "length_penalty",
    "early_stopping",
    "response_format",
    "user",
    # This server's own: ground the answer in a knowledge base (name or id).
    "knowledge_base",
    "stream",
    "stream_options",
    "store",
    "metadata",
    "parallel_tool_calls",
}
#: OpenAI parameters this server does not offer, with why; each is still
#: accepted at its neutral value (client wrappers send those by default).
UNSUPPORTED = {
    "tools": "Tool calls are not supported.",
    "tool_choice": "Tool calls are not supported.",
    "functions": "Function calls are not supported.",
    "function_call": "Function calls are not supported.",
    "logit_bias": "logit_bias is not supported.",
    "audio": "Audio is not supported.",
    "modalities": "Only text is supported.",
    "prediction": "Predicted outputs are not supported.",
}
#: The values of unsupported parameters that change nothing.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "tools": ([],),
    "tool_choice": ("none",),
    "functions": ([],),
    "function_call": ("none",),
    "logit_bias": ({},),
    "modalities": (["text"],),
}
#: Keys and characters of the ``metadata`` object, as OpenAI bounds them.
METADATA_KEYS = 16
METADATA_KEY_CHARS = 64
METADATA_VALUE_CHARS = 512
#: Characters of all messages of one call together.
MAX_PROMPT_CHARS = 200_000
DEFAULT_ALIAS = "default"


class ApiError(Exception):
    """A refused call in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _invalid(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def api_models_for_key(*, key: ApiKey) -> list[ModelVersion]:
    """The versions a key may call, production first."""
    production = model_version_get_production()
    versions = [production] if production is not None else []
    if key.all_versions:
        others = ModelVersion.objects.exclude(state=ModelVersion.State.ARCHIVED)
        versions += [v for v in others.order_by("-created_at") if v not in versions]
    return versions


def _model(key: ApiKey, name: Any) -> ModelVersion:
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "you must provide a model parameter", param="model", code=None)
    allowed = api_models_for_key(key=key)
    if name == DEFAULT_ALIAS and allowed:
        return allowed[0]
    for version in allowed:
        if version.name == name:
            return version
    raise ApiError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def _content(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for index, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _invalid(f"{param}[{index}]", "Only text content parts are supported.")
            if not isinstance(part.get("text"), str):
                raise _invalid(f"{param}[{index}].text", "A text part needs a string text.")
            parts.append(part["text"])
        return "".join(parts)
    if value is None:
        return ""
    raise _invalid(param, "content must be a string or a list of text parts.")


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _invalid("messages", "messages must be a non-empty list.")
    out = []
    total = 0
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(param, "Each message is an object with a role and content.")
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise _invalid(
                f"{param}.role", f"Unsupported role {role!r}: system, user or assistant."
            )
        content = _content(message.get("content"), f"{param}.content")
        total += len(content)
        out.append({"role": role, "content": content})
    if total > MAX_PROMPT_CHARS:
        raise _invalid("messages", f"The messages are limited to {MAX_PROMPT_CHARS:,} characters.")
    if not any(m["role"] == "user" for m in out):
        raise _invalid("messages", "messages needs at least one user message.")
    for index, message in enumerate(out):
        if message["role"] == "user" and not message["content"].strip():
            raise _invalid(f"messages[{index}].content", "A user message needs some text.")
    return out


def _number(body: dict[str, Any], name: str, low: float, high: float, *, low_open: bool = False):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(name, f"{name} must be a number.")
    if not math.isfinite(value):
        raise _invalid(name, f"{name} must be a finite number; got {value}.")
    if value > high or value < low or (low_open and value == low):
        bound = f"greater than {low}" if low_open else f"at least {low}"
        raise _invalid(name, f"{name} must be {bound} and at most {high}; got {value}.")
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, f"{name} must be an integer.")
    if not low <= value <= high:
        raise _invalid(name, f"{name} must be between {low} and {high}; got {value}.")
    return value


def _non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _same(value: Any, neutral: Any) -> bool:
    # 0 == False in Python: a neutral value matches only its own kind.
    def kind(item: Any) -> type:
        return float if type(item) in (int, float) else type(item)

    return kind(value) is kind(neutral) and value == neutral


def _flags_check(body: dict[str, Any]) -> None:
    """Check the parameters accepted and ignored: ``store``,
    ``parallel_tool_calls`` and ``metadata``."""
    for name in ("store", "parallel_tool_calls"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _invalid(name, f"{name} must be true or false.")
    metadata = body.get("metadata")
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > METADATA_KEYS:
        raise _invalid("metadata", f"metadata is an object of up to {METADATA_KEYS} keys.")
    for key, value in metadata.items():
        if (
            len(key) > METADATA_KEY_CHARS
            or not isinstance(value, str)
            or len(value) > METADATA_VALUE_CHARS
        ):
            raise _invalid(
                "metadata",
                f"metadata maps keys of up to {METADATA_KEY_CHARS} characters to strings of "
                f"up to {METADATA_VALUE_CHARS}.",
            )


def _response_format_parse(body: dict[str, Any], params: dict[str, Any]) -> None:
    """``response_format``: text, or JSON (any object, or one following a
    JSON schema) that decoding is held to."""
    value = body.get("response_format")
    if value is None:
        return
    try:
        response_format_check(value)
    except StructuredError as exc:
        raise _invalid("response_format", f"response_format: {exc}") from None
    if not response_format_constrains(value):
        return
    if params.get("beams", 1) > 1:
        raise _invalid("response_format", "response_format is not available with beam search.")
    params["response_format"] = value


def _beams_parse(body: dict[str, Any], n: int, params: dict[str, Any]) -> None:
    """Beam search as vLLM's server takes it: ``use_beam_search`` with
    ``best_of`` beams (n by default), ``length_penalty`` and
    ``early_stopping``."""
    beam = body.get("use_beam_search")
    if beam is not None and not isinstance(beam, bool):
        raise _invalid("use_beam_search", "use_beam_search must be true or false.")
    best_of = _integer(body, "best_of", 1, MAX_BEAMS)
    if not beam:
        if best_of is not None and best_of != n:
            raise _invalid(
                "best_of", "best_of other than n needs use_beam_search=true (the beam width)."
            )
        for name in ("length_penalty", "early_stopping"):
            if body.get(name) is not None:
                raise _invalid(name, f"{name} applies to beam search: set use_beam_search=true.")
        return
    beams = best_of or max(n, 2)
    if n > beams:
        raise _invalid("n", f"n ({n}) must not exceed the beams (best_of={beams}).")
    params["beams"] = beams
    penalty = _number(body, "length_penalty", -10.0, 10.0)
    if penalty is not None:
        params["length_penalty"] = penalty
    early = body.get("early_stopping")
    if early is not None:
        if not isinstance(early, bool) and early != "never":
            raise _invalid("early_stopping", 'early_stopping is true, false or "never".')
        params["early_stopping"] = early
    for name in ("logprobs", "top_logprobs"):
        if body.get(name):
            raise _invalid(name, f"{name} is not available with beam search.")


@dataclass(frozen=True)
class CompletionRequest:
    version: ModelVersion
    messages: list[dict[str, str]]
    params: dict[str, Any]
    stream: bool
    include_usage: bool
    end_user: str
    #: The answer carries each token's log-probabilities.
    logprobs: bool = False
    #: Answers asked for (choices).
    n: int = 1
    #: ``/v1/completions``: the text to continue (no chat template), and
    #: whether the answer repeats it first.
    prompt: str | None = None
    echo: bool = False
    #: The knowledge base the answer is grounded in (a ``KnowledgeBase``).
    knowledge_base: Any = None


#: Parameters of ``/v1/completions`` besides the chat ones it shares.
TEXT_KNOWN = (
    KNOWN - {"messages", "logprobs", "top_logprobs", "response_format", "knowledge_base"}
) | {
    "prompt",
    "echo",
    "logprobs",
    "suffix",
}


def _prompt(value: Any) -> str:
    """The text to continue: a string, or a list holding one."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, list):
        raise _invalid("prompt", "prompt is one string (a list of prompts is not supported).")
    if not isinstance(value, str) or not value:
        raise _invalid("prompt", "prompt must be a non-empty string.")
    if len(value) > MAX_PROMPT_CHARS:
        raise _invalid("prompt", f"The prompt is limited to {MAX_PROMPT_CHARS:,} characters.")
    return value


def text_completion_request_parse(*, key: ApiKey, body: Any) -> CompletionRequest:
    """Check a ``/v1/completions`` body (OpenAI's legacy text completions:
    ``prompt``, ``echo``, ``logprobs`` as a count of alternatives);
    raise ApiError naming the parameter."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    for name in body:
        if name not in TEXT_KNOWN:
            raise ApiError(
                400, f"Unrecognized request argument supplied: {name}", param=name, code=None
            )
    if body.get("suffix") not in (None, ""):
        raise _invalid("suffix", "suffix is not supported.")
    prompt = _prompt(body.get("prompt"))
    echo = body.get("echo", False)
    if echo is not None and not isinstance(echo, bool):
        raise _invalid("echo", "echo must be true or false.")
    alternatives = _integer(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    chat_body = {
        name: value
        for name, value in body.items()
        if name not in ("prompt", "echo", "logprobs", "suffix")
    }
    chat_body["messages"] = [{"role": "user", "content": prompt}]
    if alternatives is not None:
        chat_body.update(logprobs=True, top_logprobs=alternatives)
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        chat_body["max_tokens"] = min(16, settings.API_MAX_TOKENS)  # OpenAI's default here
    parsed = completion_request_parse(key=key, body=chat_body)
    params = dict(parsed.params)
    if echo and alternatives is not None:
        params["prompt_logprobs"] = alternatives
    return CompletionRequest(
        version=parsed.version,
        messages=parsed.messages,
        params=params,
        stream=parsed.stream,
        include_usage=parsed.include_usage,
        end_user=parsed.end_user,
        logprobs=parsed.logprobs,
        n=parsed.n,
        prompt=prompt,
        echo=bool(echo),
    )


def _knowledge_base(key: ApiKey, body: dict[str, Any]) -> Any:
    """The base a call names (``knowledge_base``: a name or id of one open
    to members, or the key's own; null for none), else the key's own."""
    own = (
        KnowledgeBase.objects.filter(pk=key.knowledge_base_id).first()
        if key.knowledge_base_id is not None
        else None
    )
    if "knowledge_base" not in body:
        return own
    value = body["knowledge_base"]
    if value is None:
        return None
    base = knowledge_base_for_api(name=value, default=own)
    if base is None:
        raise _invalid(
            "knowledge_base",
            "No knowledge base of that name or id is open to API calls; leave it out or "
            "use null to answer without one.",
        )
    return base


def completion_request_parse(*, key: ApiKey, body: Any) -> CompletionRequest:
    """Check a chat completions body; raise ApiError naming the parameter."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    for name, value in body.items():
        if _non_finite(value):
            # Python's json reads NaN and Infinity literals, which no
            # parameter can mean.
            raise _invalid(name, f"{name} holds NaN or Infinity, which is not a JSON number.")
        if name in UNSUPPORTED:
            if value is None or any(_same(value, neutral) for neutral in NEUTRAL.get(name, ())):
                continue
            raise _invalid(name, UNSUPPORTED[name])
        if name not in KNOWN:
            raise ApiError(
                400, f"Unrecognized request argument supplied: {name}", param=name, code=None
            )
    _flags_check(body)
    version = _model(key, body.get("model"))
    messages = _messages(body.get("messages"))
    params: dict[str, Any] = {}
    n = _integer(body, "n", 1, MAX_CHOICES) or 1
    _beams_parse(body, n, params)
    if n > 1:
        params["n"] = n
    rows = max(n, params.get("beams", 1))
    if rows > settings.INFERENCE_SLOTS:
        # The engine runs each answer (or beam) in a slot of its own.
        param = "best_of" if params.get("beams", 1) > n else "n"
        raise _invalid(
            param,
            f"This server answers at most {settings.INFERENCE_SLOTS} sequences at once "
            f"(n and beams); got {rows}.",
        )
    temperature = _number(body, "temperature", 0.0, 2.0)
    if temperature is not None:
        params["temperature"] = temperature
    top_p = _number(body, "top_p", 0.0, 1.0, low_open=True)
    if top_p is not None:
        params["top_p"] = top_p
    # top_k as vLLM takes it: -1 (or 0) turns it off.
    top_k = _integer(body, "top_k", -1, 1_000_000)
    if top_k is not None:
        params["top_k"] = max(top_k, 0)
    for name, low, high in (
        ("min_p", 0.0, 1.0),
        ("frequency_penalty", -2.0, 2.0),
        ("presence_penalty", -2.0, 2.0),
    ):
        value = _number(body, name, low, high)
        if value is not None:
            params[name] = value
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _invalid("logprobs", "logprobs must be true or false.")
    top_logprobs = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top_logprobs is not None and not logprobs:
        raise _invalid("top_logprobs", "top_logprobs needs logprobs=true.")
    if logprobs:
        params["logprobs"] = top_logprobs or 0
    _response_format_parse(body, params)
    repetition = _number(body, "repetition_penalty", 0.1, 10.0)
    if repetition is not None:
        params["repetition_penalty"] = repetition
    limit = settings.API_MAX_TOKENS
    max_tokens = _integer(body, "max_completion_tokens", 1, limit) or _integer(
        body, "max_tokens", 1, limit
    )
    params["max_new_tokens"] = max_tokens or min(1024, limit)
    seed = _integer(body, "seed", -(2**63), 2**63 - 1)
    if seed is not None:
        params["seed"] = seed % 2**32
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or len(stops) > 4
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_LENGTH for s in stops)
        ):
            raise _invalid(
                "stop",
                f"stop is a string or a list of up to 4 strings of 1 to {MAX_STOP_LENGTH} "
                "characters.",
            )
        params["stop"] = stops
    try:
        SamplingParams.from_dict(params)
    except SamplingError as exc:
        # The bounds above should catch everything first; this keeps a
        # refusal by the worker's own rules a 400 rather than a queue error.
        raise _invalid("messages", str(exc)) from None
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _invalid("stream", "stream must be true or false.")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise _invalid("stream_options", "stream_options is only allowed with stream=true.")
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise _invalid("stream_options", 'stream_options is {"include_usage": bool}.')
        include_usage = bool(options.get("include_usage"))
    end_user = body.get("user") or ""
    if not isinstance(end_user, str) or len(end_user) > 200:
        raise _invalid("user", "user is a string of at most 200 characters.")
    base = _knowledge_base(key, body)
    if base is not None and n > 1:
        raise _invalid("n", "n above 1 is not available with a knowledge base.")
    return CompletionRequest(
        knowledge_base=base,
        version=version,
        messages=messages,
        params=params,
        stream=stream,
        include_usage=include_usage,
        end_user=end_user,
        logprobs=bool(logprobs),
        n=n,
    )
