"""Shared pieces for the composition tests: an explicit training loop and round trips."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from reftlab.interventions import build


def next_token_batch(tok, prompts, targets):
    """Right-padded prompt + one target token; labels supervise only the target token."""
    rows = [tok(p)["input_ids"] + tok(t)["input_ids"][:1] for p, t in zip(prompts, targets)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, len(r) - 1] = r[-1]
    prompt_lengths = torch.tensor([len(r) - 1 for r in rows])
    return ids, mask, labels, prompt_lengths


def train(reft, ids, mask, labels, *, positions, prompt_lengths=None, steps=40, lr=1e-2):
    """AdamW over the interventions; returns the loss per step."""
    opt = torch.optim.AdamW(reft.interventions.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = reft.run(ids, mask, positions=positions, prompt_lengths=prompt_lengths, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def perturb(module, seed=1):
    """Move every parameter off its init so a round trip that drops state would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def rebuild(iv, tmp_path=None):
    """spec -> JSON -> build -> load_state_dict (strict), optionally through a safetensors file."""
    spec = json.loads(json.dumps(iv.spec()))
    state = {k: v.detach().clone().contiguous() for k, v in iv.state_dict().items()}
    if tmp_path is not None:
        path = tmp_path / "iv.safetensors"
        save_file(state, str(path))
        state = load_file(str(path))
    new = build(spec)
    new.load_state_dict(state, strict=True)
    return new
