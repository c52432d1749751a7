"""The concept pipeline: fit every method on every concept, detect, steer, write the results.

    run = reftlab.concepts.fit_concepts(model, "train.csv", eval="eval.csv",
                                        config=ConceptConfig(layer=9, methods=("diffmean", "probe")))
    run.results                          # concept, method, auroc, auroc_hard, ...
    run.save("out/")                     # directions/, results.csv, steering.csv, scores.csv

Steps (progress bars on each): encode the training and evaluation texts; capture their token
states at the site in one forward pass per batch, cut after the site (``states.capture``); fit
each method per concept on the training states; score the evaluation texts (AUROC per concept
and method, ``detect.detection_table``); with steering on, sweep the factor on instruction
prompts and score the answers (``sweep.steering_sweep``). Without ``eval``, a held-out split
of the training data (``held_out`` of every concept and label) is the evaluation set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analysis.decode import direction_logits, top_and_bottom
from ..atomic import write_text
from ..models.hooked import HasHooked, HookedModel, hooked_of
from ..sites import COMPONENTS, Site
from .data import ConceptData, read_concepts
from .detect import detection_table, roc_curve
from .direction import ConceptDirection, save_directions
from .methods import METHODS, FitInput, ProbeConfig, ReftR1Config, fit_subspace
from .states import POOLINGS, Pooling, States, capture, encode
from .steer import Judge, SteerConfig
from .sweep import pick_judge, steering_sweep


@dataclass(frozen=True, kw_only=True)
class ConceptConfig:
    """Where to read concepts, with which methods, and how to score them."""

    layer: int | None = None  # block index of the site (with ``component``), or give ``hook``
    component: str = "block_output"  # pyreft component name (see reftlab.COMPONENTS)
    hook: str | None = None  # a hook name instead of layer/component, e.g. "blocks.9.hook_resid_post"
    methods: tuple[str, ...] = ("diffmean", "probe", "pca", "reft_r1")
    pooling: Pooling = "max"  # how a text's token projections become its score
    context: bool = False  # read each text after its prompt (chat template), scoring only the text's tokens
    held_out: float = 0.3  # evaluation share of the training data when no evaluation data is given
    batch_size: int = 16  # texts per forward pass
    seed: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    reft_r1: ReftR1Config = field(default_factory=ReftR1Config)
    steer: SteerConfig | None = field(default_factory=SteerConfig)  # None: detection only

    def __post_init__(self) -> None:
        if self.hook is None:
            if not isinstance(self.layer, int) or self.layer < 0:
                raise ValueError(f"ConceptConfig needs layer=<block index> (or hook=...); got layer={self.layer!r}")
            if self.component not in COMPONENTS:
                raise ValueError(f"ConceptConfig.component={self.component!r}; valid: {', '.join(COMPONENTS)}")
        methods = tuple(self.methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"ConceptConfig.methods: unknown {unknown or methods!r}; valid: {', '.join(METHODS)}")
        object.__setattr__(self, "methods", tuple(dict.fromkeys(methods)))
        if self.pooling not in POOLINGS:
            raise ValueError(f"ConceptConfig.pooling={self.pooling!r} must be one of {list(POOLINGS)}")
        if not 0.0 < self.held_out < 1.0:
            raise ValueError(f"ConceptConfig.held_out={self.held_out!r} must be in (0, 1)")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"ConceptConfig.batch_size={self.batch_size!r} must be a positive int")

    @property
    def site_hook(self) -> str:
        return self.hook if self.hook is not None else f"blocks.{self.layer}.{COMPONENTS[self.component]}"


@dataclass(frozen=True, eq=False)
class ConceptRun:
    """Everything a run produced; ``save(folder)`` writes it (the report is ``reftlab.viz``'s)."""

    config: ConceptConfig
    directions: list[ConceptDirection]
    results: pd.DataFrame  # concept, method, auroc, auroc_hard, n_positive, n_negative, n_hard
    scores: pd.DataFrame  # concept, method, row, label, score (every evaluation text)
    steering: pd.DataFrame | None  # concept, method, judge, alpha, split, n, proxies..., selected
    generations: pd.DataFrame | None  # every steered answer
    decoded: pd.DataFrame  # concept, method, side, rank, token_id, token, logit (through the unembedding)
    eval_data: ConceptData
    model_name: str = ""

    def roc(self, concept: str, method: str, against: str = "negative") -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, tpr)`` of ``method`` on ``concept``, positives against ``against`` texts."""
        s = self.scores[(self.scores.concept == concept) & (self.scores.method == method)]
        fpr, tpr, _ = roc_curve(s[s.label == "positive"].score, s[s.label == against].score)
        return fpr, tpr

    def save(self, folder: str | os.PathLike, *, model: HookedModel | HasHooked | None = None) -> Path:
        """Write ``directions/`` (safetensors + JSON), ``results.csv``, ``scores.csv``, ``decoded.csv``
        and, with steering, ``steering.csv`` and ``generations.csv`` into ``folder``; each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_directions(self.directions, folder / "directions", model=model)
        tables = {"results.csv": self.results, "scores.csv": self.scores, "decoded.csv": self.decoded}
        if self.steering is not None and self.generations is not None:
            tables.update({"steering.csv": self.steering, "generations.csv": self.generations})
        for name, table in tables.items():
            write_csv(table, folder / name)
        return folder


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """``table`` to ``path`` through a temporary file and a rename."""
    write_text(path, table.to_csv(index=False))


