"""pyreft's ``ReftDataset``: a torch Dataset built by overridable steps, with reftlab's positions.

    class MyTask(reftlab.ReftDataset):
        def preprocess(self, kwargs): self.text_field = kwargs["text_field"]
        def tokenize(self, item):                       # -> (fields, prompt length)
            ids = self.tokenizer(item[self.text_field], return_tensors="pt")["input_ids"][0]
            return {"input_ids": ids, "labels": ids.clone()}, len(ids)

    ds = MyTask("my_task", "data.jsonl", tokenizer, position="f1+l1", num_interventions=2, text_field="text")

The constructor runs pyreft's steps in pyreft's order, and a subclass written for pyreft
overrides the same ones: ``preprocess(kwargs)`` (read fields from kwargs, set
``pad_mode``/``fields_to_pad``/``fields_to_mask``), ``load_dataset()`` (sets
``raw_dataset``), ``postprocess(kwargs)`` (sees ``task_dataset``), then per example
``tokenize(item) -> (result, last_position)`` and ``compute_intervention_and_subspaces``,
which calls ``get_intervention_locations``. Examples are dicts of tensors with
``intervention_locations`` ``[num_interventions][n]`` and ``id``.

``last_position`` is what pyreft's location code reads: the number of leading tokens
the positions may touch (the prompt). Differences from pyreft 0.1.0, all deliberate:

- positions follow ``reftlab.resolve_positions``: ``f3+l3`` on a 5-token prompt is
  ``[0, 1, 2, 2, 3, 4]`` (pyreft caps each side at half the prompt), and a slot a short
  prompt cannot fill is -1, skipped by every reftlab path (pyreft pointed it at a pad
  token or, with ``pad_mode="last"``, at ``last_position``, the first response token);
- ``pad_mode="first"`` still prepends one pad token (the layout pyreft's evaluation
  code expects) with ``attention_mask`` 0 and label -100; ``"last"`` appends one; any
  other value adds none. The added token always has ``attention_mask`` 0; inside the
  tokenized span, a mask the tokenizer returned (``attention_mask`` or ``<field>_mask``,
  as reftlab's datasets do) is kept, else pyreft's rule applies (pad-id tokens masked);
- ``subspaces`` are refused (reftlab's interventions act on their whole subspace).

``pyreft_positions=True`` (a keyword of every dataset here) is the compatibility switch: the
locations are pyreft 0.1.0's, bugs included (each side capped at half the prompt, empty slots
on the pad token, and for ``ReftSupervisedDataset`` / ``ReftGenerationDataset`` every position
one token early, as pyreft passed them the prompt length less one). It exists to compare
training with pyreft's step for step (``benchmarks/pyreft_parity.py``); reftlab's own
positions are the default.
"""

from __future__ import annotations

import abc
import copy
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..sites import Positions
from .build import TABLE_SUFFIXES, read_table
from .encode import IGNORE_INDEX, locations_for


def parse_positions(positions: str) -> tuple[int, int]:
    """pyreft's ``(first_n, last_n)`` for a position spec.

    >>> parse_positions("f3+l3"), parse_positions("l1"), parse_positions("f2")
    ((3, 3), (0, 1), (2, 0))
    """
    spec = Positions.parse(positions)
    if spec.all:
        raise ValueError("positions='all' has no (first_n, last_n) form; use reftlab.Positions.parse('all')")
    return spec.first, spec.last


