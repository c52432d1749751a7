"""pyreft's task datasets on reftlab's encoding: supervised (Alpaca), generation,
preference, reward, and the raw instruction dataset.

Each takes pyreft's arguments, e.g. Alpaca's::

    ReftSupervisedDataset("alpaca", "alpaca_data.json", tokenizer, data_split="train",
                          input_field="input", instruction_field="instruction", output_field="output",
                          num_interventions=2, position="f1+l1", share_weights=False)

Prompt and response are tokenized separately (``reftlab.data.encode_pair``), so the
prompt's ids are exactly those generation sees, and ``last_position`` is the prompt's
length: ``l1`` is the last prompt token (pyreft's supervised and generation datasets put
it one token earlier). An example longer than the tokenizer's ``model_max_length`` has
its response cut (one warning counts them); a prompt that alone reaches the limit is an
error naming the example.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .build import TABLE_SUFFIXES
from .encode import IGNORE_INDEX, context_length, encode_pair
from .reft_dataset import ReftDataset, get_intervention_locations

_Labels = TypeVar("_Labels", list[int], None)  # fit() returns labels as it got them: a list, or None


def alpaca_prompt(instruction: str, context: str | None = None) -> str:
    r"""The Stanford Alpaca prompt format (with an input section when ``context`` is non-empty).

    >>> alpaca_prompt("Add 2 and 3.").endswith("### Instruction:\nAdd 2 and 3.\n\n### Response:\n")
    True
    """
    if context:
        return (
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            f"Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
            f"### Input:\n{context}\n\n### Response:\n"
        )
    return (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        f"request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    )


class _TaskDataset(ReftDataset):
    """Shared steps of reftlab's own ReftDataset subclasses (not exported)."""

    def field(self, item: dict[str, Any], name: str) -> Any:
        if item.get(name) is None:  # a datasets.Dataset fills a field some rows lack with None
            raise ValueError(
                f"{type(self).__name__}: example {self.current_index} has no field {name!r} (or it is null); its "
                f"fields are {sorted(k for k, v in item.items() if v is not None)}. Name the right one in the "
                "*_field= arguments, or drop the example"
            )
        return item[name]

    def limit(self) -> int | None:
        """Tokens an example may have: the tokenizer's limit, less the pad token ``pad_mode`` adds."""
        limit = context_length(self.tokenizer)
        return None if limit is None else limit - (1 if self.pad_mode in ("first", "last") else 0)

    def encode(self, prompt: str, response: str, *, nonstop: bool = False) -> tuple[dict[str, Tensor], int]:
        """``input_ids``/``labels``/``attention_mask`` of prompt + response (+ eos), and the prompt length."""
        index = self.current_index
        ex = encode_pair(self.tokenizer, prompt, response, index=index, nonstop=nonstop)
        ids, labels, n = list(ex["input_ids"]), list(ex["labels"]), ex["prompt_length"]
        ids, labels = self.fit(ids, n, labels)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": _ones(ids)}, n

    def encode_prompt(self, prompt: str) -> tuple[dict[str, Tensor], int]:
        ids = list(self.tokenizer(prompt)["input_ids"])
        if not ids:
            raise ValueError(f"example {self.current_index}: the prompt {prompt[:60]!r} tokenizes to nothing")
        ids, _ = self.fit(ids, len(ids), None)
        return {"input_ids": torch.tensor(ids), "attention_mask": _ones(ids)}, len(ids)

    def fit(self, ids: list[int], prompt_length: int, labels: _Labels) -> tuple[list[int], _Labels]:
        """Cut the response so ``ids`` fits ``limit()``; a prompt that alone does not fit is an error."""
        limit = self.limit()
        if limit is None or len(ids) <= limit:
            return ids, labels
        if prompt_length >= limit:
            raise ValueError(
                f"{type(self).__name__}: example {self.current_index}'s prompt is {prompt_length} tokens, "
                f"the tokenizer's model_max_length allows {limit}; raise model_max_length or drop the example"
            )
        self.n_truncated += 1
        return ids[:limit], labels if labels is None else labels[:limit]


class ReftSupervisedDataset(_TaskDataset):
    """Alpaca-style data: the prompt is the Alpaca format of ``instruction_field`` (and
    ``input_field`` when non-empty); the labels are ``output_field`` plus eos (none with ``no_stop``)."""

    pyreft_position_offset = 1  # pyreft passed the prompt length less one (pyreft_positions=True)

    def __init__(
        self,
        task: str | None,
        data_path: str | None,
        tokenizer: Any,
        data_split: str = "train",
        dataset: Any = None,
        seed: int = 42,
        max_n_example: int | None = None,
        no_stop: bool = False,
        **kwargs: Any,
    ) -> None:
        self.no_stop = no_stop
        super().__init__(task, data_path, tokenizer, data_split, dataset, seed, max_n_example, **kwargs)

    def preprocess(self, kwargs: dict[str, Any]) -> None:
        self.input_field = kwargs.get("input_field", "input")
        self.output_field = kwargs.get("output_field", "output")
        self.instruction_field = kwargs.get("instruction_field", "instruction")

    def tokenize(self, data_item: dict[str, Any]) -> tuple[dict[str, Any], int]:
        prompt = alpaca_prompt(self.field(data_item, self.instruction_field), data_item.get(self.input_field) or None)
        return self.encode(prompt, self.field(data_item, self.output_field), nonstop=self.no_stop)


