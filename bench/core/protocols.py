"""Named protocol presets: the settings a run uses before any --set override."""

from __future__ import annotations

from typing import Any

from .registry import Registry


class Protocol:
    name: str = ""
    description: str = ""
    #: whether each method's own settings (its paper's or official code's, `Method.authors`) apply over the
    #: protocol's; "paper" does, the short protocols keep one shared optimiser (docs/methods.md)
    authors_settings: bool = False

    def sections(self, dataset: str) -> dict[str, dict[str, Any]]:
        """Config sections (see bench.core.config.SECTIONS) for a dataset."""
        raise NotImplementedError


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol", Protocol)


def paper_budget_and_rates(dataset: str) -> dict[str, dict[str, Any]]:
    """The F-AAE paper's section 4.1: its budget, loss weights, learning rates and decay, shared by F-AAE and AAE
    ("The training of AAE and F-AAE in our experiments always take the same parameters")."""
    s: dict[str, dict[str, Any]] = {
        "train": {"epochs": 50},
        "loss": {"rec_weight": 100.0, "adv_weight": 0.1},
        "optim": {"lr_g": 3e-4, "lr_d": 1e-3, "decay": 1e-4},
    }
    if dataset == "imagenet64":
        s["train"]["epochs"] = 600
        s["loss"].update(warmup_rec_weight=30.0, warmup_epochs=200)
    return s


@PROTOCOLS.register()
class Paper(Protocol):
    name = "paper"
    description = ("each method at its authors' settings (docs/methods.md): F-AAE and AAE at the F-AAE paper's, "
                   "50 epochs (600 on imagenet64, rec weight 30 for the first 200), weights 100/0.1 acting through "
                   "one Adam per network, Adam 3e-4 (G, E) / 1e-3 (D), Keras decay 1e-4; BiGAN, ALI and latent "
                   "recovery at their own papers' or code's optimiser, prior and search")
    authors_settings = True

    def sections(self, dataset):
        s = paper_budget_and_rates(dataset)
        # "We set the same weightage of reconstruction/re-encoding loss and adversarial loss: 10^2 for
        # reconstruction/re-encoding loss and 0.1 for adversarial loss" (section 4.1): weights that set a balance,
        # which they do only when the phases updating one network share its Adam (with one Adam per phase a
        # constant weight is invisible to Adam's scale-free steps: docs/methods.md)
        s["optim"]["state"] = "network"
        return s


@PROTOCOLS.register()
class Quick(Protocol):
    name = "quick"
    description = ("the paper's losses and learning rates for G and E on a short budget, with DCGAN's Adam "
                   "beta1 0.5, D at 2e-4 and, on cifar10, the adversarial phase of G (F-AAE) or E (AAE) at "
                   "half of G's rate; 2,000 steps, sized so that faae,aae on cifar10 train and evaluate in "
                   "under 30 minutes on a 2-core CPU; on mnist5k (the first command) width 32, latent 32, "
                   "600 steps and 300 held-out images and samples, to finish in minutes on any 2-core CPU")

    #: the adversarial phase's rate relative to G's, where it was measured. cifar10, F-AAE at 800 steps, 1, 1/2
    #: and 1/3: re-encoding ratio 0.19, 0.15, 0.10, FID of samples 161, 225, 291; at 1/3 D wins outright and G
    #: hides the code in high-frequency patterns that E reads (the samples are noise), 1/2 keeps natural-looking
    #: samples. mnist5k at 1/2: D's loss 1e-5 and samples of noise by step 500 (digits at 1), so it keeps 1
    ADV_SCALE = {"cifar10": 0.5}

    #: the first command's dataset, cut to run in minutes. Measured with faae,aae (seed 0): at the general
    #: budget (width 64, latent 256, 2,000 steps) F-AAE's re-encoding ratio was 0.40: a sample that must look
    #: like an MNIST digit (a black background, D sees any grey) cannot carry 256 numbers, while 32 fit in the
    #: strokes. Width 32, latent 32, 1,000 steps: ratio 0.10, AAE's reconstruction MSE 0.0149 against 0.086 for
    #: random pairs (5.8x), digits in both sample grids. On a CPU without native bf16 (fp32, AVX2 kernels) that
    #: budget took 14.5 min end to end (training 360 s + 168 s, Inception ~8 images/s), so it was cut to 600
    #: steps and 300 held-out images and samples (docs/speed.md: what the cut costs).
    PER_DATASET: dict[str, dict[str, dict[str, Any]]] = {
        "mnist5k": {"model": {"width": 32, "latent_dim": 32}, "train": {"max_steps": 600},
                    "eval": {"n_images": 300, "n_samples": 300}},
    }

    def sections(self, dataset):
        s = paper_budget_and_rates(dataset)
        # Measured on cifar10, F-AAE at 800 steps: re-encoding ratio 0.19 with beta1 0.5 and D at 2e-4 against
        # 0.32 with the paper's beta1 0.9 and D at 1e-3 (beta1 is what matters: 0.9 with D at 2e-4 gave no gain)
        s["optim"].update(beta1=0.5, lr_d=2e-4, lr_adv_scale=self.ADV_SCALE.get(dataset, 1.0))
        s["train"] = {"epochs": 100, "max_steps": 2000, "batch_size": 64, "sample_every": 500}
        s["loss"].update(warmup_epochs=0)
        s["eval"] = {"n_images": 2000, "n_samples": 2000}
        for section, values in self.PER_DATASET.get(dataset, {}).items():
            s.setdefault(section, {}).update(values)
        return s


@PROTOCOLS.register()
class Smoke(Protocol):
    name = "smoke"
    description = "seconds: a narrow model, a few steps on a few hundred images; for tests and plumbing checks"

    def sections(self, dataset):
        return {
            "data": {"max_train": 512},
            "model": {"width": 8, "latent_dim": 32},
            "train": {"epochs": 1, "max_steps": 6, "batch_size": 32, "log_every": 2, "sample_every": 3},
            "eval": {"n_images": 64, "n_samples": 64, "batch_size": 32, "pretrained": False},
        }
