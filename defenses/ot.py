"""``ot``: hierarchical feature alignment by optimal transport
(``ot-hierarchical-alignment.txt`` §3).

The model is trained on clean images and on PGD examples of itself, and the feature maps
of a few intermediate layers are pulled together across the two domains:

* eq. (8): ``L = CE(F(x), y) + CE(F(x_adv), y)
  + lambda * sum_l W2(GCN(LC(f_clean^l)), GCN(LC(f_adv^l)))``
* eq. (6), LC: the (C, H*W) feature map is reduced to ``C'`` channels (state) and ``L'``
  nodes by two learned 1x1 convolutions, as in the graph reasoning unit the paper follows
  ([3], GloRe): ``nodes = state(f) @ proj(f)^T / (H*W)`` -> (C', L').
* eq. (7), GCN: ``Conv1D(Conv1D(v)^T)^T``: a node-wise then a channel-wise 1-D convolution.
* eq. (2)-(5), W2: the ``L'`` node vectors of a clean image and of its adversarial copy are
  two uniform point clouds in R^{C'}; cost ``||x - y||^2``; entropic OT with ``eps`` and
  ``iters`` log-domain Sinkhorn iterations (POT ``ot.solve_batch``, one problem per image,
  solved in parallel); ``W* = <P*, C>``. Averaged over the batch.
* Algorithm 1: for the first ``warmup`` epochs (T') the loss is the clean CE only.

Layers are tapped with forward hooks on ``model.tap_names`` (up to ``layers`` of them,
evenly spaced from shallow to deep), so the defense works on any model of the contract.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import ot
import torch
import torch.nn.functional as F
from torch import nn

from defenses.base import Batch, Defense, DefenseOutput, TrainContext
from defenses.registry import register_defense


class GraphProjection(nn.Module):
    """LC (eq. 6) followed by the two-convolution GCN (eq. 7) for one tapped layer."""

    def __init__(self, channels: int, state: int, nodes: int) -> None:
        super().__init__()
        self.state = nn.Conv2d(channels, state, kernel_size=1)  # C -> C'
        self.proj = nn.Conv2d(channels, nodes, kernel_size=1)  # H*W -> L' weights
        self.node_conv = nn.Conv1d(nodes, nodes, kernel_size=1)  # diffusion across nodes
        self.state_conv = nn.Conv1d(state, state, kernel_size=1)  # diffusion across channels

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Feature map (N, C, H, W) -> node features (N, L', C')."""
        s = self.state(f).flatten(2)  # (N, C', HW)
        b = self.proj(f).flatten(2)  # (N, L', HW)
        v = s @ b.transpose(1, 2) / s.shape[2]  # (N, C', L')
        v = self.node_conv(v.transpose(1, 2)).transpose(1, 2)  # (N, C', L')
        v = self.state_conv(v)  # (N, C', L')
        return v.transpose(1, 2)  # (N, L', C'): L' points in R^C'


