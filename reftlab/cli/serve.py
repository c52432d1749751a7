"""``reftlab serve --model M --reft NAME=CHECKPOINT ...``: an OpenAI-compatible server for many ReFTs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from . import _positions

HELP = "serve a base model and named ReFT checkpoints over an OpenAI-compatible HTTP API (with a chat page)"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="base model: the embedded name, a local HF folder or a Hub id "
        "(default: the one the first --reft checkpoint records, else the embedded SmolLM2)",
    )
    p.add_argument(
        "--reft",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="a ReFT checkpoint folder served as model NAME (repeatable); each is checked against the base",
    )
    p.add_argument(
        "--positions",
        action="append",
        default=[],
        metavar="[NAME=]SPEC[,SPEC...]",
        help="positions the ReFTs edit (repeatable): SPEC for every ReFT, NAME=SPEC for one; a comma-separated "
        "list gives one spec per intervention in order (needed for checkpoints saved without positions, "
        "e.g. pyreft's)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-batch", type=int, default=16, help="most requests decoded together in one forward")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="load the base in this dtype")
    p.add_argument("--device", help="e.g. cuda, cuda:1 or cpu (default: where the model loads)")
    p.add_argument("--name", help="the base model's name in requests (default: the --model value's last part)")
    p.add_argument("--max-tokens", type=int, default=256, help="new tokens when a request gives no max_tokens")
    p.add_argument("--strict", action="store_true", help="refuse checkpoints whose base fingerprint differs")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument(
        "--engine",
        choices=["reftlab", "vllm"],
        default="reftlab",
        help="reftlab: transformers' forward in this process (default); vllm: vLLM's engine with reftlab's plugin "
        "(pip install reftlab[vllm]; docs/serving.md)",
    )
    p.add_argument("--no-prefix-caching", action="store_true", help="vllm: turn vLLM's prefix cache off")
    p.add_argument("--max-num-batched-tokens", type=int, help="vllm: tokens per forward (the prefill chunk)")
    p.add_argument("--max-model-len", type=int, help="vllm: the longest sequence (default: the model's)")


def parse_refts(specs: list[str], base_name: str) -> dict[str, str]:
    """``["emoji=runs/emoji", ...]`` -> ``{"emoji": "runs/emoji"}``, with names checked."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--reft {spec!r}: expected NAME=CHECKPOINT, e.g. --reft emoji=runs/emoji")
        if not _NAME.match(name):
            raise ValueError(f"--reft {spec!r}: the name may hold letters, digits, '.', '_', ':' and '-'")
        if name in out:
            raise ValueError(f"--reft {name!r} is given twice; give each ReFT its own name")
        if name == base_name:
            raise ValueError(f"--reft {name!r} has the base model's name; pick another name (or --name for the base)")
        out[name] = path
    return out


def parse_positions(values: list[str], names: list[str]) -> dict[str, list[str]]:
    """``["l1", "emoji=f1+l1,l1"]`` -> ``{name: [spec, ...]}`` for every ReFT named or covered."""
    out: dict[str, list[str]] = {}
    everyone: list[str] | None = None
    for value in values:
        name, sep, specs = value.rpartition("=")
        items = [x.strip() for x in specs.split(",")]
        if not all(items):
            raise ValueError(f"--positions {value!r}: expected [NAME=]SPEC[,SPEC...], e.g. --positions l1")
        if not sep:
            if everyone is not None:
                raise ValueError(f"--positions {value!r}: a spec for every ReFT is given twice")
            everyone = items
        elif name not in names:
            raise ValueError(f"--positions {value!r}: no ReFT named {name!r}; served ReFTs: {', '.join(names)}")
        elif name in out:
            raise ValueError(f"--positions for {name!r} is given twice")
        else:
            out[name] = items
    if everyone is not None:
        out = {n: out.get(n, everyone) for n in names}
    return out


