"""Latent recovery with stochastic clipping (Lipton & Tripathi 2017).

"gan": a plain GAN (the shared G and D, no encoder) trained under the protocol; it "encodes" an image x
by gradient descent on z to minimise ||G(z) - x||^2, with stochastic clipping after every step.
"faae+sc", "aae+sc", "bigan+sc", "ali+sc": the same search started from a trained method's E(x), on that
method's finished checkpoint (loaded by the runner, never retrained).

Whether clipping helps depends on the optimiser (benchmarks/recover_planted.py measures it on a trained
run; docs/latent-recovery.md has the numbers). On a quick CelebA GAN with Lipton & Tripathi's prior (uniform,
n=100), plain gradient descent, their optimiser, at a step below its stability limit (8,000 steps)
recovered 92.5% of 40 planted codes to 1e-3 per coordinate with stochastic or hard clipping, against
87.5% with none. Adam (every coordinate moves by about lr per step) and momentum carry coordinates of z*
near the box's edge out of it again and again, and stochastic clipping redraws them: there it loses
to hard clipping and to none. Levenberg-Marquardt ("lm") recovers the codes to 1e-4 in 20 steps
without clipping, at about n forward passes of G per step. With the sphere prior (quick GAN on
CIFAR-10, 300 Adam steps) projection lowers the latent error against plain descent (mean
||z - z*||^2 1.04 vs 1.57) but neither search comes within 0.1 of z*: that G's Hessian has condition
number ~1e5, distant codes give near-identical images.
`--methods 'latent-recovery[method.clip=hard]'` (or none) runs the ablations.

The cost of these methods is in encoding, not training: every encode is `steps` forward and backward
passes of G per image and restart, which the evaluation's timings (eval_seconds) record.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from bench.core.config import ConfigError
from bench.core.priors import Prior

# the refined bases must be registered before this module builds their "+sc" classes
from . import aae, ali, bigan, faae  # noqa: F401
from .backbones import Discriminator, Generator
from .base import ADDED_LATER, METHODS, ImageGANPhases, Method, ModelSpec, Phase, Setting

ClipRule = Callable[[torch.Tensor, float, "torch.Generator | None"], torch.Tensor]


# --- the clipping rules ---------------------------------------------------------------------------------
def stochastic_clip(z: torch.Tensor, box: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every coordinate outside [-box, box] is replaced by its own fresh draw from U(-box, box); the
    coordinates inside are returned untouched. One independent draw per coordinate: a single scalar
    shared by all clipped coordinates (a known porting bug) would collapse them onto one value."""
    dev = generator.device if generator is not None else z.device
    # a full tensor of draws, used where needed: the RNG advances by the same amount whatever is clipped
    fresh = torch.rand(z.shape, generator=generator, device=dev).to(z.device, z.dtype).mul_(2 * box).sub_(box)
    return torch.where(z.abs() > box, fresh, z)


