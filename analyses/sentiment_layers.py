"""At which layer does a rank-1 LoReFT learn a sentiment direction most cleanly, and how
does it align with the mean-difference direction?

For each layer L of a sweep, a rank-1 LoReFT on the residual stream after block L, at the
last prompt token, is trained to answer "Review: <sentence>\nColour:" with " blue" for a
positive review and " green" for a negative one. The labels carry no sentiment of their own
(the untouched model is near chance), so the intervention has to read sentiment off the
residual stream (its read vector w) and write a label along its direction r. Sentences are
built here from templates; the nouns of the held-out sentences never occur in training.
Per layer we report

- held-out accuracy (which label logit wins), next to the untouched model's;
- separation d' = |mean_pos - mean_neg| / pooled std of the held-out projections on the
  learned direction r, before the edit (does r already carry sentiment?) and after it
  (what the intervention writes there: w.h + b);
- the principal angles between the mean-difference direction mean(h|pos) - mean(h|neg) at
  that site (training prompts) and r, and w.

Outputs (under --out): results.json, per-layer CSV, and report.html (one offline file with
the figures). The training loop is written out here on purpose (explicit, top to bottom).

    python analyses/sentiment_layers.py                 # embedded SmolLM2, ~5 min on 2 CPU cores
    python analyses/sentiment_layers.py --quick         # tiny random model, seconds (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

import reftlab
from reftlab.analysis import compare, mean_difference_direction, principal_angles, project
from reftlab.viz import angle_heatmap, page_html, projection_shift, write_page

POSITIVE = [
    "wonderful",
    "delightful",
    "excellent",
    "brilliant",
    "lovely",
    "fantastic",
    "superb",
    "charming",
    "moving",
    "gorgeous",
]
NEGATIVE = [
    "awful",
    "terrible",
    "dreadful",
    "boring",
    "horrible",
    "disappointing",
    "miserable",
    "tedious",
    "clumsy",
    "ugly",
]
NOUNS = ["movie", "meal", "hotel", "concert", "book", "service", "game", "trip", "album", "show", "garden", "lecture"]
TEMPLATES = (
    "The {noun} was {adj}.",
    "I found the {noun} {adj}.",
    "What a {adj} {noun}.",
    "Honestly, the {noun} felt {adj}.",
)
PROMPT = "Review: {sentence}\nColour:"


def make_data(n_train: int, n_test: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Balanced train/test reviews; test nouns are held out of training."""
    rng = random.Random(seed)
    test_nouns = set(NOUNS[-4:])
    rows = [
        {"prompt": PROMPT.format(sentence=t.format(noun=n, adj=a)), "label": lab, "noun": n}
        for t in TEMPLATES
        for n in NOUNS
        for lab, adjs in ((1, POSITIVE), (0, NEGATIVE))
        for a in adjs
    ]
    df = pd.DataFrame(rows)
    parts = []
    for split, n in (("train", n_train), ("test", n_test)):
        pool = df[df.noun.isin(test_nouns) == (split == "test")]
        idx = [i for lab in (0, 1) for i in rng.sample(list(pool.index[pool.label == lab]), n // 2)]
        rng.shuffle(idx)
        parts.append(pool.loc[idx].reset_index(drop=True))
    return parts[0], parts[1]


def left_padded(tok, prompts: list[str], device) -> dict[str, torch.Tensor]:
    """Left padding, so the last column is every prompt's last token; explicit position ids."""
    ids = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def label_logits(reft_or_model, batch, label_ids: torch.Tensor, *, intervene: bool = True) -> torch.Tensor:
    """``[batch, 2]`` logits of the (negative, positive) labels at the last prompt token."""
    if intervene:
        out = reft_or_model.run(**batch, positions="l1", logits_to_keep=1)
    else:
        out = reft_or_model(**batch, logits_to_keep=1)
    return out.logits[:, -1, label_ids]


def train_layer(hooked, layer: int, train: pd.DataFrame, label_ids, args) -> reftlab.ReftModel:
    torch.manual_seed(args.seed)
    cfg = reftlab.ReftConfig(
        representations={
            "layer": layer,
            "component": "block_output",
            "positions": "l1",
            "intervention": {"kind": "loreft", "rank": 1},
        }
    )
    reft = reftlab.get_reft_model(hooked, cfg)
    opt = torch.optim.AdamW(reft.interventions.parameters(), lr=args.lr, weight_decay=0.0)
    reft.train()
    for epoch in range(args.epochs):
        order = np.random.default_rng(args.seed + epoch).permutation(len(train))
        for start in range(0, len(order), args.batch_size):
            rows = train.iloc[order[start : start + args.batch_size]]
            batch = left_padded(hooked.tokenizer, list(rows.prompt), hooked.device)
            target = torch.tensor(rows.label.values, device=hooked.device)
            logits = reft.run(**batch, positions="l1", logits_to_keep=1).logits[:, -1]  # [batch, vocab]
            loss = torch.nn.functional.cross_entropy(logits, label_ids[target])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return reft.eval()


def d_prime(values: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = values[labels == 1], values[labels == 0]
    pooled = np.sqrt((pos.var(ddof=1) + neg.var(ddof=1)) / 2)
    return float(abs(pos.mean() - neg.mean()) / pooled) if pooled > 0 else float("inf")


def accuracy(reft_or_model, test: pd.DataFrame, label_ids, *, intervene: bool) -> float:
    hooked = reft_or_model.hooked if intervene else reft_or_model
    with torch.no_grad():
        batch = left_padded(hooked.tokenizer, list(test.prompt), hooked.device)
        logits = label_logits(reft_or_model if intervene else hooked.model, batch, label_ids, intervene=intervene)
    return float((logits.argmax(-1).cpu().numpy() == test.label.values).mean())


def analyse_layer(hooked, reft, layer: int, train, test, label_ids) -> tuple[dict, pd.DataFrame]:
    key = next(iter(reft.interventions))
    iv = reft.interventions[key]
    hook = f"blocks.{layer}.hook_resid_post"
    proj = project(reft, list(test.prompt), only_intervened=True, progress=False)
    proj["label"] = test.label.values[proj.prompt_id.values]
    before = proj[proj.stage == "before"].sort_values("prompt_id")
    after = proj[proj.stage == "after"].sort_values("prompt_id")
    md = mean_difference_direction(
        hooked, list(train.prompt[train.label == 1]), list(train.prompt[train.label == 0]), hook, positions="l1"
    )
    r, w = iv.R.detach()[0], iv.weight.detach()[0]
    row = {
        "layer": layer,
        "accuracy": accuracy(reft, test, label_ids, intervene=True),
        "d_prime_before": d_prime(before.dir_0.values, before.label.values),
        "d_prime_after": d_prime(after.dir_0.values, after.label.values),
        "angle_r_vs_mean_diff": float(principal_angles(r, md)[0]),
        "angle_w_vs_mean_diff": float(principal_angles(w, md)[0]),
        "mean_edit_norm": float(after.edit_norm.mean()),
    }
    return row, proj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny random model, 2 layers, 2 epochs (smoke test)")
    ap.add_argument("--layers", type=str, default=None, help="comma-separated layers (default: every 4th)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=2e-2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("analyses/out/sentiment_layers"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.quick:
        hooked = reftlab.load_model(reftlab.tiny_llama(n_layers=3), reftlab.tiny_tokenizer())
        labels = ("N", "P")  # single tokens of the byte-level tokenizer
        n_train, n_test, default_epochs = 16, 8, 2
    else:
        hooked = reftlab.load_model()
        labels = (" green", " blue")  # (negative, positive): arbitrary, sentiment-free labels
        n_train, n_test, default_epochs = 96, 48, 4
    args.epochs = args.epochs or default_epochs
    every = list(range(0, hooked.n_layers, 2)) if args.quick else list(range(1, hooked.n_layers, 4))
    layers = [int(x) for x in args.layers.split(",")] if args.layers else every
    label_ids = torch.tensor(
        [hooked.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in labels], device=hooked.device
    )
    train, test = make_data(n_train, n_test, args.seed)
    base_acc = accuracy(hooked, test, label_ids, intervene=False)
    print(f"untouched model, held-out accuracy {base_acc:.3f}")

    rows, directions, projections = [], {}, {}
    for layer in layers:
        reft = train_layer(hooked, layer, train, label_ids, args)
        row, proj = analyse_layer(hooked, reft, layer, train, test, label_ids)
        rows.append(row)
        directions[f"L{layer}"] = next(iter(reft.interventions.values())).R.detach()
        projections[layer] = proj
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    table = pd.DataFrame(rows)
    best = int(table.sort_values(["accuracy", "d_prime_after"], ascending=False).iloc[0].layer)

    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "layers.csv", index=False)
    result = {
        "question": "at which layer does a rank-1 LoReFT learn sentiment most cleanly, and how does it "
        "align with the mean-difference direction?",
        "model": "tiny-random-llama" if args.quick else "smollm2-135m-instruct",
        "base_accuracy": base_acc,
        "best_layer": best,
        "layers": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    figures = [
        ("Held-out accuracy per layer", _lines(table, ["accuracy"], f"untouched model: {base_acc:.2f}", base_acc)),
        ("Sentiment separation on the learned direction", _lines(table, ["d_prime_before", "d_prime_after"], "d'")),
        (
            "Alignment with the mean-difference direction",
            _lines(table, ["angle_r_vs_mean_diff", "angle_w_vs_mean_diff"], "degrees"),
        ),
        ("Learned directions compared across layers", angle_heatmap(compare(directions))),
        (f"Projections at the best layer ({best})", projection_shift(projections[best])),
    ]
    write_page(
        page_html(
            figures,
            title="Sentiment direction of a rank-1 LoReFT, per layer",
            intro=f"<pre>{json.dumps({k: v for k, v in result.items() if k != 'layers'}, indent=2)}</pre>",
        ),
        args.out / "report.html",
    )
    print(f"best layer {best}; wrote {args.out}/results.json, layers.csv, report.html in {result['seconds']} s")


def _lines(table: pd.DataFrame, columns: list[str], ytitle: str, hline: float | None = None) -> go.Figure:
    fig = go.Figure([go.Scatter(x=table.layer, y=table[c], mode="lines+markers", name=c) for c in columns])
    if hline is not None:
        fig.add_hline(y=hline, line_dash="dot", annotation_text=ytitle)
    fig.update_layout(xaxis_title="layer", yaxis_title=ytitle, height=360)
    return fig


if __name__ == "__main__":
    main()
