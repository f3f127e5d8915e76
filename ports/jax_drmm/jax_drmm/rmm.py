"""The shallow Rendering Mixture Model in JAX (SPEC §1, §4).

Position ``g = (row, col)`` on the grid of positions (side ``H + 2q - k + 1``) puts the template's
top-left corner at pixel ``(row - q, col - q)``. With ``u = conv2d(I, mu / s2, q) - conv2d(1, mu^2, q) / (2 s2)
+ ln(pi_on / pi_off)``: max-sum scores ``kappa(I) + beta_c + max_{m,g} [ln pi_g + relu(u)]``, DCN scores
the same without ``kappa(I) = -||I||^2 / (2 s2) - (D/2) ln(2 pi s2)``, ``beta_c = ln pi_c + ln pi_off,c - ln M``.
Window form (``pool = p``): one model per ``p x p`` window, ``ln pi_{g | r}``, extra result axes ``(Rh, Rw)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .core import conv2d, conv2d_transpose

__all__ = ["RMM"]


class RMM:
    def __init__(self, d: dict):
        self.mu = jnp.asarray(d["templates"], dtype=jnp.float64)
        self.K, self.M, self.C, self.k, _ = self.mu.shape
        self.pi_c = jnp.asarray(d["class_prior"], dtype=jnp.float64)
        self.pi_on = jnp.asarray(d["switch_prior"], dtype=jnp.float64)
        self.s2 = float(d["sigma2"])
        self.H, self.W = (int(v) for v in d["image_shape"])
        self.q = int(d.get("padding", 0))
        self.pool = d.get("pool")
        self.Hg, self.Wg = self.H + 2 * self.q - self.k + 1, self.W + 2 * self.q - self.k + 1
        self.nuisance = None if d.get("nuisance_prior") is None else jnp.asarray(d["nuisance_prior"])
        self.D = self.C * self.H * self.W

    def filters(self, mu=None):
        mu = self.mu if mu is None else mu
        return mu.reshape(self.K * self.M, self.C, self.k, self.k)

    def ones(self):
        return jnp.ones((1, self.C, self.H, self.W))

    def evidence(self, images):
        conv = conv2d(images, self.filters() / self.s2, self.q).reshape(-1, self.K, self.M, self.Hg, self.Wg)
        norms = conv2d(self.ones(), self.filters() ** 2, self.q).reshape(self.K, self.M, self.Hg, self.Wg)
        logodds = jnp.log(self.pi_on) - jnp.log1p(-self.pi_on)
        return conv - norms / (2 * self.s2) + logodds[:, None, None, None]

    def log_position_prior(self):
        if self.nuisance is None:
            count = self.Hg * self.Wg if self.pool is None else self.pool ** 2
            return jnp.full((self.Hg, self.Wg), -math.log(count))
        prior = self.nuisance
        if self.pool is not None:
            p = self.pool
            mass = prior.reshape(self.Hg // p, p, self.Wg // p, p).sum(axis=(1, 3))
            prior = prior / jnp.repeat(jnp.repeat(mass, p, axis=0), p, axis=1)
        return jnp.log(prior)

    def kappa(self, images):
        return -jnp.sum(images ** 2, axis=(1, 2, 3)) / (2 * self.s2) - 0.5 * self.D * math.log(2 * math.pi * self.s2)

    def beta(self):
        return jnp.log(self.pi_c) + jnp.log1p(-self.pi_on) - math.log(self.M)

    def regions(self, x):
        """``(..., M, Hg, Wg) -> (..., Rh, Rw, M*S)``, m-major, positions row-major within the window."""
        lead, m = x.shape[:-3], x.shape[-3]
        if self.pool is None:
            return x.reshape(*lead, 1, 1, m * self.Hg * self.Wg)
        p, nl = self.pool, len(lead)
        b = x.reshape(*lead, m, self.Hg // p, p, self.Wg // p, p)
        b = b.transpose(*range(nl), nl + 1, nl + 3, nl, nl + 2, nl + 4)
        return b.reshape(*lead, self.Hg // p, self.Wg // p, m * p * p)

    def _out(self, x):
        return x[:, :, 0, 0] if self.pool is None else x

    def render(self, classes, latents):
        b = classes.shape[0]
        ch = classes * self.M + latents["subtemplates"]
        hot = jnp.zeros((b, self.K * self.M, self.Hg, self.Wg))
        hot = hot.at[jnp.arange(b), ch, latents["positions"][:, 0], latents["positions"][:, 1]].set(
            latents["switches"].astype(jnp.float64))
        return conv2d_transpose(hot, self.filters(), self.q)

    def log_joint(self, images, classes, latents):
        resid = jnp.sum((images - self.render(classes, latents)) ** 2, axis=(1, 2, 3))
        logpos = self.log_position_prior()[latents["positions"][:, 0], latents["positions"][:, 1]]
        a = latents["switches"].astype(jnp.float64)
        pi = self.pi_on[classes]
        return (-resid / (2 * self.s2) - 0.5 * self.D * math.log(2 * math.pi * self.s2) + jnp.log(self.pi_c[classes])
                - math.log(self.M) + logpos + a * jnp.log(pi) + (1 - a) * jnp.log1p(-pi))

    def dcn_scores(self, images):
        h = jax.nn.relu(self.evidence(images)) + self.log_position_prior()
        return self._out(jnp.max(self.regions(h), axis=-1) + self.beta()[None, :, None, None])

    def max_sum_scores(self, images):
        kappa = self.kappa(images)
        return self.dcn_scores(images) + (kappa[:, None] if self.pool is None else kappa[:, None, None, None])

    def map_estimate(self, images, classes=None):
        logpos = self.log_position_prior()
        on_terms = self.regions(self.evidence(images) + logpos)  # (N, K, Rh, Rw, M*S)
        off_terms = self.regions(logpos[None])  # (Rh, Rw, S)
        idx_on = jnp.argmax(on_terms, axis=-1)
        best_on = jnp.take_along_axis(on_terms, idx_on[..., None], axis=-1)[..., 0]
        idx_off = jnp.argmax(off_terms, axis=-1)
        best_off = jnp.max(off_terms, axis=-1)
        on = best_on > best_off
        best = jnp.where(on, best_on, best_off)
        index = jnp.where(on, idx_on, idx_off)
        scores = best + self.kappa(images)[:, None, None, None] + self.beta()[None, :, None, None]
        n = images.shape[0]
        cls = jnp.argmax(scores, axis=1) if classes is None else jnp.broadcast_to(classes[:, None, None],
                                                                                   (n,) + scores.shape[2:])
        pick = lambda x: jnp.take_along_axis(x, cls[:, None], axis=1)[:, 0]  # noqa: E731
        score, flat, a = pick(scores), pick(index), pick(on.astype(jnp.int64))
        s = on_terms.shape[-1] // self.M
        sub, cell = flat // s, flat % s
        if self.pool is None:
            rows, cols = cell // self.Wg, cell % self.Wg
        else:
            p = self.pool
            rh, rw = cell.shape[-2:]
            rows = jnp.arange(rh)[None, :, None] * p + cell // p
            cols = jnp.arange(rw)[None, None, :] * p + cell % p
        pos = jnp.stack([rows, cols], axis=-1)
        if self.pool is None:
            return cls[:, 0, 0], sub[:, 0, 0], pos[:, 0, 0], a[:, 0, 0], score[:, 0, 0]
        return cls, sub, pos, a, score

    def posterior(self, images, classes=None):
        prior = self.beta()[:, None, None, None] + self.log_position_prior()
        ell_on = self.evidence(images) + prior
        ell = jnp.logaddexp(ell_on, prior)
        if classes is not None:
            keep = jnp.arange(self.K)[None, :] == classes[:, None]
            mask = jnp.where(keep, 0.0, -jnp.inf)[:, :, None, None, None]
            ell, ell_on = ell + mask, ell_on + mask
        lse = logsumexp(self.regions(ell), axis=(1, 4))  # (N, Rh, Rw)
        if self.pool is None:
            full = lse[:, :, :, None, None]
        else:
            p = self.pool
            full = jnp.repeat(jnp.repeat(lse, p, axis=1), p, axis=2)[:, None, None]
        log_ev = lse + self.kappa(images)[:, None, None]
        return jnp.exp(ell - full), jnp.exp(ell_on - full), (log_ev[:, 0, 0] if self.pool is None else log_ev)

    def e_step(self, images, labels=None, hard=False):
        """Soft: the posterior; hard: the one-hot MAP (and its switch), with ``ln p(I, z)`` per example."""
        return self.map_estimate_one_hot(images, labels) if hard else self.posterior(images, labels)

    def map_estimate_one_hot(self, images, labels=None):
        cls, sub, pos, a, score = self.map_estimate(images, labels)
        n = images.shape[0]
        resp = jnp.zeros((n, self.K, self.M, self.Hg, self.Wg))
        resp = resp.at[jnp.arange(n), cls, sub, pos[:, 0], pos[:, 1]].set(1.0)
        return resp, resp * a[:, None, None, None, None], score

    def _m_sums(self, images, resp, resp_on, empty_tol):
        """The M-step's sums (traceable): new templates, squared error, ||I||^2, class counts, switched-on mass."""
        n = images.shape[0]
        km = self.K * self.M
        r1 = resp_on.reshape(n, km, self.Hg, self.Wg)
        zero_w = jnp.zeros((km, self.C, self.k, self.k))

        def weight_vjp(x, g):  # sum_{n,g} g[n, ., g] * patch of x at g: the conv's weight cotangent
            return jax.vjp(lambda w: conv2d(x, w, self.q), zero_w)[1](g)[0]

        num = weight_vjp(images, r1)
        mass = jnp.sum(r1, axis=0, keepdims=True)
        den = weight_vjp(self.ones(), mass)
        ok = den > empty_tol * n
        mu = jnp.where(ok, num / jnp.where(ok, den, 1.0), self.filters())
        total = jnp.sum(images ** 2)
        sse = total - 2 * jnp.sum(mu * num) + jnp.sum(mass * conv2d(self.ones(), mu ** 2, self.q))
        return mu, sse, total, jnp.sum(resp, axis=(0, 2, 3, 4)), jnp.sum(r1)

    def m_step(self, images, resp, resp_on, prior_floor=1e-6, empty_tol=1e-12):
        """Closed-form M-step (SPEC §1): per-pixel template means, sigma^2 with the new templates, floored priors."""
        n = images.shape[0]
        mu, sse, total, counts, on_mass = jax.jit(self._m_sums, static_argnums=3)(images, resp, resp_on, empty_tol)
        sigma2 = max(float(sse) / (n * self.D), max(1e-6 * float(total) / (n * self.D), 1e-12))
        pi_c = counts / jnp.sum(counts)
        if bool(jnp.any(pi_c < prior_floor)):  # water-filling onto the floor
            clamped = jnp.zeros(self.K, dtype=bool)
            for _ in range(self.K + 1):
                free = jnp.sum(jnp.where(clamped, 0.0, counts))
                pi_c = jnp.where(clamped, prior_floor, counts * (1 - prior_floor * jnp.sum(clamped)) / free)
                new = (~clamped) & (pi_c < prior_floor)
                if not bool(jnp.any(new)):
                    break
                clamped = clamped | new
            pi_c = pi_c / jnp.sum(pi_c)
        pi_on = min(max(float(on_mass) / n, prior_floor), 1 - prior_floor)
        return {"templates": mu.reshape(self.K, self.M, self.C, self.k, self.k), "class_prior": pi_c,
                "switch_prior": jnp.full((self.K,), pi_on), "sigma2": jnp.asarray(sigma2)}
