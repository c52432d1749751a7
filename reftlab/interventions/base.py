"""The intervention protocol, the kind registry and the shared pieces of math.

An intervention maps representations ``h`` of shape ``[..., d_model]`` to edited
representations of the same shape. It never sees positions: gathering and
scattering positions is the attach layer's job (``reftlab.attach``).

Every kind is ``phi(h) = h + dropout(edit(h))``: dropout touches the edit only, so
``eval()`` makes the intervention deterministic and an identity-initialised kind is
exactly the identity in both modes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, ItemsView, ValuesView
from typing import Any, ClassVar, cast

import torch
from jaxtyping import Float
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}
# Activations with act(0) == 0: the only ones for which W = 0, b = 0 gives a zero edit.
ZERO_PRESERVING = frozenset({"linear", "relu", "gelu", "silu", "tanh"})

_REGISTRY: dict[str, type["Intervention"]] = {}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def register(cls: type["Intervention"]) -> type["Intervention"]:
    """Class decorator: make ``cls`` buildable by its short ``kind`` string."""
    if cls.kind in _REGISTRY:
        raise ValueError(f"intervention kind {cls.kind!r} is already registered")
    _REGISTRY[cls.kind] = cls
    return cls


def kinds() -> list[str]:
    """The registered intervention kinds, e.g. ``["consreft", "direft", ...]``."""
    return sorted(_REGISTRY)


def intervention_class(kind: str) -> type["Intervention"]:
    """Look a kind up by its short name; the error lists the valid ones."""
    try:
        return _REGISTRY[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown intervention kind {kind!r}; valid kinds: {', '.join(kinds())}") from None


def build(spec: dict[str, Any]) -> "Intervention":
    """Build an intervention from ``{"kind": ..., **constructor_args}`` (as ``.spec()`` writes)."""
    if "kind" not in spec:
        raise ValueError(f"intervention spec {spec!r} has no 'kind'; valid kinds: {', '.join(kinds())}")
    args = dict(spec)
    cls = intervention_class(args.pop("kind"))
    return cls(**args)


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = dtype.removeprefix("torch.")
    if key not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)}")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def check_activation(act: str | None) -> str:
    act = "linear" if act is None else act
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r} is not supported; use one of {sorted(ACTIVATIONS)}")
    return act


def check_shape(d_model: int, rank: int, dropout: float) -> None:
    if not isinstance(d_model, int) or d_model < 1:
        raise ValueError(f"d_model={d_model!r} must be a positive int (the model's hidden size)")
    if not isinstance(rank, int) or not 1 <= rank <= d_model:
        raise ValueError(f"rank={rank!r} must be an int in [1, d_model={d_model}]")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")


def orthonormal_rows(basis: Float[Tensor, "rank d_model"]) -> Float[Tensor, "rank d_model"]:
    """R with orthonormal rows spanning the row space of ``basis`` (R R^T = I).

    A smooth, sign-fixed QR map: the trained parameter is unconstrained, so any
    optimizer (weight decay included) can update it and R stays orthonormal to float
    precision by construction. QR runs in at least fp32 (no bf16 QR kernels).
    """
    work = basis.float() if basis.dtype in (torch.float16, torch.bfloat16) else basis
    q: Tensor  # [d_model, rank]
    r: Tensor  # [rank, rank]
    q, r = torch.linalg.qr(work.T)  # (torch types linalg.qr's result as Any)
    signs = torch.sign(torch.diagonal(r))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return (q * signs).T.to(basis.dtype)


def householder_rows(
    reflectors: Float[Tensor, "d_model rank"], base: Float[Tensor, "d_model d_model"]
) -> Float[Tensor, "rank d_model"]:
    """R = (base H_1 ... H_r E)^T: torch's ``parametrizations.orthogonal`` map, as pyreft trains R.

    H_i = I - tau_i v_i v_i^T with v_i = e_i + the part of column i of ``reflectors`` below the
    diagonal, tau_i = 2 / |v_i|^2; E is the first r columns of the identity; ``base`` is a fixed
    orthogonal d x d matrix whose first r columns are the initial R^T (all-zero reflectors give
    R = base[:, :r]^T). The diagonal and upper part of ``reflectors`` are never read, so weight
    decay cannot touch R through them (torch's map reads signs from the diagonal, and AdamW's
    decay of that diagonal zeroes R after one step). Runs in at least fp32.

    >>> import torch
    >>> base = torch.linalg.qr(torch.randn(5, 5))[0]
    >>> R = householder_rows(torch.randn(5, 2), base)
    >>> torch.allclose(R @ R.T, torch.eye(2), atol=1e-6)
    True
    >>> torch.equal(householder_rows(torch.zeros(5, 2), base), base[:, :2].T)
    True
    """
    work = reflectors.float() if reflectors.dtype in (torch.float16, torch.bfloat16) else reflectors
    A = work.tril(-1)  # [d_model, rank]: the free part of each Householder vector
    tau = 2.0 / (1.0 + (A * A).sum(dim=-2))  # [rank]
    Q: Tensor = -torch.linalg.householder_product(A, tau)  # [d_model, rank]; H_1...H_r E = -E at A = 0
    return (base.to(Q.dtype) @ Q).T.to(reflectors.dtype)


def householder_init(rank: int, d_model: int, dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
    """(reflectors, base) for ``householder_rows``, drawn as pyreft draws them.

    pyreft's ``LowRankRotateLayer`` takes ``nn.init.orthogonal_`` of a d x r weight, then torch's
    parametrization completes it to an orthogonal d x d ``base`` with ``randn(d, d - r)``: the same
    draws in the same order, so a seed gives pyreft's initial R (and base).
    """
    w = torch.empty(d_model, rank, dtype=torch.float32)
    nn.init.orthogonal_(w)  # [d_model, rank]: the initial R^T
    full = torch.cat([w, torch.randn(d_model, d_model - rank, dtype=torch.float32)], dim=-1)  # [d_model, d_model]
    qr, tau = torch.geqrf(full)
    base = torch.linalg.householder_product(qr, tau) * qr.diagonal().sgn().unsqueeze(-2)  # first r columns = w
    reflectors = torch.zeros(d_model, rank, dtype=torch.float32)
    return reflectors.to(dtype or torch.float32), base.to(dtype or torch.float32)


def random_orthonormal(rank: int, d_model: int, dtype: torch.dtype | None) -> Tensor:
    w = torch.empty(d_model, rank, dtype=torch.float32)
    nn.init.orthogonal_(w)
    return w.T.contiguous().to(dtype or torch.float32)


def linear_init(rank: int, d_model: int, dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
    """nn.Linear(d_model, rank)'s default init, as pyreft uses for W and b."""
    lin = nn.Linear(d_model, rank)
    return lin.weight.detach().to(dtype or torch.float32), lin.bias.detach().to(dtype or torch.float32)