def get_intervention_locations(
    *,
    last_position: int,
    num_interventions: int,
    positions: str | Positions | None = None,
    first_n: int | None = None,
    last_n: int | None = None,
    share_weights: bool = False,
    pad_mode: str = "first",
    **_other: Any,
) -> list[list[int]]:
    """pyreft's location function: ``[num_interventions][n]`` positions among the first
    ``last_position`` tokens, -1 for a slot the prompt cannot fill.

    ``positions`` (e.g. ``"f1+l1"``) wins over ``first_n``/``last_n``. With
    ``share_weights=False`` and both counts, the first half of the interventions gets the
    first positions, the second half the last ones. ``pad_mode`` is accepted for pyreft's
    callers; empty slots are -1 in every mode. Other keywords (pyreft passes a dataset's
    whole kwargs) are ignored.

    >>> get_intervention_locations(last_position=5, positions="f1+l1", num_interventions=2)
    [[0], [4]]
    >>> get_intervention_locations(last_position=2, first_n=3, last_n=0, num_interventions=1)
    [[0, 1, -1]]
    """
    if positions is not None:
        spec = Positions.parse(positions)
    else:
        spec = Positions(first=int(first_n or 0), last=int(last_n or 0))
    if not isinstance(last_position, int) or last_position < 1:
        raise ValueError(f"last_position={last_position!r}: the prompt must have at least one token to intervene on")
    return locations_for(last_position, spec, num_interventions, share_weights)


def load_task_dataset(task: str | None, data_path: str | None, data_split: str, dataset: Any = None) -> Any:
    """The raw examples as a ``datasets.Dataset``, as pyreft's ``load_dataset`` finds them.

    ``dataset`` (a ``datasets.Dataset``, a pandas DataFrame or a list of dicts) wins; a
    ``data_path`` ending in .json/.jsonl/.csv/.parquet is read locally (any split);
    otherwise ``datasets.load_dataset(task, data_path, split=data_split)`` (a Hub id or
    a local dataset folder, through the datasets cache).
    """
    import datasets
    import pandas as pd

    if dataset is not None:
        if isinstance(dataset, datasets.Dataset):
            return dataset
        if isinstance(dataset, pd.DataFrame):
            return datasets.Dataset.from_pandas(dataset, preserve_index=False)
        if isinstance(dataset, list) and all(isinstance(x, dict) for x in dataset):
            return datasets.Dataset.from_list(dataset)
        if isinstance(dataset, datasets.DatasetDict):
            raise TypeError(
                f"dataset= is a DatasetDict with splits {list(dataset)}; pass one split, e.g. dataset['train']"
            )
        raise TypeError(
            f"dataset= must be a datasets.Dataset, a pandas DataFrame or a list of dicts, got {type(dataset).__name__}"
        )
    if isinstance(data_path, (str, os.PathLike)) and str(data_path).endswith(TABLE_SUFFIXES):
        frame = read_table(data_path)
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    if task is None and data_path is None:
        raise ValueError("no data: give data_path (a local file), a task (a dataset id) or dataset=")
    name = task if task is not None else data_path
    config = data_path if task is not None else None
    return _load_hub(str(name), None if config is None else str(config), data_split)


