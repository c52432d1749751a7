"""Held-out evaluation of a ReFT (or of the base model): one row per example, one score.

Over 400 lines for one reason: the three task paths (generation, classification, loss) share
the settings, the row table and the base comparison, and splitting them apart would pass those
by hand again (issue 23, item 5).

    result = reftlab.evaluate(reft_model, "test.jsonl", metric="exact_match", compare="base")
    result.table            # pandas: prompt, reference, prediction, score, base_prediction, base_score
    result.summary()        # {"metric": "exact_match", "score": 0.5, "n": 120, "trainable_params": 4612, ...}

What the model produces depends on the task (``reftlab.data.tasks``):

- ``generation`` / ``multiple_choice``: batched greedy generation
  (``reftlab.generate``) of each prompt, formatted as the model was trained (chat
  template or not); the metric compares the text with the example.
- ``classification``: one forward pass through the sequence-classification head,
  interventions at their sites; the prediction is the highest-scoring class name.
- metric ``loss``: the mean cross-entropy of each example's response tokens
  (teacher-forced), or for classification of its class; the score is the
  token-weighted mean, lower is better.

``score`` is the mean of the per-example scores (for ``loss``: token-weighted).
``compare`` runs the same data through other models ("base" = the same model with no
intervention attached, or another ReftModel) and adds their columns and scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .attach import attach
from .data.collate import ReftDataCollator
from .data.encode import IGNORE_INDEX, context_length
from .data.tasks import DEFAULT_METRIC, TASKS, check_task, collate_classification, encode_task_examples, read_examples
from .generate import generate
from .metrics import Metric, get_metric
from .models.hooked import HookedModel
from .train.loss import batch_positions


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """How a model is scored held out: what ``evaluate``, ``reftlab.search``'s trials and a recipe share.

    >>> EvalSettings(task="generation", max_new_tokens=8).scorer().name
    'exact_match'
    >>> EvalSettings(batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: EvalSettings.batch_size=0 must be an int >= 1
    """

    metric: "str | Metric | Callable[[str, Mapping[str, Any]], float] | None" = field(
        default=None,
        metadata={"help": "a registered name (reftlab.metrics.METRICS), a Metric or a callable; None: by task"},
    )
    task: str | None = field(
        default=None,
        metadata={"help": f"one of {', '.join(TASKS)}; None: inferred from the model and the data"},
    )
    labels: Sequence[str] | None = field(
        default=None, metadata={"help": "classification: the class names, in head order (reading a file)"}
    )
    chat_template: bool | str | None = field(
        default=None,
        metadata={"help": "True, False or a Jinja template; None: the model's recorded prompt format, else none"},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "a system message (with a chat template)"})
    max_new_tokens: int = field(default=32, metadata={"help": "tokens generated per prompt (greedy)"})
    batch_size: int = field(default=16, metadata={"help": "examples per forward or generation batch"})

    def __post_init__(self) -> None:
        if self.task is not None:
            check_task(self.task)
        if self.metric is not None:
            get_metric(self.metric)  # an unknown name or a wrong type fails here, naming the options
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if self.chat_template is not None and not isinstance(self.chat_template, (bool, str)):
            raise ValueError(
                f"EvalSettings.chat_template={self.chat_template!r} must be True, False, a template string or None"
            )
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ValueError(f"EvalSettings.system_prompt={self.system_prompt!r} must be a string or None")
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EvalSettings.{name}={value!r} must be an int >= 1")

    def replace(self, **changes: Any) -> "EvalSettings":
        """A copy with ``changes`` (checked again)."""
        return replace(self, **changes)

    def scorer(self) -> Metric:
        """The metric, or the task's default one (``reftlab.data.tasks.DEFAULT_METRIC``); needs a task then."""
        if self.metric is None and self.task is None:
            raise ValueError("EvalSettings needs a task or a metric to choose the metric")
        return get_metric(self.metric or DEFAULT_METRIC[str(self.task)])


@dataclass(frozen=True)
class Evaluation:
    """The outcome of ``evaluate``: ``table`` has one row per example."""

    metric: str
    score: float
    n: int
    trainable_params: int
    higher_is_better: bool
    task: str
    table: Any = field(repr=False)
    compared: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON line ``reftlab eval`` prints last."""
        out: dict[str, Any] = {
            "metric": self.metric,
            "score": round(self.score, 6),
            "n": self.n,
            "trainable_params": self.trainable_params,
        }
        if self.compared:
            out["compare"] = {k: round(v, 6) for k, v in self.compared.items()}
        return out


def evaluate(
    model: Any,
    data: Any,
    *,
    settings: EvalSettings | None = None,
    metric: "str | Metric | Callable[[str, Mapping[str, Any]], float] | None" = None,
    task: str | None = None,
    labels: Sequence[str] | None = None,
    chat_template: bool | str | None = None,
    system_prompt: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    compare: Any = None,
    progress: bool = False,
    positions: Any = None,
) -> Evaluation:
    """Score ``model`` (a ReftModel, or a HookedModel for the bare base) on ``data``.

    ``data``: a .jsonl/.json/.csv path, a DataFrame or a list of example dicts
    (``reftlab.data.tasks.read_examples``). ``settings``: an ``EvalSettings`` holding the
    keywords from ``metric`` to ``batch_size`` (a keyword given as well replaces its field;
    ``max_new_tokens`` 32 and ``batch_size`` 16 by default). ``task``: generation, multiple_choice or
    classification (default: classification for a sequence-classification model,
    multiple_choice when the data have ``choices``, else generation). ``metric``: a
    registered name (``reftlab.metrics.METRICS``), a ``Metric``, or a callable
    ``(prediction, example) -> float``; default exact_match / accuracy by task.
    ``chat_template``/``system_prompt``: None takes the model's recorded prompt format
    (``prompt_format`` of a loaded checkpoint), else no template. ``compare``: ``"base"``,
    a ReftModel, or a dict ``{name: model}`` scored on the same examples. ``positions``: what
    ``model``'s interventions edit (``ReftModel.with_positions``: a spec such as ``"l1"``, one
    per intervention, or a dict by key); needed for a checkpoint saved without positions
    (pyreft's way), default each site's own.
    """
    if positions is not None:
        if isinstance(model, HookedModel):
            raise ValueError("positions= applies to a ReftModel's interventions; the bare base model has none")
        model = model.with_positions(positions)
    if not isinstance(model, HookedModel):
        for site in model.sites:
            _site_positions(site)  # a site saved without positions fails here, before any work
    given = {
        "metric": metric,
        "task": task,
        "labels": labels,
        "chat_template": chat_template,
        "system_prompt": system_prompt,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
    }
    s = _resolved(
        model, data, (settings or EvalSettings()).replace(**{k: v for k, v in given.items() if v is not None})
    )
    examples = data if _normalized(data) else read_examples(data, str(s.task), labels=s.labels)
    if not examples:
        raise ValueError("no examples to evaluate")
    scorer = s.scorer()
    models = {"": model, **_compared(model, compare)}
    import pandas as pd

    table = pd.DataFrame(
        {
            "prompt": [ex["prompt"] for ex in examples],
            "reference": [ex["response"] for ex in examples],
        }
    )
    scores: dict[str, float] = {}
    for name, m in models.items():
        with _eval_mode(m):
            predictions, per, total = _run(m, examples, s, scorer, progress)
        prefix = f"{name}_" if name else ""
        table[f"{prefix}prediction"] = predictions
        table[f"{prefix}score"] = per
        scores[name] = total
    return Evaluation(
        metric=scorer.name,
        score=scores[""],
        n=len(examples),
        trainable_params=trainable_parameters(model),
        higher_is_better=scorer.higher_is_better,
        task=str(s.task),
        table=table,
        compared={k: v for k, v in scores.items() if k},
    )


def trainable_parameters(model: Any) -> int:
    """Intervention parameters plus base-model parameters that train with them (a classifier head, LoRA)."""
    if isinstance(model, HookedModel):
        return 0
    head = sum(p.numel() for p in model.model.parameters() if p.requires_grad)
    return int(model.num_intervention_parameters() + head)


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Interventions in eval mode (no dropout) for the duration; their flag restored after."""
    if isinstance(model, HookedModel):
        yield
        return
    was = model.interventions.training
    model.interventions.eval()
    try:
        yield
    finally:
        model.interventions.train(was)


def _normalized(data: Any) -> bool:
    keys = {"prompt", "response", "choices", "answer"}
    return isinstance(data, list) and bool(data) and all(isinstance(x, Mapping) and keys <= set(x) for x in data)


def _is_classifier(model: Any) -> bool:
    hooked = model if isinstance(model, HookedModel) else model.hooked
    return type(hooked.hf_model).__name__.endswith("ForSequenceClassification")


def _infer_task(model: Any, data: Any) -> str:
    if _is_classifier(model):
        return "classification"
    if _normalized(data):
        return "multiple_choice" if data[0].get("choices") is not None else "generation"
    import pandas as pd

    from .data.tasks import as_frame

    frame = as_frame(data)
    return "multiple_choice" if isinstance(frame, pd.DataFrame) and "choices" in frame.columns else "generation"


def _resolved(model: Any, data: Any, s: EvalSettings) -> EvalSettings:
    """``s`` with a task (inferred if unset) and the prompt format (the model's recorded one if unset)."""
    s = s.replace(task=s.task or _infer_task(model, data))
    if s.chat_template is not None:
        return s
    recorded = getattr(model, "prompt_format", None)  # a loaded checkpoint's record (None if unknown)
    if isinstance(recorded, Mapping):
        return s.replace(
            chat_template=recorded.get("chat_template", False), system_prompt=recorded.get("system_prompt")
        )
    if recorded is not None:
        return s.replace(chat_template=recorded.chat_template, system_prompt=recorded.system_prompt)
    return s.replace(chat_template=False)


def _compared(model: Any, compare: Any) -> dict[str, Any]:
    if compare is None:
        return {}
    items = compare if isinstance(compare, Mapping) else {_name_of(compare): compare}
    out = {}
    for name, other in items.items():
        if other == "base":
            other = model if isinstance(model, HookedModel) else model.hooked
        if not name or not isinstance(name, str):
            raise ValueError(f"compare names must be non-empty strings, got {name!r}")
        out[name] = other
    return out


def _name_of(other: Any) -> str:
    return "base" if isinstance(other, (str, HookedModel)) else "other"


def _run(
    model: Any, examples: Sequence[Mapping[str, Any]], s: EvalSettings, scorer: Metric, progress: bool
) -> tuple[list[Any], list[float], float]:
    """(predictions, per-example scores, overall score) of one model; ``s`` is resolved (``_resolved``)."""
    task, batch_size = str(s.task), s.batch_size
    if scorer.needs == "loss" and task == "classification":
        predictions, losses = _classify(model, examples, s)
        return predictions, losses, sum(losses) / len(losses)
    if scorer.needs == "loss":
        losses, counts = _losses(model, examples, s)
        total = sum(loss * n for loss, n in zip(losses, counts)) / max(1, sum(counts))
        return [None] * len(examples), losses, total
    if task == "classification":
        predictions, _ = _classify(model, examples, s)
    else:
        from .data.tasks import model_prompt

        prompts = [model_prompt(ex, task) for ex in examples]
        predictions = []
        for lo in tqdm(range(0, len(prompts), batch_size), desc="eval", disable=not progress, leave=False):
            out = generate(
                model,
                prompts[lo : lo + batch_size],
                chat_template=s.chat_template,
                system_prompt=s.system_prompt,
                max_new_tokens=s.max_new_tokens,
            )
            predictions += out.texts
    per = [float(scorer.score(p, ex)) for p, ex in zip(predictions, examples)]
    finite = [s for s in per if not math.isnan(s)]
    return predictions, per, (sum(finite) / len(finite) if finite else float("nan"))


def _rows(model: Any, examples: Sequence[Mapping[str, Any]], s: EvalSettings) -> list[dict]:
    hooked = model if isinstance(model, HookedModel) else model.hooked
    n = 1 if isinstance(model, HookedModel) else len(model.interventions)
    positions = "l1" if isinstance(model, HookedModel) else [_site_positions(s) for s in model.sites]
    if not isinstance(positions, str) and len(set(map(str, positions))) == 1:
        positions = positions[0]
    return encode_task_examples(
        hooked.tokenizer,
        examples,
        str(s.task),
        positions=positions,
        num_interventions=n,
        chat_template=s.chat_template,
        system_prompt=s.system_prompt,
        max_length=context_length(hooked.tokenizer, hooked),
    )


def _site_positions(site: Any) -> Any:
    if site.positions is None:
        raise ValueError(
            f"the intervention at {site.hook} has no positions of its own (a checkpoint saved pyreft's way "
            "records none); pass positions= to evaluate (reftlab eval --positions), e.g. 'l1'"
        )
    return site.positions


def _pad_id(hooked: HookedModel) -> int:
    tok = hooked.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return int(pad) if pad is not None else 0


@torch.no_grad()
def _classify(model: Any, examples: Sequence[Mapping[str, Any]], s: EvalSettings) -> tuple[list[str], list[float]]:
    """Per example: the highest-scoring class name, and the cross-entropy of the right class."""
    hooked = model if isinstance(model, HookedModel) else model.hooked
    rows, batch_size = _rows(model, examples, s), s.batch_size
    names = list(examples[0]["choices"])
    out, losses = [], []
    for lo in range(0, len(rows), batch_size):
        batch = collate_classification(rows[lo : lo + batch_size], _pad_id(hooked))
        batch = {k: v.to(hooked.device) for k, v in batch.items()}
        logits = _forward(model, batch).logits.float()  # [batch, classes]
        if logits.shape[-1] != len(names):
            raise ValueError(f"the classifier has {logits.shape[-1]} classes, the data name {len(names)}: {names}")
        out += [names[i] for i in logits.argmax(-1).tolist()]
        losses += F.cross_entropy(logits, batch["labels"], reduction="none").tolist()
    return out, losses


def _forward(model: Any, batch: Mapping[str, torch.Tensor]) -> Any:
    hooked = model if isinstance(model, HookedModel) else model.hooked
    if isinstance(model, HookedModel):
        return hooked.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    positions = batch_positions(batch, len(model.interventions))
    bindings = model.bindings(positions, batch["attention_mask"], batch.get("prompt_lengths"))
    with attach(hooked, bindings):
        return hooked.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


@torch.no_grad()
def _losses(model: Any, examples: Sequence[Mapping[str, Any]], s: EvalSettings) -> tuple[list[float], list[int]]:
    """Per example: mean CE over its response tokens, and how many there are."""
    hooked = model if isinstance(model, HookedModel) else model.hooked
    rows, batch_size = _rows(model, examples, s), s.batch_size
    collate = ReftDataCollator(pad_token_id=_pad_id(hooked))
    losses, counts = [], []
    for lo in range(0, len(rows), batch_size):
        batch = {k: v.to(hooked.device) for k, v in collate(rows[lo : lo + batch_size]).items()}
        logits = _forward(model, batch).logits[:, :-1].float()  # [batch, pos-1, vocab]
        targets = batch["labels"][:, 1:]
        ce = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        scored = (targets != IGNORE_INDEX).sum(dim=1)
        losses += (ce.sum(dim=1) / scored.clamp(min=1)).tolist()
        counts += scored.tolist()
    return losses, counts
