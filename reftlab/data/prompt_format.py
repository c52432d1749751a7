"""How prompts were formatted in training, so analysis and generation can format them the same way.

A ``PromptFormat`` is the pair ``(chat_template, system_prompt)`` that ``build_dataset``,
``generate`` and recipes take: ``chat_template`` False (raw text), True (the tokenizer's
own chat template) or a Jinja template string; ``system_prompt`` an optional system
message (needs a chat template). Checkpoints record it as ``prompt_format``
(``{"chat_template": ..., "system_prompt": ...}``, or null when unknown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .encode import format_prompt


@dataclass(frozen=True, kw_only=True)
class PromptFormat:
    """``chat_template``: False, True or a Jinja string; ``system_prompt``: str or None.

    >>> from reftlab.models import tiny_tokenizer
    >>> PromptFormat(chat_template=True).render(tiny_tokenizer(), "Hi")
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """

    chat_template: bool | str = False
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.chat_template, (bool, str)) or self.chat_template == "":
            raise ValueError(
                f"prompt_format.chat_template={self.chat_template!r}: use False (raw text), "
                "True (the tokenizer's template) or a non-empty Jinja template string"
            )
        if self.system_prompt is not None:
            if not isinstance(self.system_prompt, str):
                raise ValueError(f"prompt_format.system_prompt={self.system_prompt!r} must be a string or None")
            if self.chat_template is False:
                raise ValueError("prompt_format.system_prompt needs chat_template (a system message is a chat turn)")

    @property
    def templated(self) -> bool:
        """Whether the rendered text already holds the special tokens (tokenize without adding any)."""
        return self.chat_template is not False

    def render(self, tokenizer: Any, prompt: str) -> str:
        """The text the model saw in training for ``prompt``."""
        return format_prompt(tokenizer, prompt, self.chat_template, self.system_prompt)

    def to_json(self) -> dict[str, Any]:
        return {"chat_template": self.chat_template, "system_prompt": self.system_prompt}

    @classmethod
    def from_json(cls, data: Any) -> "PromptFormat":
        if isinstance(data, PromptFormat):
            return data
        if not isinstance(data, Mapping) or set(data) != {"chat_template", "system_prompt"}:
            raise ValueError(
                f"prompt_format must be null or {{'chat_template': bool|str, 'system_prompt': str|null}}, got {data!r}"
            )
        return cls(chat_template=data["chat_template"], system_prompt=data["system_prompt"])
