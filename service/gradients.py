"""∂ log p(target) / ∂A for every layer's attention probabilities A: the gradient half of Chefer et al. 2021.

One forward with autograd on (outside ``inference_mode``, dropout off). Two routes to the same number:

- ``autograd``: differentiate through the probabilities the model returned — possible when they are the tensor
  its output was computed from (the dense explicit path);
- ``values``: the block-sparse kernel returns a dense copy scattered from its tiles, which is not on the path to
  the logits. There, with ``O_q = Σ_k A[q,k]·v_k`` per head, the chain rule gives
  ``∂L/∂A[q,k] = ∂L/∂O_q · v_k`` (plus ``∂L/∂O_q · aⱽ_{r(q,k)}`` with Shaw 2018 relative positions), read from
  the heads' output gradient (the input of ``MultiHeadAttention.out``) and the values (the ``qkv`` output).

``route="values"`` forces the second route everywhere (the tests check both agree on a dense model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modeling.attention import MultiHeadAttention


@dataclass
class AttentionGradients:
    attentions: list[Tensor]  # per layer (H, n, n), detached
    gradients: list[Tensor]  # per layer (H, n, n): ∂ log p / ∂A
    routes: list[str]  # per layer: "autograd" or "values"
    log_prob: float
    token_id: int


def attention_gradients(
    model: nn.Module, ids: list[int], position: int, token_id: int | None = None, *, route: str = "auto"
) -> AttentionGradients:
    """Gradients of ``log p(token_id)`` at ``position`` (default: the top prediction) w.r.t. each A."""
    if route not in ("auto", "values"):
        raise ValueError(f"route: must be 'auto' or 'values', got {route!r}")
    modules = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]  # layer order
    captured: list[dict[str, Tensor]] = [{} for _ in modules]
    hooks = []
    for i, module in enumerate(modules):
        hooks.append(module.qkv.register_forward_hook(lambda _m, _a, out, i=i: captured[i].update(qkv=out)))
        hooks.append(
            module.out.register_forward_pre_hook(lambda _m, args, i=i: captured[i].update(heads=args[0]))
        )
    frozen = [p for p in model.parameters() if not p.requires_grad]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode(False), torch.enable_grad():
            for p in frozen:  # a frozen model builds no graph; unfreeze for this forward only
                p.requires_grad_(True)
            batch = torch.tensor([ids], dtype=torch.long, device=device)  # (1, n)
            output = model(batch, need_weights=True)
            log_probs = output.logits[0, position].float().log_softmax(-1)  # (V,)
            wanted = int(log_probs.argmax()) if token_id is None else token_id
            attentions = list(output.attentions)
            heads = [c["heads"] for c in captured]
            grads = torch.autograd.grad(log_probs[wanted], attentions + heads, allow_unused=True)
            result, routes = [], []
            for i, module in enumerate(modules):
                direct = grads[i]
                if direct is not None and route == "auto":
                    result.append(direct[0].detach())
                    routes.append("autograd")
                else:
                    result.append(_through_values(module, captured[i]["qkv"], grads[len(modules) + i])[0])
                    routes.append("values")
    finally:
        for hook in hooks:
            hook.remove()
        for p in frozen:
            p.requires_grad_(False)
    return AttentionGradients(
        attentions=[a[0].detach() for a in attentions],
        gradients=result,
        routes=routes,
        log_prob=float(log_probs[wanted].detach()),
        token_id=wanted,
    )


def _through_values(module: MultiHeadAttention, qkv: Tensor, heads_grad: Tensor) -> Tensor:
    """∂L/∂A (B, H, T, T) from the values and the gradient of the concatenated head outputs."""
    B, T, _ = heads_grad.shape
    H, D = module.n_heads, module.d_head
    v = qkv.detach().view(B, T, 3, H, D)[:, :, 2].transpose(1, 2)  # (B, H, T, D)
    d_out = heads_grad.detach().view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
    grad = d_out @ v.transpose(-1, -2)  # (B, H, T, T)
    if module.relative is not None:  # Shaw 2018: O_q also holds Σ_k A[q,k]·aⱽ_{r(q,k)}, linear in A
        positions = torch.arange(T, device=v.device)
        index = module.relative.distance_index(positions, positions)  # (T, T)
        probe = torch.zeros(B, H, T, T, device=v.device, requires_grad=True)
        term = module.relative.value_term(probe, index)  # (B, H, T, D)
        grad = grad + torch.autograd.grad((term * d_out).sum(), probe)[0]
    return grad
