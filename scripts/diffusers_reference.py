"""Reference trajectories from diffusers' own schedulers, for core/tests/diffusers_conformance.rs.

Each case runs a diffusers scheduler (DDIMScheduler, DDPMScheduler or
DPMSolverMultistepScheduler, with its defaults unless the case names a setting) on the exact
noise prediction of a Gaussian mixture (computed here in float64, independently of ddm's
oracle), from a fixed x_T, and records at every step the sample going in, the model output and
the sample coming out. Stochastic steps draw their noise from a port of ddm's random generator
(PCG32 and Box-Muller, `ddm_core::Rng`), so ddm can replay the same draws; the draws are
recorded too.

Written by scripts/diffusers-reference.sh; rerun it only to change the cases (the output is
committed, the tests never need Python).
"""

import json
import math
import sys

import numpy as np
import torch
import diffusers
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
import diffusers.schedulers.scheduling_ddim as ddim_module
import diffusers.schedulers.scheduling_ddpm as ddpm_module

T = 1000
MASK64 = (1 << 64) - 1


class Rng:
    """ddm_core::Rng: PCG32 (XSH-RR) with Box-Muller normals in f32, pairs cached."""

    MULTIPLIER = 6364136223846793005

    def __init__(self, seed, stream):
        self.state = 0
        self.increment = ((stream << 1) | 1) & MASK64
        self.spare = None
        self.next_u32()
        self.state = (self.state + seed) & MASK64
        self.next_u32()

    def next_u32(self):
        old = self.state
        self.state = (old * self.MULTIPLIER + self.increment) & MASK64
        xorshifted = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
        rotation = old >> 59
        return ((xorshifted >> rotation) | (xorshifted << ((-rotation) & 31))) & 0xFFFFFFFF

    def normal(self):
        if self.spare is not None:
            z, self.spare = self.spare, None
            return z
        u1 = np.float32(((self.next_u32() >> 8) + 1) * (1.0 / 16777216.0))
        u2 = np.float32((self.next_u32() >> 8) * (1.0 / 16777216.0))
        radius = np.float32(math.sqrt(float(np.float32(-2.0 * float(np.float32(math.log(u1)))))))
        angle = np.float32(np.float32(2.0 * math.pi) * u2)
        self.spare = float(np.float32(radius * np.float32(math.sin(angle))))
        return float(np.float32(radius * np.float32(math.cos(angle))))


# The eight-Gaussians mixture of examples/eight-gaussians.json (radius 2).
MEANS = np.array([[2 * math.cos(k * math.pi / 4), 2 * math.sin(k * math.pi / 4)] for k in range(8)])
STDS = np.array([0.2, 0.25, 0.2, 0.3, 0.2, 0.25, 0.2, 0.3])
WEIGHTS = np.array([0.2, 0.1, 0.15, 0.05, 0.2, 0.1, 0.15, 0.05])