def load(args: argparse.Namespace) -> tuple[Any, dict[str, Any], str]:
    """The base HookedModel, every ReFT on it (validated), and the base's served name.

    Without ``--model`` the base is the one the first checkpoint records (or the embedded
    SmolLM2 when no ReFT is given); every other checkpoint is checked against it.
    """
    import reftlab
    from reftlab.models.loading import EMBEDDED

    specs = parse_refts(args.reft, args.name or "")
    positions = parse_positions(args.positions, list(specs))
    refts: dict[str, Any] = {}
    if args.model is None and specs:
        name, path = next(iter(specs.items()))
        first = _load_reft(
            name, path, lambda p: reftlab.ReftModel.load(p, strict=args.strict, dtype=args.dtype, device=args.device)
        )
        hooked, refts[name] = first.hooked, first
    else:
        hooked = reftlab.load_model(args.model or EMBEDDED, dtype=args.dtype, device=args.device)
    source = getattr(hooked, "source", None)
    ref = str(args.model or (source.ref if source is not None and source.ref else EMBEDDED))
    base_name = args.name or Path(ref.rstrip("/")).name or ref
    parse_refts(args.reft, base_name)  # the names again, now that the base's name is known
    for name, path in specs.items():
        if name not in refts:
            refts[name] = _load_reft(name, path, lambda p: reftlab.ReftModel.load(p, hooked, strict=args.strict))
    for name, path in specs.items():
        refts[name] = _positions.apply(refts[name], positions.get(name), f"--reft {name}={path}")
    return hooked, refts, base_name


def _load_reft(name: str, path: str, loader: Any) -> Any:
    try:
        return loader(path).eval()
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError) as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise type(e)(f"--reft {name}={path}: {message}") from None


def run(args: argparse.Namespace) -> int:
    from ..serve.server import require_web_stack

    require_web_stack()
    from ..serve import Engine
    from ..serve.app import create_app
    from ..serve.server import run as run_server

    if args.max_batch < 1:
        raise ValueError(f"--max-batch {args.max_batch} must be >= 1")
    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens {args.max_tokens} must be >= 1")
    if args.engine == "vllm":
        return _run_vllm(args, create_app, run_server)
    hooked, refts, base_name = load(args)
    engine = Engine(hooked, refts, max_batch=args.max_batch)
    app = create_app(engine, model_name=base_name, default_max_tokens=args.max_tokens)
    given = parse_positions(args.positions, list(refts))
    names = ", ".join(f"{n} [{_positions.describe(r, n in given)}]" for n, r in refts.items()) or "none"
    print(f"reftlab serve: base {base_name!r}, ReFTs: {names}; http://{args.host}:{args.port} (chat page at /)")
    run_server(app, args.host, args.port, log_level=args.log_level)
    return 0


def _run_vllm(args: argparse.Namespace, create_app: Any, run_server: Any) -> int:
    """``--engine vllm``: the same endpoints over ``reftlab.serve.vllm.engine.VllmEngine``."""
    # options of reftlab's own engine that vLLM decides itself: refused, never silently ignored
    given = [flag for flag, on in (("--device", args.device is not None), ("--strict", args.strict)) if on]
    if given:
        raise ValueError(
            f"{' and '.join(given)}: not for --engine vllm (vLLM places the model itself, and each checkpoint's "
            "architecture, width, depth and vocabulary are always checked); leave it out"
        )
    try:
        import vllm  # noqa: F401

        from ..serve.vllm.engine import VllmEngine
    except ImportError:
        raise SystemExit("--engine vllm needs vLLM: pip install 'reftlab[vllm]' (docs/serving.md)") from None
    specs = parse_refts(args.reft, args.name or "")
    folder = vllm_base(args.model, specs)
    base_name = args.name or Path(str(args.model or folder).rstrip("/")).name
    parse_refts(args.reft, base_name)
    positions = parse_positions(args.positions, list(specs))
    engine = VllmEngine(
        folder,
        specs,
        positions,
        max_batch=args.max_batch,
        dtype=args.dtype or "float32",
        prefix_caching=not args.no_prefix_caching,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len,
    )
    app = create_app(engine, model_name=base_name, default_max_tokens=args.max_tokens)
    print(
        f"reftlab serve (vLLM): base {base_name!r}, ReFTs: {', '.join(specs) or 'none'}; http://{args.host}:{args.port}"
    )
    run_server(app, args.host, args.port, log_level=args.log_level)
    return 0


def vllm_base(model: str | None, specs: dict[str, str]) -> str:
    """What vLLM loads: a folder or Hub id; the embedded SmolLM2 as its cached HF folder; without
    ``--model`` the base the first checkpoint records."""
    from reftlab.io.checkpoint import is_native, read_native
    from reftlab.io.folder import resolve_source
    from reftlab.models.loading import EMBEDDED, embedded_model_path

    if model is None and specs:
        folder = resolve_source(next(iter(specs.values())))
        if is_native(folder):
            model = read_native(folder).identity.source
    if model is None or model == EMBEDDED:
        return str(embedded_model_path())
    return model