def fit_concepts(
    model: HookedModel | HasHooked,
    train: Any,
    *,
    eval: Any = None,
    config: ConceptConfig,
    subspaces: Mapping[str, Any] | None = None,
    steer_prompts: Sequence[str] | None = None,
    progress: bool = True,
) -> ConceptRun:
    """Run the pipeline (see the module docstring) on ``model`` (a HookedModel or ReftModel).

    ``train``/``eval``: anything ``read_concepts`` reads. ``subspaces``: extra named subspaces
    (``[r, d_model]`` tensors or interventions, e.g. a trained LoReFT's) read as ``subspace:NAME``.
    ``steer_prompts``: instructions for steering (default: the evaluation data's prompts).
    """
    hooked = hooked_of(model)
    hook = config.site_hook
    hooked.hook_point(hook)  # a clear error for a bad site, before any work
    train_data = read_concepts(train)
    if eval is None:
        train_data, eval_data = train_data.split(config.held_out, seed=config.seed)
    else:
        eval_data = read_concepts(eval)
    concepts = train_data.concepts
    if not concepts:
        raise ValueError(f"{train_data.source}: no concept has positive rows")
    train_data.check_trainable(concepts)
    tok = hooked.tokenizer
    kw: dict[str, Any] = {"batch_size": config.batch_size, "progress": progress}
    train_states = capture(
        hooked,
        encode(tok, train_data.texts, train_data.prompts, context=config.context),
        hook,
        desc="train states",
        **kw,
    )
    eval_states = capture(
        hooked, encode(tok, eval_data.texts, eval_data.prompts, context=config.context), hook, desc="eval states", **kw
    )
    scale = train_states.median_norm()

    directions = fit_all(hooked, hook, train_data, train_states, concepts, config, scale, subspaces, progress)
    results, scores = detection_table(directions, eval_states, eval_data, pooling=config.pooling)
    steering = generations = None
    if config.steer is not None:
        prompts = (
            list(steer_prompts)
            if steer_prompts is not None
            else default_prompts(eval_data, config.steer.n_prompts, config.seed)
        )
        judges = make_judges(directions, scores, config.steer)
        steering, generations = steering_sweep(
            hooked,
            directions,
            judges,
            prompts,
            config.steer,
            pooling=config.pooling,
            context=config.context,
            batch_size=config.batch_size,
            progress=progress,
        )
    name = str(getattr(hooked.hf_model.config, "_name_or_path", "") or hooked.cfg["model_type"])
    decoded = decode_directions(hooked, directions)
    return ConceptRun(config, directions, results, scores, steering, generations, decoded, eval_data, name)