def _load_hub(name: str, config: str | None, split: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except (FileNotFoundError, ConnectionError) as e:
        what = f"{name!r}" + (f" (config {config!r})" if config else "")
        local = Path(name).exists()
        raise FileNotFoundError(
            f"dataset {what}, split {split!r}, "
            + (
                "could not be read from that local folder"
                if local
                else "is not in the datasets cache and the Hub is unreachable"
            )
            + f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Pass a local "
            ".json/.jsonl/.csv/.parquet file as data_path or a datasets.Dataset as dataset=, or load it once with "
            "network access (it is then read from the cache, also with HF_DATASETS_OFFLINE=1)"
        ) from None


class ReftDataset(Dataset, abc.ABC):
    """pyreft's dataset base class (see the module docstring); subclasses implement ``tokenize``."""

    def __init__(
        self,
        task: str | None,
        data_path: str | None,
        tokenizer: Any,
        data_split: str = "train",
        dataset: Any = None,
        seed: int = 42,
        max_n_example: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if "position" not in kwargs:
            raise ValueError(f"{type(self).__name__} needs position= (e.g. 'f1+l1', 'l1', 'f3+l3' or 'all')")
        if "num_interventions" not in kwargs:
            raise ValueError(f"{type(self).__name__} needs num_interventions= (the ReftConfig's representation count)")
        self.tokenizer = tokenizer
        self.positions = Positions.parse(kwargs["position"])
        self.first_n, self.last_n = (0, 0) if self.positions.all else (self.positions.first, self.positions.last)
        self.task, self.data_path, self.data_split = task, data_path, data_split
        self.dataset, self.seed, self.max_n_example = dataset, seed, max_n_example
        self.pyreft_positions = bool(kwargs.get("pyreft_positions", False))
        self.pad_mode = "first"
        self.fields_to_pad = ["input_ids", "labels"]
        self.fields_to_mask = ["input_ids"]
        self.current_index = 0
        self.n_truncated = 0  # examples whose response was cut to fit the context (the tokenizers count)

        self.preprocess(kwargs)
        self.task_dataset = self.load_dataset()
        self.postprocess(kwargs)

        self.result: list[dict[str, Any]] = []
        items = tqdm(
            self.task_dataset, desc=f"{type(self).__name__} ({data_split})", disable=len(self.task_dataset) < 1000
        )
        for i, data_item in enumerate(items):
            self.current_index = i  # for error messages raised while tokenizing
            tokenized, last_position = self.tokenize(data_item)
            self.result.append(
                self.compute_intervention_and_subspaces(i, data_item, tokenized, last_position, **kwargs)
            )
        if not self.result:
            raise ValueError(f"{type(self).__name__}: the {data_split!r} data has no examples")
        if self.n_truncated:
            warnings.warn(
                f"{type(self).__name__}: {self.n_truncated} of {len(self.result)} examples were longer than the "
                f"tokenizer's model_max_length ({self.tokenizer.model_max_length}); their responses were cut to fit",
                stacklevel=2,
            )

    @abc.abstractmethod
    def tokenize(self, data_item: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """``(fields, last_position)`` for one raw example: tensors such as ``input_ids`` and
        ``labels``, and the number of leading (prompt) tokens positions may touch."""

    def preprocess(self, kwargs: dict[str, Any]) -> None:
        """Read task options from the constructor's kwargs (runs before loading)."""

    def postprocess(self, kwargs: dict[str, Any]) -> None:
        """Adjust ``self.task_dataset`` after loading."""

    def __len__(self) -> int:
        return len(self.result)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return copy.deepcopy(self.result[i])  # collators may edit examples in place

    def load_dataset(self) -> Any:
        """Load the raw examples (``load_task_dataset``), keep ``max_n_example`` of them
        (shuffled with ``seed``), and set ``raw_dataset`` for non-train splits."""
        task_dataset = load_task_dataset(self.task, self.data_path, self.data_split, self.dataset)
        if self.max_n_example is not None:
            n = min(int(self.max_n_example), len(task_dataset))
            task_dataset = task_dataset.shuffle(seed=self.seed).select(range(n))
        self.raw_dataset = task_dataset if self.data_split != "train" else None
        return task_dataset

    def get_intervention_locations(self, **kwargs: Any) -> list[list[int]]:
        return get_intervention_locations(**kwargs)

    # How many tokens before the prompt's end pyreft's ``last_position`` was for this dataset
    # (``pyreft_positions=True``): 1 where pyreft passed the prompt length less one.
    pyreft_position_offset = 0

    def compute_intervention_and_subspaces(
        self, id: int, data_item: dict[str, Any], result: dict[str, Any], last_position: int, **kwargs: Any
    ) -> dict[str, Any]:
        """Add ``intervention_locations``, ``id``, the pad token of ``pad_mode`` and the masks."""
        if "subspaces" in data_item:
            raise ValueError(
                f"example {id} has 'subspaces'; reftlab's interventions act on their whole subspace. "
                "Drop the column (or train one intervention per subspace)"
            )
        options = {
            k: v
            for k, v in kwargs.items()
            if k not in ("last_position", "first_n", "last_n", "pad_mode", "pyreft_positions")
        }
        if self.positions.all:
            options["positions"] = "all"
        try:
            if self.pyreft_positions:
                locations = pyreft_locations(
                    int(last_position) - self.pyreft_position_offset,
                    self.first_n,
                    self.last_n,
                    int(kwargs["num_interventions"]),
                    bool(kwargs.get("share_weights", False)),
                    self.pad_mode,
                )
            else:
                locations = self.get_intervention_locations(
                    last_position=int(last_position),
                    first_n=self.first_n,
                    last_n=self.last_n,
                    pad_mode=self.pad_mode,
                    **options,
                )
        except ValueError as e:
            raise ValueError(f"example {id}: {e}") from None
        real = {f: len(result[f]) for f in self.fields_to_mask if f in result}
        shift = 0
        if self.pad_mode in ("first", "last"):
            shift = 1 if self.pad_mode == "first" else 0
            for field in self.fields_to_pad:
                if field in result:
                    result[field] = self._pad_one(result[field], field, before=self.pad_mode == "first")
        for field, n in real.items():
            name = "attention_mask" if len(self.fields_to_mask) == 1 else f"{field}_mask"
            result[name] = self._mask(result, field, name, n, shift)
        if self.pyreft_positions:  # pyreft shifted its pad slots (-1) too: onto the leading pad token
            result["intervention_locations"] = [[x + shift for x in row] for row in locations]
        else:
            result["intervention_locations"] = [[x + shift if x >= 0 else -1 for x in row] for row in locations]
        result["id"] = id
        return result

    def _pad_one(self, value: Any, field: str, *, before: bool) -> Any:
        tensor = torch.as_tensor(value)
        if tensor.ndim != 1:
            return value  # a class label: nothing to pad
        if field == "labels":
            fill = IGNORE_INDEX
        else:
            fill = self._pad_id()
        pad = torch.tensor([fill], dtype=tensor.dtype)
        return torch.cat((pad, tensor) if before else (tensor, pad))

    def _mask(self, result: dict[str, Any], field: str, name: str, n: int, shift: int) -> Tensor:
        ids = torch.as_tensor(result[field])
        mask = torch.zeros(len(ids), dtype=torch.long)
        if name in result:  # the tokenizer gave one for its own tokens: place it
            own = torch.as_tensor(result[name], dtype=torch.long)
            mask[shift : shift + len(own)] = own
        elif self.tokenizer.pad_token_id is not None:
            # pyreft's rule for tokens a subclass padded itself, inside the tokenized span only
            mask[shift : shift + n] = (ids[shift : shift + n] != self.tokenizer.pad_token_id).long()
        else:
            mask[shift : shift + n] = 1
        return mask

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ValueError(
                f"{type(self).__name__} with pad_mode={self.pad_mode!r} adds a pad token, but the tokenizer has none; "
                "set tokenizer.pad_token (pyreft's scripts use tokenizer.unk_token or eos_token)"
            )
        return int(pad)


def pyreft_locations(
    last_position: int, first_n: int, last_n: int, num_interventions: int, share_weights: bool, pad_mode: str
) -> list[list[int]]:
    """pyreft 0.1.0's ``get_intervention_locations``, its rules restated (the compatibility switch).

    Each side is capped at ``last_position // 2``; a slot the cap leaves empty points at -1
    (``pad_mode="first"``, the leading pad token once shifted) or at ``last_position``; with
    both sides and ``share_weights=False`` the first half of the interventions gets the first
    positions and the second half the last ones, the shorter list padded the same way.

    >>> pyreft_locations(5, 3, 3, 1, True, "first")
    [[0, 1, 3, 4, -1, -1]]
    >>> pyreft_locations(6, 1, 1, 2, False, "last")
    [[0], [5]]
    """
    first, last = min(last_position // 2, first_n), min(last_position // 2, last_n)
    pad = -1 if pad_mode == "first" else last_position
    head = list(range(first))
    tail = list(range(last_position - last, last_position))
    if share_weights or first == 0 or last == 0:
        return [head + tail + [pad] * (first_n - first + last_n - last)] * num_interventions
    head += [pad] * (first_n - first)
    tail += [pad] * (last_n - last)
    width = max(len(head), len(tail))
    head, tail = head + [pad] * (width - len(head)), tail + [pad] * (width - len(tail))
    return [head] * (num_interventions // 2) + [tail] * (num_interventions // 2)