def mixture_eps(x, alpha_bar):
    """E[e | x_t] for x_t = a x0 + s e with x0 from the mixture, rows of x (float64)."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    variance = a * a * STDS**2 + s * s  # [K]
    diff = x[:, None, :] - a * MEANS[None, :, :]  # [n, K, 2]
    logits = np.log(WEIGHTS) - np.log(variance) - (diff**2).sum(-1) / (2 * variance)
    logits -= logits.max(axis=1, keepdims=True)
    r = np.exp(logits)
    r /= r.sum(axis=1, keepdims=True)
    residual = (r[:, :, None] * diff / variance[None, :, None]).sum(1)
    return s * residual


def model_output(x, alpha_bar, prediction):
    eps = mixture_eps(x, alpha_bar)
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction == "epsilon":
        return eps
    x0 = (x - s * eps) / a
    return a * eps - s * x0  # v


class Draws:
    """Replaces diffusers' randn_tensor with ddm's stream, recording each draw."""

    def __init__(self, rng):
        self.rng = rng
        self.recorded = []

    def __call__(self, shape, generator=None, device=None, dtype=None, **kwargs):
        values = [self.rng.normal() for _ in range(int(np.prod(shape)))]
        self.recorded.append(values)
        return torch.tensor(values, dtype=dtype or torch.float32).reshape(shape)


def schedule_config(betas):
    return {"linear": "linear", "cosine": "squaredcos_cap_v2"}[betas]


def run(case):
    common = dict(
        num_train_timesteps=T,
        beta_schedule=schedule_config(case["betas"]),
        prediction_type=case["prediction"],
    )
    kind = case["sampler"]
    if kind == "ddim":
        scheduler = DDIMScheduler(
            **common,
            clip_sample=case.get("clip") is not None,
            clip_sample_range=case.get("clip") or 1.0,
            timestep_spacing=case["spacing"],
        )
    elif kind == "ddpm":
        scheduler = DDPMScheduler(
            **common,
            clip_sample=case.get("clip") is not None,
            clip_sample_range=case.get("clip") or 1.0,
            variance_type=case["variance"],
            timestep_spacing=case["spacing"],
        )
    else:
        scheduler = DPMSolverMultistepScheduler(**common, timestep_spacing=case["spacing"])
    if "timesteps" in case:
        scheduler.set_timesteps(timesteps=case["timesteps"])
    else:
        scheduler.set_timesteps(case["steps"])
    timesteps = [int(t) for t in scheduler.timesteps]
    assert len(timesteps) == case["steps"], timesteps

    rng = Rng(case["seed"], 0)
    x = np.array([[rng.normal() for _ in range(2)] for _ in range(4)], dtype=np.float32)
    draws = Draws(Rng(case["seed"], 1))
    ddim_module.randn_tensor = draws
    ddpm_module.randn_tensor = draws
    alphas_cumprod = scheduler.alphas_cumprod.numpy().astype(np.float64)
    steps = []
    sample = torch.tensor(x)
    for t in timesteps:
        out = model_output(sample.numpy().astype(np.float64), alphas_cumprod[t], case["prediction"])
        out = torch.tensor(out.astype(np.float32))
        before = len(draws.recorded)
        kwargs = {}
        if kind == "ddim":
            kwargs["eta"] = case.get("eta", 0.0)
            kwargs["use_clipped_model_output"] = case.get("use_clipped_model_output", False)
        result = scheduler.step(out, t, sample, **kwargs).prev_sample.to(torch.float32)
        noise = draws.recorded[before] if len(draws.recorded) > before else []
        steps.append(
            {
                "t": t,
                "x": sample.flatten().tolist(),
                "output": out.flatten().tolist(),
                "noise": noise,
                "prev": result.flatten().tolist(),
            }
        )
        sample = result
    return {**case, "timesteps": timesteps, "steps": steps}


def cases():
    base = dict(prediction="epsilon", seed=7)
    out = []
    # DDIM, deterministic: diffusers' default leading spacing, and trailing.
    for betas, spacing, steps in [
        ("linear", "leading", 10),
        ("linear", "trailing", 10),
        ("cosine", "trailing", 20),
        ("cosine", "leading", 5),
    ]:
        out.append(dict(base, name=f"ddim-{betas}-{spacing}-{steps}", sampler="ddim", betas=betas, spacing=spacing, steps=steps))
    out.append(dict(base, name="ddim-v-cosine-trailing-10", sampler="ddim", betas="cosine", spacing="trailing", steps=10, prediction="v_prediction"))
    # DDIM with noise (eta > 0) given the same draws.
    out.append(dict(base, name="ddim-eta0.7-linear-leading-10", sampler="ddim", betas="linear", spacing="leading", steps=10, eta=0.7))
    out.append(dict(base, name="ddim-eta1-cosine-trailing-5", sampler="ddim", betas="cosine", spacing="trailing", steps=5, eta=1.0))
    # DDIM clipping x0: ddm recomputes eps from the clipped x0, diffusers' use_clipped_model_output.
    out.append(dict(base, name="ddim-clip1-linear-leading-10", sampler="ddim", betas="linear", spacing="leading", steps=10, clip=1.0, use_clipped_model_output=True))
    # DDPM ancestral sampling, both variances, with the same draws; clipping as diffusers does.
    out.append(dict(base, name="ddpm-posterior-linear-leading-20", sampler="ddpm", betas="linear", spacing="leading", steps=20, variance="fixed_small"))
    out.append(dict(base, name="ddpm-beta-cosine-leading-10", sampler="ddpm", betas="cosine", spacing="leading", steps=10, variance="fixed_large"))
    out.append(dict(base, name="ddpm-posterior-clip1-v-linear-leading-10", sampler="ddpm", betas="linear", spacing="leading", steps=10, variance="fixed_small", clip=1.0, prediction="v_prediction"))
    # DPM-Solver++ 2M with diffusers' defaults, on trailing spacing (the same in both), and on
    # ddm's leading and log-SNR timesteps given explicitly.
    for betas, steps in [("linear", 10), ("linear", 20), ("cosine", 10), ("cosine", 20)]:
        out.append(dict(base, name=f"dpmpp-2m-{betas}-trailing-{steps}", sampler="dpmpp-2m", betas=betas, spacing="trailing", steps=steps))
    out.append(dict(base, name="dpmpp-2m-v-cosine-trailing-10", sampler="dpmpp-2m", betas="cosine", spacing="trailing", steps=10, prediction="v_prediction"))
    out.append(dict(base, name="dpmpp-2m-linear-leading-5", sampler="dpmpp-2m", betas="linear", spacing="leading", steps=5, timesteps=[800, 600, 400, 200, 0]))
    return out


PINNED = [0, 1, 2, 10, 100, 250, 500, 750, 900, 990, 998, 999]


def schedules():
    """alphas_cumprod of diffusers' beta schedules (DDPMScheduler's, float32) at PINNED, with
    DDPMScheduler's default betas (1e-4, 0.02) except scaled_linear, which takes Stable
    Diffusion's (0.00085, 0.012) as ddm's does."""
    out = {}
    for name in ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]:
        betas = dict(beta_start=0.00085, beta_end=0.012) if name == "scaled_linear" else {}
        for zero_snr in [False, True]:
            if zero_snr and name in ("squaredcos_cap_v2", "sigmoid"):
                continue
            scheduler = DDPMScheduler(
                num_train_timesteps=T,
                beta_schedule=name,
                rescale_betas_zero_snr=zero_snr,
                **betas,
            )
            values = scheduler.alphas_cumprod.numpy()
            key = name + ("+zero_snr" if zero_snr else "")
            out[key] = {"t": PINNED, "alphas_cumprod": [float(values[t]) for t in PINNED]}
    return out


def main():
    path = sys.argv[1]
    result = {
        "generator": "scripts/diffusers_reference.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "train_steps": T,
        "schedules": schedules(),
        "cases": [run(case) for case in cases()],
    }
    with open(path, "w") as f:
        json.dump(result, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(result['cases'])} cases to {path}")


if __name__ == "__main__":
    main()
