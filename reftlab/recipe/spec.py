"""The recipe file: one frozen dataclass per section, checked before any model is loaded
(the format is in ``reftlab.recipe``'s docstring)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ReftConfig
from ..data.bigbench import BigBenchSource
from ..mapping import check_keys, load_mapping
from ..train.config import TrainConfig
from .search import SearchSettings

if TYPE_CHECKING:  # evaluate imports the generation and training stack; eval_settings imports it when called
    from ..evaluate import EvalSettings

METRICS: dict[str, Callable[[str], float]] = {}


def _metrics() -> dict[str, Callable[[str], float]]:
    from ..metrics import emoji_fraction

    return {"emoji_fraction": emoji_fraction, **METRICS}


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    path: str | None = field(
        default=None,
        metadata={"help": "a .jsonl, .json or .csv file of examples (relative to the YAML file)"},
    )
    bigbench: BigBenchSource | None = field(
        default=None,
        metadata={"help": "instead of path: {task, subtasks, seed, start, stop}, a BIG-bench task read offline"},
    )
    prompt_column: str = field(default="prompt", metadata={"help": "column holding the prompts"})
    response_column: str = field(default="response", metadata={"help": "column holding the responses"})
    chat_template: bool = field(
        default=False, metadata={"help": "render prompts as a user turn of the tokenizer's chat template"}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "an optional system message (needs chat_template)"}
    )
    nonstop: bool = field(default=False, metadata={"help": "do not append the eos token to responses"})
    choices_column: str = field(default="choices", metadata={"help": "multiple choice: the list of choices"})
    answer_column: str = field(default="answer", metadata={"help": "multiple choice: the right choice (index or text)"})
    label_column: str = field(default="label", metadata={"help": "classification: the class (index or name)"})
    labels: Sequence[str] | None = field(
        default=None, metadata={"help": "classification: the class names, in head order (default: sorted labels)"}
    )

    def __post_init__(self) -> None:
        if (self.path is None) == (self.bigbench is None):
            raise ValueError("data needs exactly one source: 'path' (a file) or 'bigbench' ({task: ..., ...})")
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ValueError(f"data.path={self.path!r} must be a file name (relative to the YAML file)")
        for name in ("prompt_column", "response_column", "choices_column", "answer_column", "label_column"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"data.{name}={getattr(self, name)!r} must be a column name (a string)")
        ct = self.chat_template
        if not isinstance(ct, bool) and not (isinstance(ct, str) and ("{{" in ct or "{%" in ct)):
            raise ValueError(
                f"data.chat_template={ct!r} must be true (the tokenizer's template), false, or a Jinja template string"
            )
        if self.system_prompt is not None and (not isinstance(self.system_prompt, str) or ct is False):
            raise ValueError("data.system_prompt must be a string and needs data.chat_template (it is a chat message)")
        if not isinstance(self.nonstop, bool):
            raise ValueError(f"data.nonstop={self.nonstop!r} must be true or false")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))

    @classmethod
    def from_mapping(cls, raw: Any, base_dir: str | os.PathLike, where: str = "data") -> "DataSpec":
        raw = raw if isinstance(raw, Mapping) else {"path": raw}
        check_keys(raw, cls, where)
        raw = dict(raw)
        if raw.get("path") is not None:
            if not isinstance(raw["path"], str) or not raw["path"]:
                raise ValueError(f"{where}.path={raw['path']!r} must be a file name (relative to the YAML file)")
            path = Path(raw["path"])
            raw["path"] = str(path if path.is_absolute() else Path(base_dir) / path)
        if raw.get("bigbench") is not None:
            if not isinstance(raw["bigbench"], Mapping):
                raise ValueError(f"{where}.bigbench must be a mapping such as {{task: arithmetic}}")
            raw["bigbench"] = BigBenchSource.from_mapping(raw["bigbench"])
        return cls(**raw)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["bigbench"] = None if self.bigbench is None else self.bigbench.to_json()
        out["labels"] = None if self.labels is None else list(self.labels)
        return {k: v for k, v in out.items() if v is not None}

    def examples(self, task: str) -> list[dict[str, Any]]:
        """The examples of this source for ``task`` (``reftlab.data.tasks``)."""
        from ..data.tasks import read_examples

        if self.bigbench is not None:
            return self.bigbench.examples(task)
        return read_examples(
            self.path,
            task,
            prompt_column=self.prompt_column,
            response_column=self.response_column,
            choices_column=self.choices_column,
            answer_column=self.answer_column,
            label_column=self.label_column,
            labels=self.labels,
        )

    def describe(self) -> str:
        if self.bigbench is not None:
            b = self.bigbench
            return f"BIG-bench {b.task}{'/' + ','.join(b.subtasks) if b.subtasks else ''} [{b.start}:{b.stop}]"
        return str(self.path)


@dataclass(frozen=True, kw_only=True)
class EvaluationSpec:
    data: DataSpec | None = field(
        default=None,
        metadata={"help": "held-out examples (path or bigbench, as in data; other keys default to data's)"},
    )
    metric: str | None = field(
        default=None, metadata={"help": "exact_match, accuracy, contains, emoji_fraction or loss (default by task)"}
    )
    held_out: float = field(
        default=0.2, metadata={"help": "without evaluation data, reftlab search holds out this fraction of data"}
    )
    max_new_tokens: int = field(default=16, metadata={"help": "tokens generated per held-out prompt (greedy)"})
    batch_size: int = field(default=16, metadata={"help": "prompts per generation batch"})

    def __post_init__(self) -> None:
        from ..metrics import METRICS

        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"evaluation.metric={self.metric!r} is unknown; known: {', '.join(sorted(METRICS))}")
        if not 0 < self.held_out < 1:
            raise ValueError(f"evaluation.held_out={self.held_out!r} must be in (0, 1)")
        for name in ("max_new_tokens", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"evaluation.{name}={getattr(self, name)!r} must be an int >= 1")


@dataclass(frozen=True, kw_only=True)
class GenerationSpec:
    prompts: Sequence[str] = field(default=(), metadata={"help": "held-out prompts answered before and after training"})
    max_new_tokens: int = field(default=32, metadata={"help": "tokens generated per prompt (greedy)"})
    metrics: Sequence[str] = field(
        default=(), metadata={"help": "text metrics printed per answer, e.g. emoji_fraction"}
    )

    def __post_init__(self) -> None:
        for name in ("prompts", "metrics"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"generation.{name}={getattr(self, name)!r} must be a list")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if not all(isinstance(p, str) and p for p in self.prompts):
            raise ValueError("generation.prompts must be non-empty strings")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens={self.max_new_tokens!r} must be an int >= 1")
        unknown = [m for m in self.metrics if m not in _metrics()]
        if unknown:
            raise ValueError(f"generation.metrics: unknown {unknown}; known: {sorted(_metrics())}")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "'smollm2-135m-instruct', a local HF folder, or a Hub id ('org/name')"},
    )
    revision: str | None = field(default=None, metadata={"help": "a Hub branch, tag or commit hash (Hub ids only)"})
    dtype: str = field(
        default="float32", metadata={"help": "float32, bfloat16, float16, or auto (the checkpoint's own dtype)"}
    )
    device: str | None = field(
        default=None,
        metadata={
            "help": "where the model runs: 'cpu', 'cuda', 'cuda:1'; default: this process's GPU when CUDA is "
            "present (cuda:LOCAL_RANK under torchrun), else the CPU"
        },
    )
    device_map: str | None = field(
        default=None,
        metadata={"help": "'auto' shards the model over the GPUs, offloading what does not fit (instead of device)"},
    )
    quantization: str | None = field(
        default=None, metadata={"help": "load the frozen base quantized: nf4, fp4, int8 (CUDA) or torchao-int8"}
    )
    task: str = field(
        default="generation", metadata={"help": "generation, multiple_choice or classification (reftlab.data.tasks)"}
    )
    data: DataSpec = field(metadata={"help": "the training data (see DataSpec)"})
    interventions: ReftConfig = field(
        metadata={"help": "list of representations: layer/component or hook, positions, kind, rank"}
    )
    training: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "TrainConfig fields"})
    generation: GenerationSpec = field(
        default_factory=GenerationSpec, metadata={"help": "held-out prompts and metrics"}
    )
    evaluation: EvaluationSpec = field(
        default_factory=EvaluationSpec, metadata={"help": "held-out data and metric (see EvaluationSpec)"}
    )
    search: SearchSettings = field(
        default_factory=SearchSettings, metadata={"help": "settings and space for `reftlab search` (reftlab.search)"}
    )
    output_dir: str = field(default="reft-output", metadata={"help": "where the trained interventions are written"})

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model={self.model!r} must be a model name, a folder or a Hub id")
        if self.revision is not None and not isinstance(self.revision, str):
            raise ValueError(f"revision={self.revision!r} must be a string (a branch, tag or commit hash)")
        from ..data.tasks import check_task
        from ..models.loading import parse_dtype
        from ..models.quantize import NAMES

        if self.device is not None and self.device_map is not None:
            raise ValueError("give device (where the model runs) or device_map (how to split it), not both")
        for name in ("device", "device_map"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a string (e.g. 'cuda', 'auto')")
        if self.device is not None:
            import torch

            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"device={self.device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'") from None
        if self.quantization is not None and self.quantization not in NAMES:
            raise ValueError(f"quantization={self.quantization!r} must be one of {', '.join(NAMES)}")
        if self.quantization is not None and self.task == "classification":
            raise ValueError("quantization applies to generation and multiple-choice recipes (causal LMs) here")
        check_task(self.task)
        if self.task == "classification" and self.generation.prompts:
            raise ValueError("generation.prompts are for generation tasks; a classification recipe has none")
        if isinstance(self.search, Mapping):  # a plain dict given to the constructor: the same checks as a file's
            object.__setattr__(self, "search", SearchSettings.from_mapping(self.search))
        elif not isinstance(self.search, SearchSettings):
            raise ValueError(f"search must be a mapping or SearchSettings, got {type(self.search).__name__}")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"output_dir={self.output_dir!r} must be a non-empty string")
        parse_dtype(self.dtype)  # so does a bad dtype
        for i, rep in enumerate(self.interventions.representations):
            if rep.site.positions is None:
                raise ValueError(
                    f"interventions[{i}] needs 'positions' (e.g. 'l1' or 'f1+l1'): the data are located with them"
                )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> "Recipe":
        if not isinstance(data, Mapping):
            raise ValueError(f"a recipe must be a mapping of sections, got {type(data).__name__}")
        check_keys(data, cls, "the recipe")
        if "data" not in data or "interventions" not in data:
            raise ValueError("the recipe needs a 'data' section (path: ...) and an 'interventions' list")
        spec = DataSpec.from_mapping(data["data"], base_dir)
        gen = data.get("generation") or {}
        check_keys(gen, GenerationSpec, "generation")
        evaluation = dict(data.get("evaluation") or {})
        check_keys(evaluation, EvaluationSpec, "evaluation")
        if evaluation.get("data") is not None:
            own = evaluation["data"] if isinstance(evaluation["data"], Mapping) else {"path": evaluation["data"]}
            inherited = {k: v for k, v in spec.to_json().items() if k not in ("path", "bigbench")}
            evaluation["data"] = DataSpec.from_mapping({**inherited, **own}, base_dir, "evaluation.data")
        plain = ("model", "revision", "dtype", "device", "device_map", "quantization", "output_dir", "task")
        kwargs: dict[str, Any] = {k: data[k] for k in plain if k in data}
        return cls(
            data=spec,
            interventions=ReftConfig(representations=data["interventions"]),
            training=TrainConfig.from_mapping(data.get("training") or {}, "training"),
            generation=GenerationSpec(**gen),
            evaluation=EvaluationSpec(**evaluation),
            search=SearchSettings.from_mapping(data.get("search")),
            **kwargs,
        )

    def eval_settings(self) -> EvalSettings:
        """How the recipe scores held-out data: its task, evaluation metric and sizes, its data's prompt format."""
        from ..evaluate import EvalSettings

        return EvalSettings(
            task=self.task,
            metric=self.evaluation.metric,
            labels=self.data.labels,
            chat_template=self.data.chat_template,
            system_prompt=self.data.system_prompt,
            max_new_tokens=self.evaluation.max_new_tokens,
            batch_size=self.evaluation.batch_size,
        )

    def to_mapping(self) -> dict[str, Any]:
        """The recipe as plain data (``from_mapping`` reads it back; paths are absolute)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        out["interventions"] = [r.to_json() for r in self.interventions.representations]
        out["search"] = self.search.to_mapping()
        return {k: v for k, v in out.items() if v not in (None, {}, [])} | {"interventions": out["interventions"]}

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Recipe":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no recipe file at {path}")
        return cls.from_mapping(load_mapping(path.read_text(), path), base_dir=path.parent)


def _plain(value: Any) -> Any:
    """Dataclasses -> dicts (None fields dropped), tuples -> lists, recursively: YAML-safe data."""
    from dataclasses import is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_json") and not isinstance(value, (DataSpec, EvaluationSpec, GenerationSpec)):
            return _plain(value.to_json())
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if getattr(value, f.name) is not None}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
