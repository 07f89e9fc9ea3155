#!/usr/bin/env python3
"""Times ddm's MLP and UNet presets re-built in PyTorch (CPU or CUDA), like `ddm bench-train`.

The models mirror host/src/model/mlp.rs and host/src/model/unet.rs layer for layer (same
shapes, same parameter count, which is printed so that it can be checked against ddm's), and
a step does what ddm's trainer does: draw a batch (random samples, timesteps and noise of the
linear 1000-step schedule, epsilon target), the weighted MSE loss, backward, gradient
clipping to norm 1, AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay) and an EMA
of the weights. "forward" times the batch and the loss under torch.no_grad().

Run by scripts/bench-vs-pytorch.sh (CPU) and scripts/gpu-check.sh (--device cuda, TF32 off as
in ddm); prints one JSON object per line with --json.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F


def time_embedding(t, dim, max_period=10_000.0):
    """`[sin(t f_i), cos(t f_i)]`, `f_i = exp(-ln(max_period) i / (dim / 2))` (ddm's op)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float64) / half
    ).to(device=t.device, dtype=t.dtype)
    args = t[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class Mlp(nn.Module):
    """host/src/model/mlp.rs: residual MLP on flattened samples."""

    def __init__(self, shape, hidden=256, blocks=3, time_dim=64, norm_groups=0):
        super().__init__()
        self.shape = shape
        self.time_dim = time_dim
        dim = math.prod(shape)
        self.time_fc1 = nn.Linear(time_dim, hidden)
        self.time_fc2 = nn.Linear(hidden, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.norm_groups = norm_groups
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            block = nn.Module()
            block.norm = nn.GroupNorm(norm_groups, hidden) if norm_groups else nn.Identity()
            block.fc1 = nn.Linear(hidden, hidden)
            block.time = nn.Linear(hidden, hidden)
            block.fc2 = nn.Linear(hidden, hidden)
            self.blocks.append(block)
        self.out_norm = nn.GroupNorm(norm_groups, hidden) if norm_groups else nn.Identity()
        self.out = nn.Linear(hidden, dim)

    def forward(self, x, t):
        e = time_embedding(t, self.time_dim)
        e = F.silu(self.time_fc2(F.silu(self.time_fc1(e))))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            r = block.fc1(F.silu(block.norm(h)))
            r = block.fc2(F.silu(r + block.time(e)))
            h = h + r
        out = self.out(F.silu(self.out_norm(h)))
        return out.reshape(x.shape)


class Res(nn.Module):
    """The UNet's residual block (unet.rs, `Blocks::res`)."""

    def __init__(self, cin, cout, time_width, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(time_width, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(e)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.skip is None else self.skip(x)
        return skip + h


class Unet(nn.Module):
    """host/src/model/unet.rs: DDPM-style UNet without attention."""

    def __init__(self, shape, channels=32, channel_mults=(1, 2), blocks_per_level=1, groups=8):
        super().__init__()
        in_channels = shape[0]
        self.channels = channels
        self.channel_mults = channel_mults
        self.blocks_per_level = blocks_per_level
        time_width = 4 * channels
        self.time_fc1 = nn.Linear(channels, time_width)
        self.time_fc2 = nn.Linear(time_width, time_width)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        levels = len(channel_mults)
        widths = [channels]
        self.down = nn.ModuleList()
        width = channels
        for level, mult in enumerate(channel_mults):
            for _ in range(blocks_per_level):
                self.down.append(Res(width, mult * channels, time_width, groups))
                width = mult * channels
                widths.append(width)
            if level + 1 < levels:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                widths.append(width)
        self.mid = nn.ModuleList([Res(width, width, time_width, groups) for _ in range(2)])
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            mult = channel_mults[level]
            for _ in range(blocks_per_level + 1):
                skip = widths.pop()
                self.up.append(Res(width + skip, mult * channels, time_width, groups))
                width = mult * channels
            if level > 0:
                self.up.append(nn.Conv2d(width, width, 3, padding=1))
        assert not widths
        self.out_norm = nn.GroupNorm(groups, width, eps=1e-5)
        self.out_conv = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x, t):
        e = time_embedding(t, self.channels)
        e = F.silu(self.time_fc2(F.silu(self.time_fc1(e))))
        h = self.conv_in(x)
        skips = [h]
        down = iter(self.down)
        levels = len(self.channel_mults)
        for level in range(levels):
            for _ in range(self.blocks_per_level):
                h = next(down)(h, e)
                skips.append(h)
            if level + 1 < levels:
                h = next(down)(h)
                skips.append(h)
        for block in self.mid:
            h = block(h, e)
        up = iter(self.up)
        for level in reversed(range(levels)):
            for _ in range(self.blocks_per_level + 1):
                h = next(up)(torch.cat([h, skips.pop()], dim=1), e)
            if level > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                h = next(up)(h)
        return self.out_conv(F.silu(self.out_norm(h)))


PRESETS = {
    "mlp": (lambda shape: Mlp(shape), [1, 8, 8]),
    "unet8": (lambda shape: Unet(shape), [1, 8, 8]),
    "unet28": (lambda shape: Unet(shape), [1, 28, 28]),
}


class Bench:
    """One model, its data, optimiser and EMA, stepping like ddm's trainer."""

    def __init__(self, preset, batch, device):
        build, shape = PRESETS[preset]
        torch.manual_seed(0)
        self.device = device
        self.model = build(shape).to(device)
        self.shape = shape
        self.batch = batch
        self.data = (torch.rand(512, *shape) * 2 - 1).to(device)
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        alpha_bar = torch.cumprod(1 - betas, 0)
        self.signal = alpha_bar.sqrt().float().to(device)
        self.noise = (1 - alpha_bar).sqrt().float().to(device)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
        )
        self.ema = [p.detach().clone() for p in self.model.parameters()]

    def params(self):
        return sum(p.numel() for p in self.model.parameters())

    def loss(self):
        index = torch.randint(len(self.data), (self.batch,), device=self.device)
        t = torch.randint(1000, (self.batch,), device=self.device)
        eps = torch.randn(self.batch, *self.shape, device=self.device)
        x0 = self.data[index]
        a = self.signal[t].view(-1, 1, 1, 1)
        s = self.noise[t].view(-1, 1, 1, 1)
        x_t = a * x0 + s * eps
        weight = torch.ones(self.batch, device=self.device)
        out = self.model(x_t, t.float())
        per_sample = (out - eps).square().flatten(1).mean(1)
        return (per_sample * weight).mean()

    def forward_step(self):
        with torch.no_grad():
            self.loss().item()

    def train_step(self, step):
        loss = self.loss()
        loss.item()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.model.parameters()], 1 - decay)