class OTModel(nn.Module):
    """The child network plus one :class:`GraphProjection` per tapped layer.

    ``forward``/``forward_features``/``forward_head`` are the child's; ``taps`` are the
    child's submodule names that are aligned; ``tap_names`` are re-rooted under ``net.``.
    """

    def __init__(self, net: nn.Module, taps: list[str], heads: list[GraphProjection]) -> None:
        super().__init__()
        self.net = net
        self.taps = list(taps)
        self.heads = nn.ModuleList(heads)
        self.num_classes = getattr(net, "num_classes", None)
        self.num_features = getattr(net, "num_features", None)
        self.tap_names = tuple(f"net.{n}" for n in getattr(net, "tap_names", ()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(f)

    def forward_tapped(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (N, K) and the tapped feature maps (each (N, C_l, H_l, W_l))."""
        captured: list[torch.Tensor] = []
        hooks = [
            self.net.get_submodule(n).register_forward_hook(
                lambda _m, _i, out: captured.append(out)
            )
            for n in self.taps
        ]
        try:
            logits = self.net(x)
        finally:
            for h in hooks:
                h.remove()
        return logits, captured


def pick_taps(names: tuple[str, ...] | list[str], count: int) -> list[str]:
    """Up to ``count`` names evenly spaced over ``names`` (shallow to deep, both ends kept)."""
    names = list(names)
    if count <= 0 or not names:
        return []
    if len(names) <= count:
        return names
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, count)).astype(int))
    return [names[i] for i in idx]


def sinkhorn_w2(
    xs: torch.Tensor, xt: torch.Tensor, *, eps: float, iters: int
) -> torch.Tensor:
    """Entropic W2 transport cost ``<P*, C>`` between batched uniform point clouds.

    Args:
        xs: (B, n, d) source points; xt: (B, m, d) target points.
        eps: entropic regularisation (eq. 5).
        iters: log-domain Sinkhorn iterations (run to the end: ``tol=0``).

    Returns:
        (B,) transport costs with the squared Euclidean cost of eq. (2). The plan is held
        fixed for the gradient (envelope theorem), so gradients flow into ``xs``/``xt``
        through the cost matrix.
    """
    xs, xt = xs.float() if xs.dtype != torch.float64 else xs, xt.to(xs.dtype)  # no bf16 OT
    cost = ot.dist_batch(xs, xt, metric="sqeuclidean")  # (B, n, m)
    res = ot.solve_batch(
        cost.detach(), reg=eps, method="log_sinkhorn", max_iter=iters, tol=0.0, grad="detach"
    )
    plan = res.plan.detach()  # (B, n, m)
    return (plan * cost).sum(dim=(1, 2))


@register_defense("ot")
class OTAlignment(Defense):
    """Optimal-transport hierarchical feature alignment, eq. (8) and Algorithm 1.

    Args:
        lam: weight of the Wasserstein terms. Default 1.0, the paper's stated default
            (§3.3; its Fig. 6 sweep finds 40 best on Fashion-MNIST).
        eps: entropic regularisation. Default 0.1 (§3.2).
        iters: Sinkhorn iterations. Default 100 (§3.2).
        warmup: CE-only epochs T' (Algorithm 1). Default 0: the paper uses T'=20 of T=60 on
            (F-)MNIST, but children here train for far fewer epochs (see docs/defenses.md).
        layers: number of tapped layers (evenly spaced over ``tap_names``). Default 3
            (the paper uses 2 for LeNet, 4 for ResNet-110).
        state: C', channels after the linear combination. Default 16 (not given in the paper).
        nodes: L', graph nodes after the linear combination. Default 16 (not given).
    """

    needs = frozenset({"adversary"})

    def __init__(
        self,
        *,
        lam: float = 1.0,
        eps: float = 0.1,
        iters: int = 100,
        warmup: int = 0,
        layers: int = 3,
        state: int = 16,
        nodes: int = 16,
    ) -> None:
        self.lam = float(lam)
        self.eps = float(eps)
        self.iters = int(iters)
        self.warmup = int(warmup)
        self.layers = int(layers)
        self.state = int(state)
        self.nodes = int(nodes)
        if self.eps <= 0 or self.iters < 1 or min(self.layers, self.state, self.nodes) < 1:
            raise ValueError("ot needs eps > 0 and iters, layers, state, nodes >= 1")

    def wrap(
        self,
        factory: Callable[[], nn.Module],
        *,
        num_classes: int,
        input_shape: tuple[int, int, int],
    ) -> nn.Module:
        """The child inside an :class:`OTModel` with LC+GCN heads for the tapped layers."""
        net = factory()
        taps = pick_taps(getattr(net, "tap_names", ()), self.layers)
        if not taps:
            raise ValueError("ot needs a model with at least one name in tap_names")
        probe = OTModel(net, taps, [])
        was_training = net.training
        net.eval()
        with torch.no_grad():
            _, feats = probe.forward_tapped(torch.zeros(2, *input_shape))
        net.train(was_training)
        heads = [GraphProjection(f.shape[1], self.state, self.nodes) for f in feats]
        return OTModel(net, taps, heads)

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> DefenseOutput:
        """Eq. (8) after the warm-up, clean CE before it."""
        if not isinstance(model, OTModel):
            raise TypeError("ot trains an OTModel: build the model with OTAlignment.wrap(...)")
        if ctx.epoch < self.warmup:
            logits = model(batch.x)  # (N, K)
            ce = F.cross_entropy(logits, batch.y)
            return DefenseOutput(loss=ce, logits=logits, logs={"ce": float(ce.detach())})
        if ctx.adversary is None:
            raise ValueError("ot needs ctx.adversary (PGD on the model being trained)")
        x_adv = ctx.adversary(model, batch.x, batch.y).detach()  # (N, C, H, W)
        logits, f_clean = model.forward_tapped(batch.x)
        logits_adv, f_adv = model.forward_tapped(x_adv)
        ce = F.cross_entropy(logits, batch.y)
        ce_adv = F.cross_entropy(logits_adv, batch.y)
        w2 = [
            sinkhorn_w2(head(fc), head(fa), eps=self.eps, iters=self.iters).mean()
            for head, fc, fa in zip(model.heads, f_clean, f_adv, strict=True)
        ]
        w2_sum = torch.stack(w2).sum()
        loss = ce + ce_adv + self.lam * w2_sum  # eq. (8)
        logs = {"ce": float(ce.detach()), "ce_adv": float(ce_adv.detach())}
        logs.update({f"w2_{i}": float(w.detach()) for i, w in enumerate(w2)})
        return DefenseOutput(loss=loss, logits=logits, logs=logs)
