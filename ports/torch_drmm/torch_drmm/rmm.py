"""The shallow Rendering Mixture Model in PyTorch (SPEC §1, §4).

``I = a T_g mu_{c,m} + noise``; position ``g = (row, col)`` on the grid of positions (side
``H + 2q - k + 1``) puts the template's top-left corner at pixel ``(row - q, col - q)``: rendering is
``conv_transpose2d`` of a one-hot map, and the evidence for switching a template on is

    u[n, c, m, g] = conv2d(I, mu / sigma^2, q) - conv2d(1, mu^2, q) / (2 sigma^2) + ln(pi_on / pi_off)

(the clipped squared norm at padded positions). Max-sum: ``kappa(I) + beta_c + max_{m,g}[ln pi_g + relu(u)]``
with ``kappa(I) = -||I||^2 / (2 sigma^2) - (D/2) ln(2 pi sigma^2)`` and ``beta_c = ln pi_c + ln pi_off,c - ln M``;
the DCN scores leave ``kappa(I)`` out. Window form (``pool = p``): one model per ``p x p`` window of the grid,
``ln pi_{g | r}``, results with extra axes ``(Rh, Rw)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["RMM"]


class RMM:
    """An RMM from the adapter's dict (templates ``(K, M, C, k, k)``, priors, ``sigma2``, geometry)."""

    def __init__(self, d: dict, dtype=torch.float64):
        t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
        self.mu = t(d["templates"])
        self.K, self.M, self.C, self.k, _ = self.mu.shape
        self.pi_c, self.pi_on = t(d["class_prior"]), t(d["switch_prior"])
        self.s2 = float(d["sigma2"])
        self.H, self.W = (int(v) for v in d["image_shape"])
        self.q = int(d.get("padding", 0))
        self.pool = d.get("pool")
        self.Hg, self.Wg = self.H + 2 * self.q - self.k + 1, self.W + 2 * self.q - self.k + 1
        self.nuisance = None if d.get("nuisance_prior") is None else t(d["nuisance_prior"])
        self.D = self.C * self.H * self.W

    # -- terms ----------------------------------------------------------------------------------
    def filters(self):
        return self.mu.reshape(self.K * self.M, self.C, self.k, self.k)

    def clipped_norms(self):
        ones = torch.ones(1, self.C, self.H, self.W, dtype=self.mu.dtype)
        return F.conv2d(ones, self.filters() ** 2, padding=self.q).view(self.K, self.M, self.Hg, self.Wg)

    def log_odds(self):
        return torch.log(self.pi_on) - torch.log1p(-self.pi_on)

    def evidence(self, images):
        conv = F.conv2d(images, self.filters() / self.s2, padding=self.q).view(-1, self.K, self.M, self.Hg, self.Wg)
        return conv - self.clipped_norms() / (2 * self.s2) + self.log_odds().view(self.K, 1, 1, 1)

    def log_position_prior(self):
        """``ln pi_g`` (global) or ``ln pi_{g | r}`` (window form), shape (Hg, Wg)."""
        if self.nuisance is None:
            count = self.Hg * self.Wg if self.pool is None else self.pool ** 2
            return torch.full((self.Hg, self.Wg), -math.log(count), dtype=self.mu.dtype)
        prior = self.nuisance
        if self.pool is not None:
            p = self.pool
            mass = prior.view(self.Hg // p, p, self.Wg // p, p).sum(dim=(1, 3))
            prior = prior / mass.repeat_interleave(p, 0).repeat_interleave(p, 1)
        return torch.log(prior)

    def kappa(self, images):
        return -(images ** 2).sum(dim=(1, 2, 3)) / (2 * self.s2) - 0.5 * self.D * math.log(2 * math.pi * self.s2)

    def beta(self):
        return torch.log(self.pi_c) + torch.log1p(-self.pi_on) - math.log(self.M)

    def regions(self, x):
        """``(..., M, Hg, Wg) -> (..., Rh, Rw, M*S)``: each model's (sub-template, position) candidates, m-major,
        positions row-major inside the window (or over the whole grid)."""
        lead = x.shape[:-3]
        m = x.shape[-3]
        if self.pool is None:
            return x.reshape(*lead, 1, 1, m * self.Hg * self.Wg)
        p = self.pool
        nl = len(lead)
        b = x.reshape(*lead, m, self.Hg // p, p, self.Wg // p, p)
        b = b.permute(*range(nl), nl + 1, nl + 3, nl, nl + 2, nl + 4)
        return b.reshape(*lead, self.Hg // p, self.Wg // p, m * p * p)

    def _squeeze(self, x, axis):
        return x.squeeze(axis + 1).squeeze(axis) if self.pool is None else x

    # -- model ----------------------------------------------------------------------------------
    def render(self, classes, latents):
        b = classes.shape[0]
        hot = torch.zeros(b, self.K * self.M, self.Hg, self.Wg, dtype=self.mu.dtype)
        ch = classes * self.M + latents["subtemplates"]
        rows, cols = latents["positions"][:, 0], latents["positions"][:, 1]
        hot[torch.arange(b), ch, rows, cols] = latents["switches"].to(self.mu.dtype)
        return F.conv_transpose2d(hot, self.filters(), padding=self.q)

    def log_joint(self, images, classes, latents):
        resid = ((images - self.render(classes, latents)) ** 2).sum(dim=(1, 2, 3))
        logpos = self.log_position_prior()[latents["positions"][:, 0], latents["positions"][:, 1]]
        a = latents["switches"].to(self.mu.dtype)
        pi = self.pi_on[classes]
        return (-resid / (2 * self.s2) - 0.5 * self.D * math.log(2 * math.pi * self.s2) + torch.log(self.pi_c[classes])
                - math.log(self.M) + logpos + a * torch.log(pi) + (1 - a) * torch.log1p(-pi))

    def dcn_scores(self, images):
        """The DCN: conv -> + b -> relu -> + ln pi_g -> maxout over m -> max over positions / windows -> + beta_c."""
        h = torch.relu(self.evidence(images)) + self.log_position_prior()
        return self._squeeze(self.regions(h).amax(dim=-1), 2) + self.beta().view(
            self.K, *([1, 1] if self.pool is not None else []))

    def max_sum_scores(self, images):
        kappa = self.kappa(images).view(-1, 1, *([1, 1] if self.pool is not None else []))
        return self.dcn_scores(images) + kappa

    def map_estimate(self, images, classes=None):
        """Max-sum MAP; ties: first class, switched-on only if strictly better, first (m, position) in window order."""
        logpos = self.log_position_prior()
        on_terms = self.regions(self.evidence(images) + logpos)  # (N, K, Rh, Rw, M*S)
        off_terms = self.regions(logpos.view(1, self.Hg, self.Wg))  # (Rh, Rw, S)
        best_on, idx_on = on_terms.max(dim=-1)
        best_off, idx_off = off_terms.max(dim=-1)
        on = best_on > best_off
        best = torch.where(on, best_on, best_off)
        index = torch.where(on, idx_on, idx_off.expand_as(idx_on))
        scores = best + self.kappa(images).view(-1, 1, 1, 1) + self.beta().view(1, self.K, 1, 1)
        n = images.shape[0]
        cls = scores.argmax(dim=1) if classes is None else classes.view(n, 1, 1).expand(n, *scores.shape[2:])
        pick = lambda x: torch.gather(x, 1, cls.unsqueeze(1)).squeeze(1)  # noqa: E731
        score, flat, a = pick(scores), pick(index), pick(on.to(torch.int64))
        s = on_terms.shape[-1] // self.M
        sub, cell = flat // s, flat % s
        if self.pool is None:
            rows, cols = cell // self.Wg, cell % self.Wg
        else:
            p = self.pool
            rh, rw = cell.shape[-2:]
            rows = torch.arange(rh).view(1, rh, 1) * p + cell // p
            cols = torch.arange(rw).view(1, 1, rw) * p + cell % p
        pos = torch.stack([rows, cols], dim=-1)
        if self.pool is None:
            return cls[:, 0, 0], sub[:, 0, 0], pos[:, 0, 0], a[:, 0, 0], score[:, 0, 0]
        return cls, sub, pos, a, score

    def posterior(self, images, classes=None):
        """``p(c, m, g | I)``, ``p(c, m, g, a = 1 | I)`` and ``ln p(I)`` (or ``ln p(I, y)`` when clamped)."""
        prior = self.beta().view(self.K, 1, 1, 1) + self.log_position_prior()
        ell_on = self.evidence(images) + prior
        ell = torch.logaddexp(ell_on, prior.expand_as(ell_on))
        if classes is not None:
            keep = torch.arange(self.K).view(1, self.K) == classes.view(-1, 1)
            mask = torch.where(keep, 0.0, -math.inf).to(ell.dtype).view(-1, self.K, 1, 1, 1)
            ell, ell_on = ell + mask, ell_on + mask
        r = self.regions(ell)  # (N, K, Rh, Rw, M*S)
        lse = torch.logsumexp(r, dim=(1, 4))  # (N, Rh, Rw)
        lse_full = self._expand(lse)
        resp, resp_on = torch.exp(ell - lse_full), torch.exp(ell_on - lse_full)
        log_ev = lse + self.kappa(images).view(-1, 1, 1)
        return resp, resp_on, (log_ev[:, 0, 0] if self.pool is None else log_ev)

    def _expand(self, per_region):
        """``(N, Rh, Rw) -> (N, 1, 1, Hg, Wg)``: a per-model value on every position of the model."""
        n = per_region.shape[0]
        if self.pool is None:
            return per_region.view(n, 1, 1, 1, 1)
        p = self.pool
        return per_region.repeat_interleave(p, 1).repeat_interleave(p, 2).view(n, 1, 1, self.Hg, self.Wg)

    # -- EM -------------------------------------------------------------------------------------
    def e_step(self, images, labels=None, hard=False):
        if not hard:
            return self.posterior(images, labels)
        cls, sub, pos, a, score = self.map_estimate(images, labels)
        n = images.shape[0]
        resp = torch.zeros(n, self.K, self.M, self.Hg, self.Wg, dtype=self.mu.dtype)
        resp[torch.arange(n), cls, sub, pos[:, 0], pos[:, 1]] = 1.0
        return resp, resp * a.view(n, 1, 1, 1, 1).to(resp.dtype), score

    def m_step(self, images, resp, resp_on, prior_floor=1e-6, empty_tol=1e-12):
        """Closed-form M-step (SPEC §1): per-pixel template means, sigma^2 with the new templates, floored priors."""
        n = images.shape[0]
        km = self.K * self.M
        r1 = resp_on.reshape(n, km, self.Hg, self.Wg)
        wshape = (km, self.C, self.k, self.k)
        num = torch.nn.grad.conv2d_weight(images, wshape, r1, padding=self.q)
        ones = torch.ones(1, self.C, self.H, self.W, dtype=images.dtype)
        mass = r1.sum(dim=0, keepdim=True)
        den = torch.nn.grad.conv2d_weight(ones, wshape, mass, padding=self.q)
        ok = den > empty_tol * n
        mu = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), self.filters())
        total = (images ** 2).sum()
        sse = total - 2 * (mu * num).sum() + (mass * F.conv2d(ones, mu ** 2, padding=self.q)).sum()
        sigma2 = max(float(sse) / (n * self.D), max(1e-6 * float(total) / (n * self.D), 1e-12))
        counts = resp.sum(dim=(0, 2, 3, 4))
        pi_c = _floored_simplex(counts, prior_floor)
        pi_on = min(max(float(r1.sum()) / n, prior_floor), 1 - prior_floor)
        return {"templates": mu.view(self.K, self.M, self.C, self.k, self.k), "class_prior": pi_c,
                "switch_prior": torch.full((self.K,), pi_on, dtype=images.dtype),
                "sigma2": torch.tensor(sigma2, dtype=torch.float64)}


def _floored_simplex(counts: torch.Tensor, floor: float) -> torch.Tensor:
    """``argmax sum_c counts_c ln pi_c`` with ``pi_c >= floor``: water-filling."""
    clamped = torch.zeros_like(counts, dtype=torch.bool)
    pi = counts / counts.sum()
    for _ in range(counts.numel() + 1):
        free = counts[~clamped].sum()
        pi = torch.where(clamped, torch.full_like(counts, floor), counts * (1 - floor * clamped.sum()) / free)
        new = (~clamped) & (pi < floor)
        if not bool(new.any()):
            break
        clamped |= new
    return pi / pi.sum()