def decode_directions(hooked: HookedModel, directions: Sequence[ConceptDirection], k: int = 10) -> pd.DataFrame:
    """The ``k`` tokens each reading direction promotes ("top") and suppresses ("bottom") through the
    final norm and the unembedding (``reftlab.analysis.direction_logits``)."""
    logits = direction_logits(hooked, torch.stack([d.reading for d in directions]))  # [n, vocab]
    rows = []
    for d, row in zip(directions, logits):
        rows += [{"concept": d.concept, "method": d.method, **r} for r in top_and_bottom(hooked.tokenizer, row, k)]
    return pd.DataFrame(rows)


def fit_all(
    hooked: HookedModel,
    hook: str,
    data: ConceptData,
    states: States,
    concepts: Sequence[str],
    config: ConceptConfig,
    scale: float,
    subspaces: Mapping[str, Any] | None,
    progress: bool,
) -> list[ConceptDirection]:
    """One direction per concept and method (and per given subspace)."""
    options = {"probe": config.probe, "reft_r1": config.reft_r1}
    out = []
    jobs = [(c, m) for c in concepts for m in config.methods] + [
        (c, f"subspace:{n}") for c in concepts for n in subspaces or {}
    ]
    for concept, method in tqdm(jobs, desc="fit", disable=not progress):
        pos, neg = data.rows(concept, "positive"), data.rows(concept, "negative")
        inp = FitInput(
            concept=concept,
            hook=hook,
            positive=states.of(pos),
            negative=states.of(neg),
            hooked=hooked,
            pairs_positive=[(data.prompts[i], data.texts[i]) for i in pos],
            pairs_negative=[(data.prompts[i], data.texts[i]) for i in neg],
            seed=config.seed,
        )
        if method.startswith("subspace:"):
            name = method.split(":", 1)[1]
            fitted = fit_subspace(inp, subspaces[name], name)  # type: ignore[index]
        else:
            fitted = METHODS[method](inp, options.get(method))
        out.append(
            ConceptDirection(
                concept=concept,
                method=method,
                site=Site(hook=hook),
                reading=fitted.reading,
                basis=fitted.basis,
                scale=scale,
                metadata=fitted.metadata,
            )
        )
    return out


def make_judges(
    directions: Sequence[ConceptDirection], scores: pd.DataFrame, config: SteerConfig
) -> dict[tuple[str, str], Judge]:
    """For every steering direction, a different method's direction of its concept, calibrated on held-out scores."""
    judges: dict[tuple[str, str], Judge] = {}
    made: dict[int, Judge] = {}
    for d in directions:
        if config.methods is not None and d.method not in config.methods:
            continue
        j = pick_judge(directions, d.concept, d.method)
        if id(j) not in made:
            s = scores[(scores.concept == j.concept) & (scores.method == j.method)]
            pos, neg = s[s.label == "positive"].score, s[s.label == "negative"].score
            if not len(pos) or not len(neg):
                raise ValueError(f"the judge {j.name!r} has no held-out positive or negative texts to calibrate on")
            made[id(j)] = Judge(j, float(pos.mean()), float(neg.mean()))
        judges[(d.concept, d.method)] = made[id(j)]
    return judges


def default_prompts(data: ConceptData, n: int, seed: int) -> list[str]:
    """``n`` distinct non-empty prompts of ``data``, drawn with ``seed``."""
    unique = [p for p in dict.fromkeys(data.prompts) if p.strip()]
    if len(unique) < 2:
        raise ValueError(
            f"{data.source}: steering needs instruction prompts and the data has {len(unique)}; "
            "add an 'input' (AxBench) or 'prompt' column, pass steer_prompts / --steer-prompts, or turn steering off"
        )
    rng = np.random.default_rng(seed)
    return [unique[i] for i in rng.permutation(len(unique))[:n]]
