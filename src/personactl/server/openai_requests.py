"""The bodies of /v1/chat/completions and /v1/completions as OpenAI clients send them, checked before anything queues.

An explicit `null` means "omitted" everywhere (LangChain sends `seed: null`). Every text that reaches the tokenizer
must be encodable as UTF-8, so a lone surrogate is a 400 naming its field, never a failed batch.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from .personas import PersonaRequest

MAX_SEED = 2**63 - 1
MAX_CHOICES = 8  # choices of one request (n, times the prompts of a completions request)
MAX_STOPS = 4


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError("utf8", "character {at} cannot be encoded as UTF-8 (a lone surrogate?)", {"at": exc.start}) from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


def _stop(text: str) -> str:
    if not text:
        raise PydanticCustomError("stop", "a stop string cannot be empty")
    return _encodable(text)


Stop = Annotated[str, AfterValidator(_stop)]


def _listed(value: Any) -> Any:
    """A single string as a list of one, so each field has one shape (and its errors one location)."""
    return [value] if isinstance(value, str) else value


def _text_parts(value: Any) -> Any:
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class ContentPart(BaseModel, extra="allow"):
    type: str
    text: Text | None = None


class FunctionCall(BaseModel):
    name: Text
    arguments: Text = "{}"  # JSON, as the model wrote it

    def parsed(self) -> Any:
        """The arguments as JSON values (what Hugging Face chat templates expect); the raw text when not JSON."""
        try:
            return json.loads(self.arguments)
        except json.JSONDecodeError:
            return self.arguments


class ToolCall(BaseModel):
    id: Text | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    """One chat message. `developer` is the newer name of `system`; `tool` answers an assistant's tool call."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[list[ContentPart] | None, BeforeValidator(_text_parts)] = None  # a string is one text part
    name: Text | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: Text | None = None

    @model_validator(mode="after")
    def _content(self) -> Message:
        other = sorted({p.type for p in self.content or [] if p.type != "text"})
        if other:
            raise PydanticCustomError("part", "content parts of type {types} are not supported: only 'text'", {"types": ", ".join(other)})
        if any(p.text is None for p in self.content or []):
            raise PydanticCustomError("part", "a 'text' content part needs its 'text'")
        if self.content is None and self.role != "assistant":
            raise PydanticCustomError("content", "a {role} message needs its content", {"role": self.role})
        return self

    def text(self) -> str:
        """The content as one string: text parts joined by newlines (as vLLM does), null as empty."""
        return "\n".join(p.text or "" for p in self.content or [])

    def for_template(self, template_knows_tools: bool) -> dict:
        """This message as a Hugging Face chat template takes it.

        `developer` becomes `system` (a template that refuses system messages gets them folded into the first user
        turn by `Backbone.chat`). A template that mentions `tool_calls` gets them in its own format (arguments as
        JSON values) and `tool` messages with their `tool_call_id`; any other template gets an assistant's tool calls
        as JSON lines in its content (so they are not silently dropped) and `tool` messages under their own role,
        which a template that cannot take that role refuses (a 400).
        """
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        tool_calls = self.tool_calls or []
        calls = [{"name": c.function.name, "arguments": c.function.parsed()} for c in tool_calls]
        if calls and template_knows_tools:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": f} for c, f in zip(tool_calls, calls)]
        elif calls:
            message["content"] = "\n".join([message["content"], *(json.dumps(f) for f in calls)]).strip("\n")
        if self.role == "tool" and template_knows_tools:
            message.update({k: v for k, v in (("tool_call_id", self.tool_call_id), ("name", self.name)) if v is not None})
        return message


class StreamOptions(BaseModel):
    include_usage: bool | None = None


class GenerationRequest(BaseModel):
    """What both routes take. Omitted (or null): temperature 0 (greedy, this server's default), top_p 1, one choice,
    a fresh random seed per request (as OpenAI does); a given seed reproduces, choice i using seed + i."""

    model: str = "personactl"
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stop: Annotated[Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None, BeforeValidator(_listed)] = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    persona: PersonaRequest | None = None

    @model_validator(mode="after")
    def _stream_options(self) -> GenerationRequest:
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError("stream_options", "stream_options is only allowed when stream is true")
        return self

    def stops(self) -> tuple[str, ...]:
        return tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(GenerationRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def top(self) -> int | None:
        """Alternatives per token when log-probabilities are wanted, None when they are not."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(GenerationRequest):
    prompt: Annotated[list[Text], BeforeValidator(_listed), Field(min_length=1)]  # one prompt, or several
    logprobs: int | None = Field(None, ge=0, le=20)