def time_steps(step, warmup, steps, seconds):
    """Steps timed, their wall-clock seconds and their CPU seconds (all threads)."""
    for i in range(warmup):
        step(i)
    started, cpu_started = time.perf_counter(), time.process_time()
    timed = 0
    while timed < max(steps, 3) and (timed < 3 or time.perf_counter() - started < seconds):
        step(warmup + timed)
        timed += 1
    return timed, time.perf_counter() - started, time.process_time() - cpu_started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mlp,unet8,unet28")
    parser.add_argument("--mode", choices=["train", "forward", "both"], default="train")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (as ddm's --device)")
    args = parser.parse_args()
    # Full f32 products on the GPU, as ddm's (candle's) CUDA matrix products: no TF32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(args.threads)
    modes = {"train": ["train"], "forward": ["forward"], "both": ["forward", "train"]}[args.mode]
    if not args.json:
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}")
    for preset in args.preset.split(","):
        for mode in modes:
            bench = Bench(preset, args.batch_size, args.device)
            if mode == "train":
                step = lambda i: bench.train_step(i)
            else:
                step = lambda i: bench.forward_step()
            timed, seconds, cpu = time_steps(step, args.warmup, args.steps, args.seconds)
            record = {
                "framework": "pytorch",
                "version": torch.__version__,
                "model": preset,
                "mode": mode,
                "shape": bench.shape,
                "params": bench.params(),
                "batch": args.batch_size,
                "threads": torch.get_num_threads(),
                "device": args.device,
                "steps": timed,
                "seconds": seconds,
                "steps_per_s": timed / seconds,
                "cpu_s_per_step": cpu / timed,
            }
            if args.json:
                print(json.dumps(record), flush=True)
            else:
                print(
                    f"{preset:<8} {mode:<8} params {record['params']:>8} "
                    f"{record['steps_per_s']:8.2f} steps/s "
                    f"{1000 * record['cpu_s_per_step']:9.2f} CPU ms/step"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