def hard_clip(z: torch.Tensor, box: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard clipping onto the box (the paper's other baseline)."""
    return z.clamp(-box, box)


def no_clip(z: torch.Tensor, box: float, generator: torch.Generator | None = None) -> torch.Tensor:
    return z


#: clip rule name -> rule; "none" also skips the projection onto the prior's support (plain descent)
CLIP_RULES: dict[str, ClipRule] = {"stochastic": stochastic_clip, "hard": hard_clip, "none": no_clip}
#: first-order optimisers of the search; "lm" (Levenberg-Marquardt, below) is the second-order one
FIRST_ORDER: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
OPTIMIZERS = (*FIRST_ORDER, "lm")


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """The module in eval mode (BatchNorm on running statistics) with no parameter gradients; both are
    restored afterwards, whatever they were."""
    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def per_image_sq_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error per image, in fp32."""
    return (a.float() - b.float()).flatten(1).pow(2).mean(1)


def _rule_name(clip: bool | str) -> str:
    name = {True: "stochastic", False: "none"}.get(clip, clip) if isinstance(clip, bool) else clip
    if name not in CLIP_RULES:
        raise ValueError(f"clip must be True, False or one of {', '.join(CLIP_RULES)}, got {clip!r}")
    return name


def recover_latents(G: nn.Module, x: torch.Tensor, prior: Prior, steps: int, lr: float, restarts: int = 1,
                    clip: bool | str = True, init: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, *, dim: int | None = None,
                    optimizer: str = "adam", damping: float = 1e-2, halve_every: int = 0) -> torch.Tensor:
    """argmin_z ||G(z) - x||^2 per image, by `steps` optimiser steps on a batch of images at once.

    Each image gets `restarts` independent searches (run as one batch); the z with the lowest error seen
    at any step is kept per image. Restart 0 starts from `init` when given (projected onto the prior's
    support), the others from prior samples. After every step the clip rule is applied (True or
    "stochastic": stochastic clipping to the box [-prior.box, prior.box]; "hard": clamping; False or
    "none": nothing) and then, unless the rule is "none", z is projected onto the prior's support. For
    the sphere prior that projection is what keeps z a valid code (projected gradient descent on the
    sphere); stochastic clipping then never fires, since unit-norm codes lie inside [-1, 1]^n. For the
    uniform prior (the paper's setting, latent-recovery's own under `paper`) clipping is the whole constraint.

    `optimizer` is "adam" or "sgd" at step size `lr` (halved every `halve_every` steps when that is not 0, as
    Lipton & Tripathi's code does), or "lm": Levenberg-Marquardt with initial damping `damping` (`lr` unused;
    see `levenberg_marquardt`), where the clip rule applies to each trial point.

    G is kept in eval mode and its parameters get no gradients (both restored afterwards). Works when the
    caller is under torch.no_grad() (evaluation is); not under torch.inference_mode. Respects an
    enclosing autocast (bf16 on CPU). Random draws (starts, clipping) use `generator`, torch's global RNG
    when None. Returns fp32 codes of shape (len(x), dim) on x's device.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("recover_latents needs autograd: call it under torch.no_grad(), not inference_mode")
    if init is None and dim is None:
        raise ValueError("recover_latents needs init or dim")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    name = _rule_name(clip)
    rule = CLIP_RULES[name]
    n, d = x.shape[0], (init.shape[1] if init is not None else dim)
    gen_dev = generator.device if generator is not None else x.device
    z0 = prior.sample(n * restarts, d, generator=generator, device=gen_dev).to(x.device)
    if init is not None:
        z0[:n] = prior.project(init.detach().float())
    target = x.detach().repeat(restarts, *([1] * (x.dim() - 1)))  # row r * n + i is image i, restart r

    def constrain(z: torch.Tensor) -> torch.Tensor:
        z = rule(z, prior.box, generator)
        return z if name == "none" else prior.project(z)

    if optimizer == "lm":
        best_z, best_err = levenberg_marquardt(G, z0, target, steps, constrain, damping)
    else:
        best_z, best_err = first_order_search(G, z0, target, steps, constrain, FIRST_ORDER[optimizer], lr,
                                              halve_every)
    pick = best_err.view(restarts, n).argmin(0)
    return best_z.view(restarts, n, d)[pick, torch.arange(n, device=x.device)].float()


def first_order_search(G: nn.Module, z0: torch.Tensor, target: torch.Tensor, steps: int,
                       constrain: Callable[[torch.Tensor], torch.Tensor], optimizer: type[torch.optim.Optimizer],
                       lr: float, halve_every: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps` steps of `optimizer` on z, one independent problem per row of z0, the constraint applied
    after each; the step size is halved before steps halve_every, 2 * halve_every, ... (0: never). Returns per
    row the code with the lowest error seen at any step and that error."""
    with torch.enable_grad(), frozen(G):
        z = z0.clone().requires_grad_(True)
        opt = optimizer([z], lr=lr)
        best_err = torch.full((len(z0),), math.inf, device=z0.device)
        best_z = z0.clone()
        for step in range(steps + 1):
            # G(z.clone()), not G(z): autocast caches its bf16 copy of a leaf that requires grad (meant for
            # weights) until the autocast region ends, so G would see the starting z at every step
            err = per_image_sq_error(G(z.clone()), target)
            with torch.no_grad():
                better = err < best_err
                best_err = torch.where(better, err.detach(), best_err)
                best_z = torch.where(better[:, None], z.detach(), best_z)  # a mask index would sync
            if step == steps:  # the last evaluation scores the final iterate only
                break
            if halve_every and step and step % halve_every == 0:
                for group in opt.param_groups:
                    group["lr"] /= 2
            opt.zero_grad(set_to_none=True)
            err.sum().backward()  # per-image errors summed: each z's gradient is independent of the batch
            opt.step()
            with torch.no_grad():
                z.copy_(constrain(z))
    return best_z, best_err


def image_jacobian(G: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """dG(z)/dz per row of z, shape (rows, pixels, n), by forward-mode autodiff: one pass per latent
    coordinate, batched. Call with G frozen (eval mode: BatchNorm must not mix the rows)."""
    def image(v: torch.Tensor) -> torch.Tensor:
        return G(v[None])[0].flatten()

    return torch.func.vmap(torch.func.jacfwd(image))(z)


def gauss_newton_spectrum(G: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (ascending, per row) of 2/P J^T J, the Gauss-Newton Hessian of the per-image MSE
    ||G(z) - x||^2 / P at an exact pre-image z. Plain gradient descent on that loss is stable for step
    sizes below 2 / the largest and needs about largest / smallest steps per e-fold of its slowest error."""
    with torch.no_grad(), frozen(G), torch.autocast(z.device.type, enabled=False):
        J = image_jacobian(G, z.float())
        return torch.linalg.eigvalsh(2.0 / J.shape[1] * J.transpose(1, 2) @ J)


def levenberg_marquardt(G: nn.Module, z0: torch.Tensor, target: torch.Tensor, steps: int,
                        constrain: Callable[[torch.Tensor], torch.Tensor], damping: float = 1e-2,
                        chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg-Marquardt on the residual G(z) - x, one independent problem per row of z0.

    Each step solves (J^T J + mu * mean(diag J^T J) * I) delta = J^T r per image (a step costs about n
    forward passes of G, see `image_jacobian`), applies the constraint to z - delta and keeps the trial
    only if it lowers the image's error: then mu /= 3, else mu *= 4. Gradient descent converges at the
    rate of J's smallest singular directions (`gauss_newton_spectrum`: condition numbers ~1e3 on a quick
    CelebA GAN, ~1e5 on a quick CIFAR-10 one), hence the paper's thousands of steps; this takes tens.
    Runs in fp32 whatever the enclosing autocast (the solve needs it). Returns the final codes and their
    errors (the error never rises: they are the best seen).
    """
    flat = target.flatten(1).float()
    with torch.no_grad(), frozen(G), torch.autocast(z0.device.type, enabled=False):
        z = z0.clone().float()
        err = per_image_sq_error(G(z), target)
        mu = torch.full_like(err, damping)
        eye = torch.eye(z.shape[1], device=z.device)
        for _ in range(steps):
            delta = torch.empty_like(z)
            for rows in torch.arange(len(z), device=z.device).split(chunk):
                J = image_jacobian(G, z[rows])
                r = G(z[rows]).flatten(1) - flat[rows]
                JtJ = J.transpose(1, 2) @ J
                scale = JtJ.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12) * mu[rows]
                rhs = (J.transpose(1, 2) @ r[..., None])[..., 0]
                delta[rows] = torch.linalg.solve(JtJ + scale[:, None, None] * eye, rhs)
            trial = constrain(z - delta)
            trial_err = per_image_sq_error(G(trial), target)
            better = trial_err < err
            z = torch.where(better[:, None], trial, z)
            err = torch.where(better, trial_err, err)
            mu = torch.where(better, mu / 3, mu * 4).clamp(1e-8, 1e8)
    return z, err


# --- the search's settings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecoveryParams:
    #: optimiser steps per image (each a forward and backward pass of G)
    steps: int = 1000
    #: step size in units of the prior's per-coordinate standard deviation (sphere: 1/sqrt(n)), so one
    #: setting works for every prior; the absolute learning rate is lr * that std
    lr: float = 0.1
    #: independent searches per image (batched); the best is kept
    restarts: int = 2
    #: clip rule after each step: stochastic (the paper's), hard, or none (also no sphere projection)
    clip: str = "stochastic"
    #: adam or sgd (step size lr), or lm: Levenberg-Marquardt, ~n forward passes of G a step, tens of steps
    optimizer: str = "adam"
    #: lm's initial damping, relative to the mean diagonal of J^T J
    damping: float = 1e-2
    #: seed of the search's own generator: encode(x) of the same batch is repeatable
    seed: int = 0
    #: halve the step size every this many steps (0: never); adam and sgd
    lr_halve_every: int = field(default=0, metadata=ADDED_LATER)

    def __post_init__(self):
        if self.steps < 0 or self.restarts < 1 or self.lr <= 0 or self.damping <= 0 or self.lr_halve_every < 0:
            raise ConfigError("method.steps must be >= 0, method.restarts >= 1, method.lr > 0, "
                              "method.damping > 0 and method.lr_halve_every >= 0")
        if self.clip not in CLIP_RULES:
            raise ConfigError(f"method.clip must be one of {', '.join(CLIP_RULES)}, got {self.clip!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"method.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")


@dataclass(frozen=True)
class RefineParams(RecoveryParams):
    #: restart 0 starts from E(x); further restarts start from prior samples
    restarts: int = 1


# Search sizes per protocol. smoke: seconds. quick: measured 220-370 image-steps/s for the quick model
# (w=64, n=256, 32x32, bf16, batch 250) on the 2 shared cores (noisy: other jobs ran), so 30 steps make
# one encode pass over 2000 held-out CIFAR images take 3-4.5 min (the default metrics encode twice: test
# images and re-encoded samples). paper: latent-recovery's own search (LIPTON_TRIPATHI below: 80,000 steps of
# plain gradient descent), ~80x the 1,000 Adam steps that took ~15 h per pass over CIFAR's 10,000 test images on
# this CPU: for a GPU.
RECOVERY_PROTOCOLS: dict[str, dict] = {
    "smoke": {"steps": 5, "restarts": 2},
    "quick": {"steps": 30, "restarts": 1},
    "paper": {"steps": 1000, "restarts": 2},
}
_CODE = "SubarnaTripathi/ReverseGAN (the official code)"
_SEARCH = f"{_CODE}, model.py DCGAN.reverse_GAN_batch_all_prec"
#: Lipton & Tripathi's own settings (ICLR 2017 workshop): their GAN is DCGAN-tensorflow's, trained with DCGAN's
#: optimiser on a uniform prior, inverted by plain gradient descent with stochastic clipping. Not applied: the 100-d
#: latent and DCGAN's nets (the shared backbones), G stepped twice per D step (carpedm20's DCGAN-tensorflow), batch
#: 64, and the search's early stop once every code is recovered (it needs the true codes). Their images are in
#: [-1, 1] (tanh) and ours in [0, 1]: the same step size moves z a quarter as far on our per-pixel squared error.
LIPTON_TRIPATHI: tuple[Setting, ...] = (
    Setting("optim.lr_g", 2e-4, f"{_CODE}, train-dcgan.py: learning_rate 0.0002 (DCGAN's, Radford et al. 2016)"),
    Setting("optim.lr_d", 2e-4, f"{_CODE}, model.py DCGAN.train: one AdamOptimizer(config.learning_rate, "
                                "beta1=config.beta1) each for D and G"),
    Setting("optim.beta1", 0.5, f"{_CODE}, train-dcgan.py: beta1 0.5"),
    Setting("optim.beta2", 0.999, f"{_CODE}: TensorFlow's AdamOptimizer default"),
    Setting("optim.decay", 0.0, f"{_CODE}, model.py DCGAN.train: a constant rate"),
    Setting("model.prior", "uniform", f"{_CODE}, model.py: z = np.random.uniform(-1, 1, [batch_size, z_dim])"),
    Setting("method.optimizer", "sgd", f"{_SEARCH}: sample_zh = sample_zh - learning_rate * my_grads"),
    # the suite's method.lr is in units of the prior's coordinate std (1/sqrt(3) for the uniform prior): sqrt(3)
    # is their absolute step of 1
    Setting("method.lr", 3 ** 0.5, f"{_CODE}, reverse_GAN_batch_accuracy.py: LEARNING_RATE=1. (absolute)"),
    Setting("method.lr_halve_every", 50_000, f"{_SEARCH}: 'if n_iter % 50000 == 0 and n_iter > 0: "
                                             "learning_rate /= 2.'"),
    Setting("method.steps", 80_000, f"{_CODE}, reverse_GAN_batch_accuracy.py: num_iters = 80000"),
    Setting("method.restarts", 1, f"{_SEARCH}: one start per image, s_zh = np.random.uniform(-1, 1, ...)"),
    Setting("method.clip", "stochastic", f"{_SEARCH}: configuration 'stochastic_clipping', every coordinate "
                                         "outside [-1, 1] redrawn from U(-1, 1)"),
)
REFINE_PROTOCOLS: dict[str, dict] = {
    "smoke": {"steps": 5},
    "quick": {"steps": 30},
    "paper": {"steps": 1000},
}


class _Search:
    """The search as a method's encoder: settings from the method's params."""

    params: RecoveryParams
    prior: Prior
    spec: ModelSpec

    def search(self, G: nn.Module, x: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        std = self.prior.coord_std(self.spec.latent_dim)
        # on x's device: the clipping noise of every step is drawn there, never copied from the host
        gen = torch.Generator(device=x.device).manual_seed(p.seed)
        return recover_latents(G, x, self.prior, p.steps, p.lr * std, p.restarts, p.clip, init, gen,
                               dim=self.spec.latent_dim, optimizer=p.optimizer, damping=p.damping,
                               halve_every=p.lr_halve_every)


@METHODS.register()
class LatentRecoveryGAN(ImageGANPhases, _Search, Method):
    """A plain GAN: "disc" updates D on real x vs G(z), "gen" updates G to fool it (non-saturating), both
    weighted by loss.adv_weight like the other methods' adversarial terms (loss.rec_weight is unused).
    `encode(x)` is the stochastic-clipping search from prior samples (see `recover_latents`)."""

    name = "latent-recovery"
    description = "plain GAN; encode by latent recovery: gradient descent on z with stochastic clipping"
    phases = (Phase("disc", ("D",), "d"), Phase("gen", ("G",), "g"))
    Params = RecoveryParams
    protocol_params: ClassVar[dict[str, dict]] = RECOVERY_PROTOCOLS
    authors = LIPTON_TRIPATHI

    def __init__(self, spec: ModelSpec, params=None):
        super().__init__(spec, params)
        self.G, self.D = Generator(spec), Discriminator(spec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.search(self.G, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(self.prior.project(z))


class RefinedEncoder(_Search, Method):
    """A trained method's model with its encoding refined by the search, started from z = E(x) projected
    onto the prior's support. Not trainable: the runner loads the base method's finished checkpoint
    through `load_base_state`. Decoding and sampling are the base method's."""

    Params = RefineParams
    protocol_params: ClassVar[dict[str, dict]] = REFINE_PROTOCOLS

    def __init__(self, spec: ModelSpec, params=None):
        super().__init__(spec, params)
        self.base = METHODS.get(self.base_method)(spec)

    @classmethod
    def settings_for(cls, protocol: str) -> dict[str, dict[str, Any]]:
        """The base method's: the refinement's sections are then its base run's (see methods.trained.run_checkpoint)."""
        return METHODS.get(cls.base_method).settings_for(protocol)

    def load_base_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.base.load_state_dict(state_dict)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.search(self.base.G, x, init=self.base.encode(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.base.decode(z)


#: methods whose encoder the search can refine: each gets a "<base>+sc" method
REFINABLE = ("faae", "aae", "bigan", "ali")

for _base in REFINABLE:
    _cls = METHODS.get(_base)
    METHODS.register()(type(f"{_cls.__name__}SC", (RefinedEncoder,), {
        "name": f"{_base}+sc",
        "description": f"{_base}'s trained model; encode refines E(x) by gradient descent with stochastic clipping",
        "base_method": _base,
        "provides": _cls.provides,
        # the base's own config values (BiGAN's optimiser): the refinement's resolved sections are then its base
        # run's, and run_checkpoint finds that run by swapping the method alone
        "config_defaults": _cls.config_defaults,
        "__module__": __name__,
    }))
