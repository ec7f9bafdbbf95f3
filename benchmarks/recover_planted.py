"""Latent recovery on planted codes: how often the search finds the z* that made an image.

Loads a finished run of the plain GAN (method "gan"; any method with a G works), draws z* from its
prior, makes x = G(z*), runs the search from prior samples with each clip rule and prints, per rule,
the fraction of images recovered (||z - z*||_2 < --tol), the fractions at Lipton & Tripathi's precision
levels (mean squared error per latent coordinate below 1e-2, 1e-3, 1e-4, as in their reference code), the
mean ||z - z*||^2 and the mean pixel MSE of G(z) against x. For scale: two independent draws of the prior
are sqrt(E||z - z'||^2) apart (the script prints it). Lipton & Tripathi report 100% of 1,000 runs
recovered with stochastic clipping for a DCGAN with a uniform prior; the benchmark's default prior is the
sphere, where the search also projects onto the sphere after every step (rule "none" does neither).

    python -m bench run --methods latent-recovery --dataset cifar10 --protocol quick --out OUT   # or any finished run
    python benchmarks/recover_planted.py OUT/runs/latent-recovery-cifar10-quick-s0-<hash> --data-root DATA --n 200

Settings default to the run's own search settings (its protocol's), each overridable.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from bench.core.checkpoint import load_checkpoint
from bench.core.config import RunConfig
from bench.core.data import load_dataset
from bench.core.device import autocast
from bench.core.layout import CHECKPOINT
from methods.latent_recovery import (
    CLIP_RULES,
    OPTIMIZERS,
    gauss_newton_spectrum,
    per_image_sq_error,
    recover_latents,
)
from methods.trained import build_method


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished run directory (config.json and last.pt)")
    p.add_argument("--data-root", default=None, help="where the run's dataset lives (only its shape is used)")
    p.add_argument("--n", type=int, default=200, help="planted codes")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--restarts", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="in units of the prior's per-coordinate std")
    p.add_argument("--rules", default=",".join(CLIP_RULES), help="clip rules to compare")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None, help="default: the run's")
    p.add_argument("--damping", type=float, default=None, help="lm's initial damping (default: the run's)")
    p.add_argument("--tol", type=float, default=0.1, help="recovered when ||z - z*||_2 < tol")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None, help="default: the run's")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = RunConfig.from_dict(json.loads((args.run_dir / "config.json").read_text()))
    data = load_dataset(cfg.dataset, args.data_root, cfg.data)
    method = build_method(cfg, data)
    method.load_state_dict(load_checkpoint(args.run_dir / CHECKPOINT)["model"])
    method.eval()
    prm = method.params
    steps = prm.steps if args.steps is None else args.steps
    restarts = prm.restarts if args.restarts is None else args.restarts
    rel_lr = prm.lr if args.lr is None else args.lr
    precision = args.precision or cfg.train.precision
    optimizer = args.optimizer or prm.optimizer
    damping = prm.damping if args.damping is None else args.damping
    dim, prior = cfg.model.latent_dim, method.prior
    pair = prior.expected_pair_sq_dist(dim)
    std = prior.coord_std(dim)
    lr = rel_lr * std
    device = torch.device("cpu")

    z_star = prior.sample(args.n, dim, generator=torch.Generator().manual_seed(10_000 + args.seed))
    with torch.no_grad(), autocast(device, precision):
        x = torch.cat([method.G(z).float() for z in z_star.split(args.batch)])
    step_size = f"damping {damping}" if optimizer == "lm" else f"lr {rel_lr} std = {lr:.4g}"
    print(f"run {args.run_dir.name}: prior {cfg.model.prior} n={dim}, {args.n} planted codes, {steps} steps x "
          f"{restarts} restarts, {optimizer} {step_size}, {precision}; "
          f"random-pair distance sqrt(E||z-z'||^2) = {math.sqrt(pair):.3f}, per-coordinate variance "
          f"{std ** 2:.3g}; recovered: ||z - z*|| < {args.tol}")
    ev = gauss_newton_spectrum(method.G, z_star[:5])
    top, kappa = ev[:, -1].median().item(), (ev[:, -1] / ev[:, 0].clamp_min(1e-30)).median().item()
    print(f"Gauss-Newton Hessian of the pixel MSE at z* (median of {len(ev)} codes): largest eigenvalue {top:.3g}, "
          f"condition number {kappa:.3g}; plain gradient descent (--optimizer sgd) is stable below lr "
          f"{2 / top / std:.3g} std; at lr {1 / top / std:.3g} std it needs ~{kappa:.0f} steps per e-fold of the error "
          "in its slowest direction")
    print(f"{'rule':<11} {'recovered':>9} {'mse/coord<1e-2':>14} {'<1e-3':>6} {'<1e-4':>6} {'mean ||z-z*||^2':>16} "
          f"{'median ||z-z*||':>16} {'pixel mse':>10} {'images/s':>9}")
    for rule in args.rules.split(","):
        gen = torch.Generator().manual_seed(args.seed)
        t0 = time.perf_counter()
        zs = []
        with torch.no_grad(), autocast(device, precision):
            for xb in x.split(args.batch):
                zs.append(recover_latents(method.G, xb, prior, steps, lr, restarts, rule, generator=gen, dim=dim,
                                          optimizer=optimizer, damping=damping))
        seconds = time.perf_counter() - t0
        z = torch.cat(zs)
        with torch.no_grad(), autocast(device, precision):
            pix = torch.cat([per_image_sq_error(method.G(zb), xb) for zb, xb in zip(z.split(args.batch),
                                                                                     x.split(args.batch))])
        dist = (z - z_star).norm(dim=1)
        per_coord = dist.pow(2) / dim
        levels = " ".join(f"{(per_coord < lv).float().mean().item():>{w}.1%}" for lv, w in ((1e-2, 14), (1e-3, 6),
                                                                                          (1e-4, 6)))
        print(f"{rule:<11} {(dist < args.tol).float().mean().item():>9.1%} {levels} {dist.pow(2).mean().item():>16.4f} "
              f"{dist.median().item():>16.4f} {pix.mean().item():>10.2e} {args.n / seconds:>9.3g}")


if __name__ == "__main__":
    main()
