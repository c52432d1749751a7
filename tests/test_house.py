"""The house plan holds: each room imports only rooms on lower floors; plotly lives in viz/ alone.

The plan is drawn in CONTRIBUTING.md ("The house"); this table is the same picture. A new
room (a top-level module or subpackage of ``reftlab``) gets a floor here and a place there.
"""

import ast

import pytest
from helpers import REPO

# Floor by floor, bottom up: a room may import its own modules and rooms on lower floors.
FLOORS: dict[str, int] = {
    # ground: pure math and data, importing nothing of the package
    "interventions": 0,
    "sites": 0,
    "subspace": 0,
    "atomic": 0,
    "metrics": 0,
    "_version": 0,
    "_quiet": 0,  # log filters for torchao's start-up noise, imported first by __init__
    "mapping": 0,  # reading YAML/JSON config text and the one "unknown key" check
    # the base model's hook points (and where models are cached), configs
    "models": 1,
    "config": 1,
    # datasets (task files are cached beside the models); the only place hooks are installed
    "data": 2,
    "attach": 2,
    "inputs": 2,  # what a caller hands a ReftModel (pyreft's unit_locations, input_ids), checked
    # what works on a ReftLike: checkpoints, interference, generation, analysis
    "io": 3,
    "interference": 3,
    "generate": 3,
    "analysis": 3,
    # training (saves and resumes through io); pyreft's and pyvene's calls, a mixin the ReftModel inherits
    "train": 4,
    "pyreft_compat": 4,
    # the ReftModel itself (saves through io)
    "reft_model": 5,
    # what builds on ReftModel: composition, routing, evaluation, concept directions, figures and the dashboard
    "compose": 6,
    "routing": 6,
    "evaluate": 6,
    "concepts": 6,
    "das": 6,  # distributed alignment search: trains a rotation in a ReftModel
    "viz": 6,
    # recipes (train, evaluate, save), then the search over recipes; serving (routing behind HTTP)
    "recipe": 7,
    "serve": 7,
    "search": 8,
    # entry points: the command line, then the package's front door
    "cli": 9,
    "__main__": 10,
    "__init__": 10,
}
PLOTLY_ROOMS = {"viz"}


def rooms():
    for path in sorted((REPO / "reftlab").rglob("*.py")):
        rel = path.relative_to(REPO / "reftlab")
        yield rel.parts[0].removesuffix(".py"), path


def imported_rooms(path):
    """(room, line) of every reftlab room a module imports, at any depth (function bodies too)."""
    rel = path.relative_to(REPO).with_suffix("").parts  # ("reftlab", "io", "folder")
    package = rel[:-1]  # the package relative imports start from (for __init__ too)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = [*base, *(node.module.split(".") if node.module else [])]
            names = [target] if node.module or len(target) > 1 else [[*target, a.name] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reftlab":
            names = [node.module.split(".")]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names if a.name.split(".")[0] == "reftlab"]
        else:
            continue
        for t in names:
            if len(t) > 1:
                yield t[1], node.lineno


def test_every_room_is_on_the_plan():
    missing = sorted({room for room, _ in rooms()} - set(FLOORS))
    assert not missing, f"rooms {missing} have no floor: add them to FLOORS here and to CONTRIBUTING.md's picture"


@pytest.mark.parametrize("room_path", list(rooms()), ids=lambda rp: str(rp[1].relative_to(REPO)))
def test_imports_point_down(room_path):
    room, path = room_path
    up = [
        f"line {line}: {room} (floor {FLOORS[room]}) imports {target} (floor {FLOORS.get(target)})"
        for target, line in imported_rooms(path)
        if target != room and (target not in FLOORS or FLOORS[target] >= FLOORS.get(room, -1))
    ]
    assert not up, f"{path.relative_to(REPO)}: an import points sideways or up: " + "; ".join(up)