class ReftGenerationDataset(_TaskDataset):
    """Prompt/completion data: the prompt is ``prompt_field`` as is, the labels ``completion_field`` plus eos."""

    pyreft_position_offset = 1  # pyreft passed the prompt length less one (pyreft_positions=True)

    def preprocess(self, kwargs: dict[str, Any]) -> None:
        self.prompt_field = kwargs.get("prompt_field", "prompt")
        self.completion_field = kwargs.get("completion_field", "completion")

    def tokenize(self, data_item: dict[str, Any]) -> tuple[dict[str, Any], int]:
        return self.encode(self.field(data_item, self.prompt_field), self.field(data_item, self.completion_field))


class ReftPreferenceDataset(_TaskDataset):
    """(prompt, chosen, rejected) data in pyreft's layout, also read by ``reftlab.ReftDPOTrainer``.

    Train split: ``input_ids`` = Alpaca prompt + rejected output + eos, ``labels`` = -100 on
    the prompt, then the chosen output + eos; both padded to one length (pad tokens with
    ``attention_mask`` 0, labels -100). pyreft's objective with ``ReftTrainer``: produce the
    chosen answer having read the rejected one. Other splits: the prompt only.
    """

    def preprocess(self, kwargs: dict[str, Any]) -> None:
        self.input_field = kwargs.get("input_field", "input")
        self.instruction_field = kwargs.get("instruction_field", "instruction")
        self.chosen_output_field = kwargs.get("chosen_output_field", "chosen_output")
        self.rejected_output_field = kwargs.get("rejected_output_field", "rejected_output")

    def tokenize(self, data_item: dict[str, Any]) -> tuple[dict[str, Any], int]:
        prompt = alpaca_prompt(self.field(data_item, self.instruction_field), data_item.get(self.input_field) or None)
        if self.data_split != "train":
            return self.encode_prompt(prompt)
        chosen, n = self.encode(prompt, self.field(data_item, self.chosen_output_field))
        rejected, _ = self.encode(prompt, self.field(data_item, self.rejected_output_field))
        width = max(len(chosen["input_ids"]), len(rejected["input_ids"]))
        ids = _right_pad(rejected["input_ids"], width, self._pad_id())
        mask = _right_pad(rejected["attention_mask"], width, 0)
        labels = _right_pad(chosen["labels"], width, IGNORE_INDEX)
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}, n


