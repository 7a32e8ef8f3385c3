"""CGIL's class-conditional generators of image embeddings, fitted for all of a task's classes at once.

Mammoth (``models/cgil_utils/vae.py``, ``generative_replay.py``) keeps one generator per class and fits them one
after the other (500 epochs of a small VAE per class). Here the C classes of a task are one *batched* model: every
weight has a leading class axis, each layer is one batched matmul (``torch.baddbmm``), and a training step updates
the C VAEs together. Each class keeps its own optimiser state, step count, shuffling and noise (a generator per
class seeded by the run's seed and the class), so the batched fit computes what C separate fits compute (tested);
a class whose epoch has fewer batches (unequal class sizes) or whose batch holds a single item (mammoth skips those)
is masked out of that step, its Adam state untouched.

Three kinds (``--cgil_generator``):

- ``vae`` (mammoth's default): per class, features min-max scaled to [0, 1] then standardised per dimension
  (unbiased std), both stored; encoder Linear(D, H)-BN-LeakyReLU(0.2)-Linear(H, H)-BN-LeakyReLU(0.2)-Linear(H, 2Z),
  decoder Linear(Z, H)-LeakyReLU-Linear(H, H)-LeakyReLU-Linear(H, D); loss = [sum of the unit-variance Gaussian NLL
  (``full=True``) + KL] / batch; Adam (``--lr_vae``), batches of 64 shuffled per epoch, ``--gr_vae_n_iters`` epochs,
  ``CosineAnnealingWarmRestarts(T_0 = epochs // 10, T_mult = 2)`` stepped per epoch. The reparameterisation is
  mammoth's ``z = mu + eps * exp(logvar)`` (``--gr_vae_reparam anchor``; ``standard``: ``exp(logvar / 2)``).
  After the fit only the decoder and the normalisation statistics are kept.
- ``gauss``: a diagonal Gaussian per class (mean and unbiased std).
- ``mog``: a diagonal Gaussian mixture per class (``--gr_mog_n_components``), k-means initialisation, EM for at most
  ``--gr_mog_n_iters`` iterations (a class stops when its mean log-likelihood gains less than 1e-3).
- ``real``: not a generator and not the paper's: the class's real embeddings themselves, drawn with replacement
  (feature rehearsal). The upper bound of every generator: what the alignment reaches with perfect samples.

Every kept generator is a module of buffers (nothing in it trains after its fit), so checkpoints hold it and
``--resume`` continues exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GENERATORS = ("vae", "gauss", "mog", "real")
REPARAM = ("anchor", "standard")
VAE_BATCH = 64                       # mammoth's DataLoader batch size for the VAE fit
LOG_2PI = math.log(2 * math.pi)
BN_EPS = 1e-5


def class_generator(seed: int, label: int, salt: int = 0) -> torch.Generator:
    """The randomness of one class's fit: the same whether its task's classes are fitted together or alone."""
    return torch.Generator().manual_seed((seed * 1_000_003 + label * 7919 + salt) % (2 ** 63))


def warm_restart_lrs(lr: float, epochs: int) -> list[float]:
    """The lr of each epoch under torch's ``CosineAnnealingWarmRestarts(T_0 = epochs // 10, T_mult = 2)`` stepped
    once per epoch (mammoth's VAE schedule; T_0 is at least 1)."""
    t0 = max(1, epochs // 10)
    out = []
    for e in range(epochs):
        n = int(math.log2(e / t0 + 1))
        t_cur, t_i = e - t0 * (2 ** n - 1), t0 * 2 ** n
        out.append(lr * (1 + math.cos(math.pi * t_cur / t_i)) / 2)
    return out


# ---- the batched VAE ------------------------------------------------------------------------------------------

def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """(C, B, in) x (C, in, out) + (C, out): C independent linear layers."""
    return torch.baddbmm(b.unsqueeze(1), x, w)


def _batch_norm(x: Tensor, gamma: Tensor, beta: Tensor, mask: Tensor | None, count: Tensor) -> Tensor:
    """Training-mode BatchNorm1d per class over its valid items (biased variance, eps 1e-5)."""
    if mask is None:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
    else:
        m = mask.unsqueeze(-1)
        mean = (x * m).sum(1, keepdim=True) / count
        var = ((x - mean).pow(2) * m).sum(1, keepdim=True) / count
        # padding (and a class with no item this step) stays at zero, so nothing it computes can overflow
        return ((x - mean) * torch.rsqrt(var + BN_EPS) * gamma.unsqueeze(1) + beta.unsqueeze(1)) * m
    return (x - mean) * torch.rsqrt(var + BN_EPS) * gamma.unsqueeze(1) + beta.unsqueeze(1)


ENCODER = ("e0.w", "e0.b", "bn0.g", "bn0.b", "e1.w", "e1.b", "bn1.g", "bn1.b", "e2.w", "e2.b")
DECODER = ("d0.w", "d0.b", "d1.w", "d1.b", "d2.w", "d2.b")


def init_vae(n: int, dim: int, hidden: int, latent: int, gens: list[torch.Generator]) -> dict[str, Tensor]:
    """Weights of ``n`` VAEs as torch's ``nn.Linear`` default draws them (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
    weights and biases), each class from its own generator; BatchNorm gamma 1, beta 0."""
    shapes = {"e0": (dim, hidden), "e1": (hidden, hidden), "e2": (hidden, 2 * latent),
              "d0": (latent, hidden), "d1": (hidden, hidden), "d2": (hidden, dim)}
    params: dict[str, list[Tensor]] = {}
    for g in gens:
        for name, (fan_in, fan_out) in shapes.items():
            bound = 1 / math.sqrt(fan_in)
            params.setdefault(f"{name}.w", []).append((torch.rand(fan_out, fan_in, generator=g) * 2 - 1).mul_(bound).T)
            params.setdefault(f"{name}.b", []).append((torch.rand(fan_out, generator=g) * 2 - 1).mul_(bound))
    out = {k: torch.stack(v).contiguous() for k, v in params.items()}
    for i in (0, 1):
        out[f"bn{i}.g"] = torch.ones(n, hidden)
        out[f"bn{i}.b"] = torch.zeros(n, hidden)
    return out


def decode(p: dict[str, Tensor], z: Tensor) -> Tensor:
    h = F.leaky_relu(_linear(z, p["d0.w"], p["d0.b"]), 0.2)
    h = F.leaky_relu(_linear(h, p["d1.w"], p["d1.b"]), 0.2)
    return _linear(h, p["d2.w"], p["d2.b"])


def vae_loss(p: dict[str, Tensor], x: Tensor, eps: Tensor, mask: Tensor | None, reparam: str = "anchor") -> Tensor:
    """Sum over classes of mammoth's per-class ELBO / batch: ``x`` (C, B, D) normalised features, ``eps`` (C, B, Z)
    the reparameterisation noise, ``mask`` (C, B) which items are real (``None``: all)."""
    count = (mask.sum(1) if mask is not None else torch.full((x.shape[0],), float(x.shape[1]), device=x.device))
    cnt = count.clamp(min=1).view(-1, 1, 1)
    h = F.leaky_relu(_batch_norm(_linear(x, p["e0.w"], p["e0.b"]), p["bn0.g"], p["bn0.b"], mask, cnt), 0.2)
    h = F.leaky_relu(_batch_norm(_linear(h, p["e1.w"], p["e1.b"]), p["bn1.g"], p["bn1.b"], mask, cnt), 0.2)
    mu, logvar = _linear(h, p["e2.w"], p["e2.b"]).chunk(2, dim=-1)
    std = logvar.exp() if reparam == "anchor" else (0.5 * logvar).exp()
    rec = decode(p, eps * std + mu)
    nll = 0.5 * (LOG_2PI + (x - rec).pow(2))                     # gaussian_nll_loss(var=1, full=True)
    kl = 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar)
    if mask is not None:
        nll, kl = nll * mask.unsqueeze(-1), kl * mask.unsqueeze(-1)
    per_class = (nll.sum((1, 2)) + kl.sum((1, 2))) / count.clamp(min=1)
    return per_class.sum() if mask is None else (per_class * (count > 0)).sum()


class BatchedAdam:
    """torch's Adam (default betas and eps, no weight decay; its single-tensor update) on class-stacked tensors,
    with a step count per class: a class outside ``active`` keeps its weights and moments, as if its own
    optimiser had not stepped."""

    def __init__(self, params: dict[str, Tensor], n: int, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.betas, self.eps = params, betas, eps
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}
        self.steps = torch.zeros(n, dtype=torch.float64)

    @torch.no_grad()
    def step(self, lr: float, active: Tensor | None = None) -> None:
        b1, b2 = self.betas
        if active is None:
            self.steps += 1
        else:
            self.steps += active.double().cpu()
        bc1 = (1 - b1 ** self.steps).float()
        bc2 = (1 - b2 ** self.steps).float()
        sel = None if active is None else active.float()
        for k, p in self.params.items():
            g = p.grad
            shape = (-1,) + (1,) * (p.ndim - 1)
            s1 = bc1.to(p.device).view(shape)
            s2 = bc2.to(p.device).view(shape).sqrt()
            m_new = self.m[k].lerp(g, 1 - b1)
            v_new = self.v[k].mul(b2).addcmul_(g, g, value=1 - b2)
            update = (m_new / s1) * lr / (v_new.sqrt() / s2 + self.eps)
            if sel is None:
                self.m[k], self.v[k] = m_new, v_new
                p.sub_(update)
            else:
                w = sel.view(shape)
                self.m[k] = torch.where(w > 0, m_new, self.m[k])
                self.v[k] = torch.where(w > 0, v_new, self.v[k])
                p.sub_(update * w)


@dataclass
class VaeConfig:
    hidden: int = 512
    latent: int = 256
    epochs: int = 500
    lr: float = 2e-4
    reparam: str = "anchor"


def normalisation_stats(feats: list[Tensor]) -> dict[str, Tensor]:
    """Per class: min, max of the raw features, then mean and unbiased std of the min-max-scaled ones (mammoth's
    ``fit``). A constant dimension (max == min) or a zero std would divide by zero there; here it divides by 1."""
    mins = torch.stack([f.min(0).values for f in feats])
    maxs = torch.stack([f.max(0).values for f in feats])
    rng = torch.where(maxs > mins, maxs - mins, torch.ones_like(maxs))
    scaled = [(f - lo) / r for f, lo, r in zip(feats, mins, rng)]
    mean = torch.stack([s.mean(0) for s in scaled])
    std = torch.stack([s.std(0) if s.shape[0] > 1 else torch.ones_like(s[0]) for s in scaled])
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {"min": mins, "range": rng, "mean": mean, "std": std}


def fit_vaes(feats: list[Tensor], labels: list[int], cfg: VaeConfig, seed: int, device: torch.device,
             progress=None) -> dict[str, Tensor]:
    """Fit one VAE per class (``feats[i]``: (n_i, D) raw features of class ``labels[i]``), all at once; returns the
    decoder weights and normalisation statistics, stacked over the classes (on ``device``)."""
    n, dim = len(feats), feats[0].shape[1]
    gens = [class_generator(seed, label) for label in labels]
    stats = normalisation_stats([f.float().cpu() for f in feats])
    xs = [((f.float().cpu() - stats["min"][i]) / stats["range"][i] - stats["mean"][i]) / stats["std"][i]
          for i, f in enumerate(feats)]
    params = {k: v.to(device).requires_grad_(True) for k, v in init_vae(n, dim, cfg.hidden, cfg.latent, gens).items()}
    opt = BatchedAdam(params, n)
    sizes = [x.shape[0] for x in xs]
    n_steps = [-(-s // VAE_BATCH) for s in sizes]
    equal = len(set(sizes)) == 1 and sizes[0] % VAE_BATCH != 1
    max_steps = max(n_steps)
    data = torch.zeros(n, max(sizes), dim)
    for i, x in enumerate(xs):
        data[i, :x.shape[0]] = x
    data = data.to(device)
    for lr in warm_restart_lrs(cfg.lr, cfg.epochs):
        orders = [torch.randperm(s, generator=g) for s, g in zip(sizes, gens)]
        for j in range(max_steps):
            lo = j * VAE_BATCH
            bsz = [max(0, min(VAE_BATCH, s - lo)) for s in sizes]
            width = max(bsz)
            idx = torch.zeros(n, width, dtype=torch.long)
            for i, o in enumerate(orders):
                idx[i, :bsz[i]] = o[lo:lo + bsz[i]]
            # a class whose batch is one item (or empty) skips this step, as mammoth's ``if len(batch) == 1``; its
            # noise is drawn only for its real items and steps, so its fit is the same alone or batched
            eps = torch.zeros(n, width, cfg.latent)
            for i, (g, b) in enumerate(zip(gens, bsz)):
                if b > 1:
                    eps[i, :b] = torch.randn(b, cfg.latent, generator=g)
            x = torch.gather(data, 1, idx.to(device).unsqueeze(-1).expand(-1, -1, dim))
            active = torch.tensor([b > 1 for b in bsz])
            mask = None if equal else (torch.arange(width).unsqueeze(0) < torch.tensor(bsz).unsqueeze(1)).float()
            if mask is not None:
                mask = (mask * active.unsqueeze(1).float()).to(device)
            for p in params.values():
                p.grad = None
            loss = vae_loss(params, x, eps.to(device), mask, cfg.reparam)
            loss.backward()
            opt.step(lr, None if equal else active.to(device))
        if progress is not None:
            progress()
    kept = {k: params[k].detach() for k in DECODER}
    kept.update({k: v.to(device) for k, v in stats.items()})
    return kept


# ---- kept generators (buffers only) ---------------------------------------------------------------------------

class TaskGenerators(nn.Module):
    """The generators kept for one task's classes; ``sample(n, generator)`` -> (C, n, D) raw features."""

    KIND = ""

    def __init__(self, tensors: dict[str, Tensor]):
        super().__init__()
        for k, v in tensors.items():
            self.register_buffer(k.replace(".", "_"), v.contiguous())

    def tensor(self, name: str) -> Tensor:
        return getattr(self, name.replace(".", "_"))

    @property
    def n_classes(self) -> int:
        return int(next(iter(self.buffers())).shape[0])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    @classmethod
    def shapes(cls, n: int, dim: int, opts) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    @classmethod
    def empty(cls, n: int, dim: int, opts) -> "TaskGenerators":
        """A placeholder of the right shapes (filled by ``load_state_dict`` on resume)."""
        return cls({k: torch.zeros(s) for k, s in cls.shapes(n, dim, opts).items()})

    def bytes_per_class(self) -> int:
        """What is kept per class: every buffer's bytes / classes."""
        return sum(b.numel() * b.element_size() for b in self.buffers()) // self.n_classes


class VaeDecoders(TaskGenerators):
    KIND = "vae"

    @classmethod
    def shapes(cls, n, dim, opts):
        h, z = opts.gr_vae_hidden_dim, opts.gr_vae_latent_dim
        return {"d0.w": (n, z, h), "d0.b": (n, h), "d1.w": (n, h, h), "d1.b": (n, h), "d2.w": (n, h, dim),
                "d2.b": (n, dim), "min": (n, dim), "range": (n, dim), "mean": (n, dim), "std": (n, dim)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        p = {k: self.tensor(k) for k in DECODER}
        latent = p["d0.w"].shape[1]
        z = torch.randn(self.n_classes, n, latent, generator=generator).to(p["d0.w"].device)
        x = decode(p, z)
        x = x * self.tensor("std").unsqueeze(1) + self.tensor("mean").unsqueeze(1)
        return x * self.tensor("range").unsqueeze(1) + self.tensor("min").unsqueeze(1)


class GaussianGenerators(TaskGenerators):
    KIND = "gauss"

    @classmethod
    def shapes(cls, n, dim, opts):
        return {"mean": (n, dim), "std": (n, dim)}

    @classmethod
    def fit(cls, feats: list[Tensor]) -> "GaussianGenerators":
        std_mean = [torch.std_mean(f.float(), dim=0) for f in feats]
        return cls({"mean": torch.stack([m for _, m in std_mean]), "std": torch.stack([s for s, _ in std_mean])})

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        mean, std = self.tensor("mean"), self.tensor("std")
        eps = torch.randn(mean.shape[0], n, mean.shape[1], generator=generator).to(mean.device)
        return mean.unsqueeze(1) + eps * std.unsqueeze(1)


class MixtureGenerators(TaskGenerators):
    KIND = "mog"

    @classmethod
    def shapes(cls, n, dim, opts):
        k = opts.gr_mog_n_components
        return {"pi": (n, k), "mu": (n, k, dim), "var": (n, k, dim)}

    @classmethod
    def fit(cls, feats: list[Tensor], labels: list[int], k: int, n_iters: int, seed: int,
            density: str = "exact") -> "MixtureGenerators":
        pis, mus, vars_ = [], [], []
        for f, label in zip(feats, labels):
            pi, mu, var = fit_mixture(f.float().cpu(), k, n_iters, class_generator(seed, label, salt=1), density)
            pis.append(pi), mus.append(mu), vars_.append(var)
        return cls({"pi": torch.stack(pis), "mu": torch.stack(mus), "var": torch.stack(vars_)})

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        pi, mu, var = self.tensor("pi"), self.tensor("mu"), self.tensor("var")
        comp = torch.multinomial(pi.cpu(), n, replacement=True, generator=generator).to(mu.device)   # (C, n)
        eps = torch.randn(mu.shape[0], n, mu.shape[2], generator=generator).to(mu.device)
        pick = comp.unsqueeze(-1).expand(-1, -1, mu.shape[2])
        return torch.gather(mu, 1, pick) + eps * torch.gather(var, 1, pick).sqrt()


class RealFeatures(TaskGenerators):
    """The real embeddings of each class (padded to the largest class; ``count`` says how many are real)."""
    KIND = "real"

    @classmethod
    def shapes(cls, n, dim, opts):
        raise NotImplementedError("the shapes of real features depend on the class sizes: load them from the state")

    @classmethod
    def fit(cls, feats: list[Tensor]) -> "RealFeatures":
        longest = max(len(f) for f in feats)
        kept = torch.zeros(len(feats), longest, feats[0].shape[1])
        for i, f in enumerate(feats):
            kept[i, :len(f)] = f.float().cpu()
        return cls({"feats": kept, "count": torch.tensor([len(f) for f in feats])})

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        feats, count = self.tensor("feats"), self.tensor("count").cpu()
        pick = (torch.rand(len(count), n, generator=generator) * count.unsqueeze(1)).long().to(feats.device)
        return torch.gather(feats, 1, pick.unsqueeze(-1).expand(-1, -1, feats.shape[2]))

    def bytes_per_class(self) -> int:
        return int(self.tensor("count").float().mean().item() * self.tensor("feats").shape[2]) * 4


def _kmeans_init(x: Tensor, k: int, gen: torch.Generator, tries: int = 50, min_delta: float = 1e-3) -> Tensor:
    """gmm-torch's k-means initialisation: the best of ``tries`` random centre sets (data min-max scaled), then
    Lloyd iterations until the centres move less than ``min_delta``."""
    lo, hi = x.min(), x.max()
    xs = (x - lo) / (hi - lo).clamp(min=1e-12)
    best, best_cost = None, math.inf
    for _ in range(tries):
        centres = xs[torch.randperm(xs.shape[0], generator=gen)[:k]]
        assign = torch.cdist(xs, centres).argmin(1)
        cost = sum(float((xs[assign == c] - centres[c]).norm(dim=1).mean()) if (assign == c).any() else 0.0
                   for c in range(k))
        if cost < best_cost:
            best, best_cost = centres.clone(), cost
    for _ in range(300):
        assign = torch.cdist(xs, best).argmin(1)
        old = best.clone()
        for c in range(k):
            if (assign == c).any():
                best[c] = xs[assign == c].mean(0)
        if float((old - best).norm(dim=1).max()) <= min_delta:
            break
    return best * (hi - lo) + lo


def _diag_log_prob(x: Tensor, mu: Tensor, var: Tensor, density: str) -> Tensor:
    """(n, k) log N(x; mu_k, diag var_k). ``density='anchor'``: mammoth's vendored gmm-torch, which weighs the
    squared distance by rsqrt(var) (1/sigma, not 1/sigma^2) and adds half the log-determinant."""
    d = x.shape[1]
    sq = (x.unsqueeze(1) - mu.unsqueeze(0)).pow(2)
    if density == "anchor":
        prec = torch.rsqrt(var)
        return -0.5 * (d * LOG_2PI + (sq * prec).sum(-1) - torch.log(prec).sum(-1))
    return -0.5 * (d * LOG_2PI + (sq / var).sum(-1) + torch.log(var).sum(-1))


def fit_mixture(x: Tensor, k: int, n_iters: int, gen: torch.Generator, density: str = "exact",
                eps: float = 1e-6, delta: float = 1e-3) -> tuple[Tensor, Tensor, Tensor]:
    """EM for a diagonal Gaussian mixture (gmm-torch's M-step, variance floor ``eps``); stops after ``n_iters``
    iterations or when the mean log-likelihood gains less than ``delta``."""
    k = min(k, x.shape[0])
    mu = _kmeans_init(x, k, gen)
    var = torch.ones(k, x.shape[1])
    pi = torch.full((k,), 1.0 / k)
    previous = -math.inf
    for _ in range(n_iters):
        weighted = _diag_log_prob(x, mu, var, density) + pi.log()
        log_resp = weighted - weighted.logsumexp(1, keepdim=True)
        resp = log_resp.exp().unsqueeze(-1)                       # (n, k, 1)
        mass = resp.sum(0) + eps                                  # (k, 1)
        mu = (resp * x.unsqueeze(1)).sum(0) / mass
        var = (resp * (x.unsqueeze(1) - mu).pow(2)).sum(0) / mass + eps
        pi = (mass / x.shape[0]).squeeze(-1)
        score = float((_diag_log_prob(x, mu, var, density) + pi.log()).logsumexp(1).mean())
        if not math.isfinite(score) or score - previous < delta:
            break
        previous = score
    return pi, mu, var


KINDS: dict[str, type[TaskGenerators]] = {c.KIND: c for c in (VaeDecoders, GaussianGenerators, MixtureGenerators,
                                                               RealFeatures)}