def test_only_viz_imports_plotly():
    offenders = []
    for room, path in rooms():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            mods += [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if room not in PLOTLY_ROOMS and any(m.split(".")[0] == "plotly" for m in mods):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"plotly is imported outside reftlab/viz/: {offenders}"


def private_imports(room: str, path):
    """(line, what) for every name a module takes from another room's private parts: a module or a
    name starting with one underscore (dunders and the private ground-floor rooms themselves aside)."""
    rel = path.relative_to(REPO).with_suffix("").parts
    package = rel[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            target = [*base, *(node.module.split(".") if node.module else [])]
        elif node.module and node.module.split(".")[0] == "reftlab":
            target = node.module.split(".")
        else:
            continue
        if len(target) < 2 or target[1] == room:
            continue
        inner = target[2:] + [a.name for a in node.names]
        hidden = [p for p in inner if p.startswith("_") and not p.startswith("__")]
        if hidden:
            yield node.lineno, f"{'.'.join(target)}: {hidden}"


@pytest.mark.parametrize("room_path", list(rooms()), ids=lambda rp: str(rp[1].relative_to(REPO)))
def test_no_room_imports_another_rooms_private_names(room_path):
    room, path = room_path
    found = [f"line {line}: {what}" for line, what in private_imports(room, path)]
    assert not found, (
        f"{path.relative_to(REPO)} imports private names of another room (make them public there): {found}"
    )


# Where hooks may be installed: the three context managers (the vLLM plugin's hooks vLLM's own
# model, per forward), and the hook points' own taps.
HOOK_HOMES = {
    "reftlab/attach.py",
    "reftlab/models/partial.py",
    "reftlab/serve/vllm/plugin.py",
    "reftlab/models/hooked.py",
}
HOOK_CALLS = ("register_forward_pre_hook", "register_forward_hook", "register_full_backward_hook", "add_hook")


def test_hooks_are_installed_only_by_attach_and_the_partial_forward():
    offenders = []
    for _, path in rooms():
        rel = str(path.relative_to(REPO))
        if rel in HOOK_HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in HOOK_CALLS:
                offenders.append(f"{rel}:{node.lineno} {node.attr}")
            is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if (
                is_call
                and node.func.attr in ("hooks", "run_with_hooks")
                and any(k.arg == "fwd_hooks" for k in node.keywords)
            ):
                offenders.append(f"{rel}:{node.lineno} {node.func.attr}(fwd_hooks=...)")
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and node.slice.value == "forward"
            ):
                offenders.append(f"{rel}:{node.lineno} __dict__['forward']")
    assert not offenders, f"hooks installed outside attach.py, models/partial.py and serve/vllm/plugin.py: {offenders}"


# peft's names and attributes, known in one place (reftlab/models/peft.py); io/lora.py calls peft's own API.
PEFT_HOME = "reftlab/models/peft.py"
PEFT_MARKS = ("base_layer", "base_model.model", "peft_config", "get_base_model")  # and "lora_" as a name test


def test_peft_knowledge_lives_in_models_peft():
    offenders = []
    for _, path in rooms():
        rel = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # docstrings name them freely
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and id(node) not in docs else None
            if isinstance(text, str) and rel != PEFT_HOME and (text == "lora_" or any(m in text for m in PEFT_MARKS)):
                offenders.append(f"{rel}:{node.lineno} {text!r}")
    assert not offenders, f"peft detection outside {PEFT_HOME} (use its functions): {offenders}"


def test_models_peft_imports_nothing_of_reftlab():
    path = REPO / PEFT_HOME
    assert not list(imported_rooms(path)), f"{PEFT_HOME} imports reftlab rooms: {list(imported_rooms(path))}"


# Rooms' modules that decide without tensors: they import no torch, transformers or jaxtyping, so
# they are tested without a model (the serving scheduler: queues, admission, who leaves, counters).
PURE_PYTHON = {"reftlab/serve/scheduler.py"}
TENSOR_LIBRARIES = {"torch", "transformers", "jaxtyping", "numpy"}


@pytest.mark.parametrize("rel", sorted(PURE_PYTHON))
def test_pure_python_modules_import_no_tensor_library(rel):
    tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        mods += [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        if isinstance(node, ast.ImportFrom) and node.level:
            found.append(f"line {node.lineno}: a relative import (of reftlab, which imports torch)")
        found += [f"line {node.lineno}: {m}" for m in mods if m.split(".")[0] in TENSOR_LIBRARIES | {"reftlab"}]
    assert not found, f"{rel} must stay plain Python: {found}"


# transformers' two names for the KV cache argument live in one helper (reftlab.models.cache).
CACHE_NAMES_HOME = "reftlab/models/cache.py"


def test_the_kv_cache_keyword_is_read_in_one_place():
    offenders = []
    for _, path in rooms():
        rel = str(path.relative_to(REPO))
        if rel == CACHE_NAMES_HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named = isinstance(node, ast.Constant) and node.value == "past_key_values"
            passed = isinstance(node, ast.keyword) and node.arg == "past_key_values"
            if named or passed:
                offenders.append(f"{rel}:{getattr(node, 'lineno', '?')}")
    assert not offenders, f"use reftlab.models.cache (cache_keyword, passed_cache) instead: {offenders}"
