"""CLAP4CLIP's small modules: visual-guided attention (VGA), the per-task variational heads and the
language-aware statistics of template features. ``models/clap4clip.py`` composes them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


#: nn.TransformerDecoderLayer's default feed-forward width, which CLAP4CLIP's VGA keeps for every backbone
ORIGINAL_FFN = 2048


class VisualGuidedAttention(nn.Module):
    """One post-norm transformer decoder layer (as ``nn.TransformerDecoderLayer``: GELU, dropout 0.1, a
    feed-forward of width ``ffn``, 2048 by default as in CLAP4CLIP whatever the width D) whose queries are class
    text features and whose keys/values are image features.

    ``forward(text, image, mask, context)``; ``text`` is (C, D) or (B, C, D), ``image`` (B, D):
    - ``context="batch"`` (CLAP4CLIP): every class attends to all B images of the mini-batch, so the
      output depends on which images share the batch; with single-task test batches this leaks the task.
    - ``context="image"``: each image is the only key/value of its own class queries, so a prediction
      depends on its image alone. With one key the attention weight is 1, so the cross-attention output
      is ``W_o(W_v f + b_v) + b_o`` for every query; the self-attention block, which never sees images,
      is computed once when the text is shared. In training, dropout drops that weight per (query, key) and
      head, as ``nn.MultiheadAttention`` does: a head's whole value is kept (scaled by 1/(1-p)) or dropped for
      each (image, class) pair.
    Returns the correction ``v`` with the text's shape broadcast to (B, C, D) for per-image context.
    """

    def __init__(self, dim: int, heads: int = 1, ffn: int = ORIGINAL_FFN, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: Tensor, image: Tensor, mask: Tensor | None, context: str) -> Tensor:
        q = text if text.ndim == 3 else text[None]
        x = self.norms[0](q + self.dropout(self.self_attn(q, q, q, attn_mask=mask, need_weights=False)[0]))
        if context == "batch":
            memory = image[None].expand(x.shape[0], -1, -1)
            attended = self.cross_attn(x, memory, memory, need_weights=False)[0]
        elif context == "image":
            attended = self._single_key_attention(image, x.shape[-2])               # (B, 1 or C, D)
        else:
            raise ValueError(f"unknown VGA context {context!r}")
        x = self.norms[1](x + self.dropout(attended))
        x = self.norms[2](x + self.dropout(self.ffn(x)))
        return x if text.ndim == 3 or context == "image" else x[0]

    def _single_key_attention(self, image: Tensor, n_queries: int) -> Tensor:
        """Cross-attention output when ``image`` (B, D) is each of ``n_queries`` queries' only key/value: the
        weight is 1, so (B, 1, D) without dropout; in training each (image, query, head) weight is dropped with
        probability p (else 1/(1-p)), giving (B, n_queries, D)."""
        a, d = self.cross_attn, image.shape[-1]
        value = F.linear(image, a.in_proj_weight[2 * d:], None if a.in_proj_bias is None else a.in_proj_bias[2 * d:])
        p = a.dropout
        if not self.training or p == 0:
            return a.out_proj(value)[:, None]
        h = a.num_heads
        # out_proj(concat_h w_h v_h) = sum_h w_h (W_o[:, head h] v_h) + b_o, with w_h the dropped weight
        per_head = torch.einsum("bhk,dhk->bhd", value.view(-1, h, d // h), a.out_proj.weight.view(d, h, d // h))
        weights = torch.empty(image.shape[0], n_queries, h, device=image.device, dtype=value.dtype).bernoulli_(1 - p)
        attended = torch.einsum("bch,bhd->bcd", weights / (1 - p), per_head)
        return attended if a.out_proj.bias is None else attended + a.out_proj.bias


def task_block_mask(task_sizes: list[int], device) -> Tensor:
    """Self-attention mask: a class query attends only to classes of its own task (True = blocked)."""
    owner = torch.repeat_interleave(torch.arange(len(task_sizes), device=device),
                                    torch.tensor(task_sizes, device=device))
    return owner[:, None] != owner[None, :]


class VariationalHead(nn.Module):
    """One task's distribution encoder on class features: mu = W_mu t + b, and (if variational)
    sigma = 0.999 softplus(W_sigma t + b) + 0.001, as in CLAP4CLIP (a single Linear each). With ``norm``
    each Linear has its own LayerNorm in front (``LayerNorm -> Linear``), as in CLAP4CLIP's CoOp and MaPLe
    variants (``coop_variational.py``/``maple_variational.py``'s ``Adapter``)."""

    def __init__(self, dim: int, variational: bool = True, norm: bool = False):
        super().__init__()
        self.mu = nn.Linear(dim, dim)
        self.sigma = nn.Linear(dim, dim) if variational else None
        self.mu_norm = nn.LayerNorm(dim) if norm else None
        self.sigma_norm = nn.LayerNorm(dim) if norm and variational else None

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor | None]:
        mu = self.mu(t if self.mu_norm is None else self.mu_norm(t))
        if self.sigma is None:
            return mu, None
        s = self.sigma(t if self.sigma_norm is None else self.sigma_norm(t))
        return mu, 0.999 * F.softplus(s) + 0.001

    @torch.no_grad()
    def language_init(self, mean: Tensor, var: Tensor | None) -> None:
        """Language-aware initialisation: W_mu = T^T T / C from template means, W_sigma = V^T V / C from
        template variances (biases keep their default init). Without a variance (one template per class,
        where it is undefined; CLAP4CLIP produced NaN there) W_sigma keeps its default init."""
        self.mu.weight.copy_(mean.T @ mean / mean.shape[0])
        if self.sigma is not None and var is not None:
            self.sigma.weight.copy_(var.T @ var / var.shape[0])


def template_statistics(features: Tensor, owner: Tensor, n_classes: int) -> tuple[Tensor, Tensor | None]:
    """Per class, the mean and the unbiased variance of its (L2-normalised) template features.

    ``features`` (N, D) and ``owner`` (N,) the class of each row. The variance is ``None`` when some
    class has a single template (undefined)."""
    counts = torch.zeros(n_classes, device=features.device).index_add_(0, owner, torch.ones_like(owner, dtype=features.dtype))
    total = torch.zeros(n_classes, features.shape[1], device=features.device).index_add_(0, owner, features)
    mean = total / counts[:, None]
    if bool((counts < 2).any()):
        return mean, None
    sq = torch.zeros_like(total).index_add_(0, owner, (features - mean[owner]) ** 2)
    return mean, sq / (counts[:, None] - 1)


def gaussian_kl(mu: Tensor, sigma: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over the feature dimension, averaged over the rest
    (CLAP4CLIP: ``kl_divergence(q, p).mean(0).sum()``)."""
    kl = 0.5 * (sigma ** 2 + mu ** 2 - 1) - torch.log(sigma)
    return kl.sum(-1).mean()