class ReftRewardDataset(_TaskDataset):
    """Pairs of conversations for reward modelling (pyreft's ``conv_A``/``conv_B`` fields).

    Each conversation is a list of chat messages rendered with the tokenizer's chat
    template (or a plain string; with ``prompt_field`` the fields hold the two answers to
    that prompt). With ``conv_A_reward_field``/``conv_B_reward_field`` the better-rated one
    becomes ``chosen_output``. The prompt, where positions go, is the conversation before
    its last assistant turn (as the template renders it for generation), cut to the tokens
    both conversations share.
    """

    def preprocess(self, kwargs: dict[str, Any]) -> None:
        for name in ("conv_A_field", "conv_B_field"):
            if name not in kwargs:
                raise ValueError(f"ReftRewardDataset needs {name}= (the column holding that conversation)")
        self.conv_A_field, self.conv_B_field = kwargs["conv_A_field"], kwargs["conv_B_field"]
        self.prompt_field = kwargs.get("prompt_field")
        self.conv_A_reward_field = kwargs.get("conv_A_reward_field")
        self.conv_B_reward_field = kwargs.get("conv_B_reward_field")
        if (self.conv_A_reward_field is None) != (self.conv_B_reward_field is None):
            raise ValueError("ReftRewardDataset: give both conv_A_reward_field= and conv_B_reward_field=, or neither")
        self.fields_to_pad = ["chosen_output", "rejected_output"]
        self.fields_to_mask = ["chosen_output", "rejected_output"]

    def tokenize(self, data_item: dict[str, Any]) -> tuple[dict[str, Any], int]:
        a, b = self.field(data_item, self.conv_A_field), self.field(data_item, self.conv_B_field)
        if self.prompt_field is not None:
            prompt = self.field(data_item, self.prompt_field)
            a = [{"role": "user", "content": prompt}, {"role": "assistant", "content": a}]
            b = [{"role": "user", "content": prompt}, {"role": "assistant", "content": b}]
        result: dict[str, Any] = {}
        if self.conv_A_reward_field is not None and self.conv_B_reward_field is not None:
            ra = float(self.field(data_item, self.conv_A_reward_field))
            rb = float(self.field(data_item, self.conv_B_reward_field))
            if ra < rb:
                a, b, ra, rb = b, a, rb, ra
            result["chosen_reward"], result["rejected_reward"] = ra, rb
        chosen, prompt_ids = self._conversation(a)
        rejected, _ = self._conversation(b)
        n = _common_prefix(chosen, rejected)
        if prompt_ids is not None:
            n = min(n, _common_prefix(prompt_ids, chosen))
        if n == 0:
            raise ValueError(
                f"ReftRewardDataset: example {self.current_index}'s two conversations share no leading "
                "token, so there is no prompt to intervene on; give both the same prompt"
            )
        chosen, _ = self.fit(chosen, n, None)
        rejected, _ = self.fit(rejected, n, None)
        for side, ids in (("chosen", chosen), ("rejected", rejected)):
            result[f"{side}_output"] = torch.tensor(ids)
            result[f"{side}_output_mask"] = _ones(ids)
        return result, n

    def _conversation(self, conv: Any) -> tuple[list[int], list[int] | None]:
        """Token ids of one conversation, and those of its prompt (before the last assistant turn)."""
        if isinstance(conv, str):
            return list(self.tokenizer(conv)["input_ids"]), None
        if not (isinstance(conv, list) and all(isinstance(m, dict) and "role" in m for m in conv)):
            raise ValueError(
                f"ReftRewardDataset: example {self.current_index}: a conversation must be a string or a "
                f"list of {{'role', 'content'}} messages, got {type(conv).__name__}"
            )
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("ReftRewardDataset renders conversations with the tokenizer's chat template; it has none")
        text = self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=False)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not (conv and conv[-1]["role"] == "assistant"):
            return ids, None
        head = self.tokenizer.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
        return ids, list(self.tokenizer(head, add_special_tokens=False)["input_ids"])


class ReftRawDataset(Dataset):
    """pyreft's raw instruction dataset: prompt = ``instruction``, response = ``output`` + eos
    (train split; other splits hold the prompt only). Fields are lists on the object
    (``input_ids``, ``attention_mask``, ``intervention_locations``, ``labels``, ``id``),
    in pyreft's layout (one leading pad token, masked)."""

    def __init__(
        self,
        task: str | None,
        data_path: str,
        tokenizer: Any,
        data_split: str = "train",
        dataset: Any = None,
        seed: int = 42,
        max_n_example: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        local = str(data_path).endswith(TABLE_SUFFIXES)
        # pyreft reads a local file, or the dataset *named by data_path* (task is unused)
        built = _RawInstructions(
            None if local else data_path,
            data_path if local else None,
            tokenizer,
            data_split,
            dataset,
            seed,
            max_n_example,
            owner=self,
            **kwargs,
        )
        self.raw_dataset = built.raw_dataset
        items = [built[i] for i in range(len(built))]
        self.input_ids = [x["input_ids"] for x in items]
        self.attention_mask = [x["attention_mask"] for x in items]
        self.intervention_locations = [x["intervention_locations"] for x in items]
        self.labels = [x["labels"] for x in items] if data_split == "train" else None
        self.subspaces = None
        self.id = [x["id"] for x in items]

    def get_intervention_locations(self, **kwargs: Any) -> list[list[int]]:
        return get_intervention_locations(**kwargs)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        out = {
            "input_ids": self.input_ids[i],
            "attention_mask": self.attention_mask[i],
            "intervention_locations": self.intervention_locations[i],
            "id": self.id[i],
        }
        if self.labels is not None:
            out["labels"] = self.labels[i]
        return out


class _RawInstructions(_TaskDataset):
    def __init__(self, *args: Any, owner: ReftRawDataset, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(*args, **kwargs)

    def get_intervention_locations(self, **kwargs: Any) -> list[list[int]]:
        return self.owner.get_intervention_locations(**kwargs)

    def tokenize(self, data_item: dict[str, Any]) -> tuple[dict[str, Any], int]:
        prompt = self.field(data_item, "instruction")
        if self.data_split != "train":
            return self.encode_prompt(prompt)
        return self.encode(prompt, self.field(data_item, "output"))


def _ones(ids: list[int]) -> Tensor:
    return torch.ones(len(ids), dtype=torch.long)


def _right_pad(t: Tensor, width: int, fill: int) -> Tensor:
    return torch.cat([t, torch.full((width - len(t),), fill, dtype=t.dtype)])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