class Intervention(nn.Module, abc.ABC):
    """Abstract base: ``forward(h) = h + dropout(edit(h))`` on ``[..., d_model]``.

    Subclasses set ``kind``, own their parameters, implement ``edit`` by calling
    their pure function, ``subspace`` and ``spec``. The six single-position kinds share
    their constructor through ``reftlab.interventions.lowrank.LowRank``.

    ``arity`` is the number of positions read jointly: 1 for ``[..., d_model]``
    vectors, k > 1 for groups ``[..., k, d_model]`` (see ``reftlab.attach``).
    ``derives_rank`` marks composites whose rank comes from their children (a spec
    need not give ``rank``).
    """

    kind: ClassVar[str]
    derives_rank: ClassVar[bool] = False
    arity: int = 1
    d_model: int
    rank: int

    def __init__(self, *, d_model: int, rank: int, dropout: float, dtype: str | torch.dtype | None) -> None:
        super().__init__()
        check_shape(d_model, rank, dropout)
        self.d_model, self.rank = d_model, rank
        self.dropout = nn.Dropout(dropout)
        # None: follow the model's dtype when attached (get_reft_model casts it).
        self.requested_dtype = parse_dtype(dtype)

    @abc.abstractmethod
    def edit(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The edit delta(h) that forward adds to h (before dropout)."""

    @abc.abstractmethod
    def subspace(self) -> Float[Tensor, "rank d_model"]:
        """The r x d matrix whose rows span the subspace the edit lies in."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """JSON-able constructor arguments, with ``kind``: ``build(spec())`` rebuilds it."""

    def forward(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if h.shape[-1] != self.d_model:
            raise ValueError(
                f"{self.kind} expects representations of width d_model={self.d_model}, got shape {tuple(h.shape)}"
            )
        delta = self.edit(h.to(self.param_dtype))
        return h + self.drop(delta).to(h.dtype)

    def drop(self, delta: Tensor) -> Tensor:
        """Dropout on an edit (``forward`` and composites apply it to the edit only)."""
        out: Tensor = self.dropout(delta)  # nn.Module.__call__ is typed as returning Any
        return out

    @property
    def param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def __getitem__(self, index: int) -> "Intervention":
        """pyreft compatibility: pyvene stored ``(intervention, hook)`` pairs, so pyreft scripts
        write ``reft_model.interventions[k][0]``; index 0 is the intervention itself."""
        if index != 0:
            raise IndexError(
                f"{self.kind}[{index!r}]: only [0] exists (pyvene's (intervention, hook) pair); "
                "reftlab's interventions dict holds the interventions themselves"
            )
        return self

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, rank={self.rank}, params={self.num_parameters():,}"

    def _base_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "d_model": self.d_model,
            "rank": self.rank,
            "dropout": self.dropout.p,
            "dtype": dtype_name(self.requested_dtype),
        }


class InterventionDict(nn.ModuleDict):
    """``nn.ModuleDict`` of interventions, typed as such (a plain ModuleDict hands back ``nn.Module``).

    >>> d = InterventionDict({"a": build({"kind": "loreft", "d_model": 4, "rank": 1})})
    >>> d["a"].kind, [iv.rank for iv in d.values()]
    ('loreft', [1])
    """

    def __getitem__(self, key: str) -> Intervention:
        return cast(Intervention, super().__getitem__(key))

    def __setitem__(self, key: str, module: nn.Module) -> None:
        if not isinstance(module, Intervention):
            raise TypeError(f"interventions[{key!r}] must be an Intervention, got {type(module).__name__}")
        super().__setitem__(key, module)

    # The casts hold because __setitem__ (which __init__ and update() go through) admits interventions only.
    def values(self) -> ValuesView[Intervention]:
        return cast("ValuesView[Intervention]", super().values())

    def items(self) -> ItemsView[str, Intervention]:
        return cast("ItemsView[str, Intervention]", super().items())
