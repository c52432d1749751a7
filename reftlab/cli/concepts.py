"""``reftlab concepts fit TRAIN [--eval EVAL] --layer L --methods ... -o OUT/``: the AxBench protocol.

Writes into OUT: ``directions/`` (safetensors + JSON; ``reftlab.concepts.load_directions``),
``results.csv`` (concept, method, auroc, auroc_hard, ...), ``scores.csv``, ``decoded.csv``,
``steering.csv`` and ``generations.csv`` (unless ``--no-steer``) and ``report.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "detect and steer concepts with DiffMean, probes, PCA and rank-1 ReFTs (AxBench's protocol)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fit", help="fit concept directions, score detection and steering, write a report")
    f.add_argument("train", help="concept data: .csv/.jsonl/.json/.parquet, AxBench's columns or text,concept,label")
    f.add_argument("--eval", help="held-out concept data (default: a held-out split of TRAIN)")
    f.add_argument(
        "--model",
        help="base model: the embedded name, a local HF folder or a Hub id "
        "(default: the one the first --reft checkpoint records, else the embedded SmolLM2)",
    )
    f.add_argument("--layer", type=int, help="block index of the site")
    f.add_argument("--component", default="block_output", help="site component (default: block_output)")
    f.add_argument("--hook", help="a hook name instead of --layer/--component")
    f.add_argument("--methods", default="diffmean,probe,pca,reft_r1", help="comma-separated methods")
    f.add_argument(
        "--reft",
        action="append",
        default=[],
        help="a trained ReFT checkpoint whose subspace at the site is read too (repeatable)",
    )
    f.add_argument("--pooling", default="max", choices=["max", "mean", "last"], help="token pooling (default: max)")
    f.add_argument("--context", action="store_true", help="read each text after its instruction (chat template)")
    f.add_argument("--held-out", type=float, default=0.3, help="held-out share of TRAIN without --eval (default 0.3)")
    f.add_argument("--batch-size", type=int, default=16, help="texts per forward pass")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--probe-l1", type=float, default=0.0, help="L1 penalty of the probe")
    f.add_argument("--r1-epochs", type=int, default=3, help="ReFT-r1 epochs (default 3)")
    f.add_argument("--r1-max-steps", type=int, help="stop ReFT-r1 training after this many steps per concept")
    f.add_argument("--no-steer", action="store_true", help="detection only")
    f.add_argument("--alphas", default="0.1,0.25,0.5,0.75,1", help="steering factors, x the site's median token norm")
    f.add_argument("--steer-positions", default="both", choices=["prompt", "generation", "both"])
    f.add_argument("--steer-methods", help="methods that steer (default: all)")
    f.add_argument(
        "--steer-prompts", help="instructions for steering: .txt (one per line) or .jsonl/.json/.csv with 'prompt'"
    )
    f.add_argument("--n-prompts", type=int, default=8, help="instructions used (half choose alpha, half report it)")
    f.add_argument("--max-new-tokens", type=int, default=32)
    f.add_argument("--no-progress", action="store_true", help="hide progress bars")
    f.add_argument("-o", "--output", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..concepts import ConceptConfig, ProbeConfig, ReftR1Config, SteerConfig, fit_concepts, read_concepts
    from ..viz import write_concept_report

    progress = not args.no_progress
    steer = None
    if not args.no_steer:
        steer = SteerConfig(
            alphas=_floats(args.alphas, "--alphas"),
            positions=args.steer_positions,
            max_new_tokens=args.max_new_tokens,
            n_prompts=args.n_prompts,
            methods=_names(args.steer_methods) if args.steer_methods else None,
        )
    config = ConceptConfig(
        layer=args.layer,
        component=args.component,
        hook=args.hook,
        methods=_names(args.methods),
        pooling=args.pooling,
        context=args.context,
        held_out=args.held_out,
        batch_size=args.batch_size,
        seed=args.seed,
        probe=ProbeConfig(l1=args.probe_l1),
        reft_r1=ReftR1Config(epochs=args.r1_epochs, max_steps=args.r1_max_steps, progress=progress),
        steer=steer,
    )
    train = read_concepts(args.train)  # bad data files fail before the model loads
    evals = read_concepts(args.eval) if args.eval else None
    prompts = _prompts(args.steer_prompts) if args.steer_prompts else None
    hooked = _model(args.model, args.reft)
    subspaces = _subspaces(args.reft, hooked, config.site_hook)
    result = fit_concepts(
        hooked, train, eval=evals, config=config, subspaces=subspaces, steer_prompts=prompts, progress=progress
    )
    out = Path(args.output)
    result.save(out, model=hooked)
    write_concept_report(result, out / "report.html")
    print(result.results[["concept", "method", "auroc", "auroc_hard"]].to_string(index=False))
    print(f"wrote {out}/ (directions/, results.csv, {'steering.csv, ' if steer else ''}report.html)")
    return 0


def _model(name: str | None, checkpoints: list[str]):
    """``--model``; without it the base the first ``--reft`` checkpoint records, else the embedded model."""
    from ..models import load_model
    from ..reft_model import ReftModel

    if name is not None:
        return load_model(name)
    if checkpoints:
        return ReftModel.load(checkpoints[0]).hooked
    return load_model()


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise ValueError(f"expected a comma-separated list of names, got {text!r}")
    return names


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in _names(text))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected comma-separated numbers such as 0.25,0.5,1,2") from None


def _prompts(path: str) -> list[str]:
    from ..analysis import read_prompts

    return list(read_prompts(path).prompts)


def _subspaces(checkpoints: list[str], hooked, hook: str) -> dict:
    from ..reft_model import ReftModel

    out = {}
    for ckpt in checkpoints:
        reft = ReftModel.load(ckpt, hooked)
        keys = [k for k, site in zip(reft.interventions, reft.sites) if site.hook == hook]
        if not keys:
            hooks = sorted({s.hook for s in reft.sites})
            raise ValueError(f"--reft {ckpt}: no intervention at the site {hook}; its sites are {hooks}")
        for k in keys:
            name = Path(ckpt).name if len(keys) == 1 else f"{Path(ckpt).name}:{k}"
            out[name] = reft.interventions[k].subspace().detach()
    return out
