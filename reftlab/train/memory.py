"""What training a ReFT stores on each GPU: a frozen base plus rank-r interventions.

    base bytes      = (P - P_16) * bits / 8 + P_16 * 2          P: base parameters,
                                                                 P_16: kept in 16 bits (embeddings, head)
    per GPU         = base bytes / shards                        device_map over `shards` GPUs
    intervention    = n * (2 d r + r)                            LoReFT / DiReFT parameters
    training state  = 16 bytes per intervention parameter        fp32 value, grad, AdamW's two moments

Data parallelism (DDP) keeps a whole base on every GPU: more GPUs add throughput, not
room. Sharding (``device_map="auto"``) divides the base; quantization shrinks it:
bitsandbytes nf4 with double quantization stores ``4 + 8/64 + 32/(64*256) = 4.127`` bits
per weight (one 8-bit absmax per 64 weights, one fp32 per 256 absmaxes) and keeps the
embeddings and the LM head in 16 bits; int8 weight-only stores 8 bits plus a per-row scale.
Activations come on top (``benchmarks/gpu_check.py`` measures a train step's peak); they
grow with batch x length x the blocks above the lowest intervened layer, not below it.

    >>> round(llama_params(4096, 32, 11008, 32000) / 1e9, 2)
    6.74
    >>> f = footprint(llama_params(4096, 32, 11008, 32000), d_model=4096, rank=4, bits=16)
    >>> round(f.base_gb, 1), f.intervention_params, f.training_state_bytes
    (13.5, 32772, 524352)
"""

from __future__ import annotations

from dataclasses import dataclass

NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # bitsandbytes nf4 + double quantization


def llama_params(d_model: int, n_layers: int, d_ff: int, vocab: int, kv_dim: int | None = None) -> int:
    """Parameters of a Llama-shaped model (untied embeddings and head; ``kv_dim``: d_model unless GQA)."""
    kv = d_model if kv_dim is None else kv_dim
    per_layer = 2 * d_model * d_model + 2 * d_model * kv + 3 * d_model * d_ff + 2 * d_model
    return n_layers * per_layer + 2 * vocab * d_model + d_model


@dataclass(frozen=True)
class Footprint:
    """Bytes per GPU for one training setup (see the module docstring)."""

    base_bytes: float
    base_bytes_per_gpu: float
    intervention_params: int
    training_state_bytes: int

    @property
    def base_gb(self) -> float:
        return self.base_bytes / 1e9

    @property
    def per_gpu_gb(self) -> float:
        return (self.base_bytes_per_gpu + self.training_state_bytes) / 1e9


def footprint(
    base_params: int,
    *,
    d_model: int,
    rank: int,
    bits: float = 16,
    params_16bit: int = 0,
    n_interventions: int = 1,
    shards: int = 1,
) -> Footprint:
    """The footprint of ``base_params`` weights at ``bits`` each (``params_16bit`` of them kept in
    16 bits) over ``shards`` GPUs, plus ``n_interventions`` rank-``rank`` LoReFTs."""
    if shards < 1 or rank < 1 or n_interventions < 1:
        raise ValueError("shards, rank and n_interventions must be >= 1")
    base = (base_params - params_16bit) * bits / 8 + params_16bit * 2
    n_iv = n_interventions * (2 * d_model * rank + rank)
    return Footprint(base, base / shards, n_iv, 16 * n_iv)


LLAMA_7B = dict(d_model=4096, n_layers=32, d_ff=11008, vocab=32000)
LLAMA_70B = dict(d_model=8192, n_layers=80, d_ff=28672, vocab=32000, kv_dim=1024)


def scale_table() -> str:
    """The memory table of ``docs/scale.md`` (a test checks that the doc holds this text)."""
    p7, p70 = llama_params(**LLAMA_7B), llama_params(**LLAMA_70B)  # type: ignore[arg-type]
    head7, head70 = 2 * 32000 * 4096, 2 * 32000 * 8192  # embeddings + LM head, kept in 16 bits by bitsandbytes
    rows = [
        ("1 GPU, Llama-2-7B bf16", footprint(p7, d_model=4096, rank=4), "1"),
        ("N GPUs (DDP), Llama-2-7B bf16", footprint(p7, d_model=4096, rank=4), "N (each a full copy)"),
        ("Llama-2-70B bf16, device_map over 2 GPUs", footprint(p70, d_model=8192, rank=4, shards=2), "2"),
        ("Llama-2-70B bf16, device_map over 8 GPUs", footprint(p70, d_model=8192, rank=4, shards=8), "8"),
        ("Llama-2-7B nf4", footprint(p7, d_model=4096, rank=4, bits=NF4_BITS, params_16bit=head7), "1"),
        ("Llama-2-70B nf4", footprint(p70, d_model=8192, rank=4, bits=NF4_BITS, params_16bit=head70), "1"),
    ]
    lines = [
        "| setup | GPUs | base weights (total) | base per GPU | LoReFT r=4 params | their training state |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, f, gpus in rows:
        lines.append(
            f"| {name} | {gpus} | {f.base_gb:.1f} GB | {f.base_bytes_per_gpu / 1e9:.1f} GB | "
            f"{f.intervention_params:,} | {f.training_state_bytes / 1e6:.2f} MB |"
        )
    return "\n".join(lines)
