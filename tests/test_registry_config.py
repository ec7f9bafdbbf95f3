"""Registries and typed configs: duplicates refused, unknown names listed, round trips, validated overrides."""

from __future__ import annotations

import dataclasses

import pytest

from bench.core.config import ConfigError, RunConfig, apply_overrides, parse_overrides
from bench.core.registry import Registry, UnknownNameError
from bench.runs.resolve import resolve_config


class Base:
    name = ""


def test_registry_refuses_duplicates_and_wrong_types():
    reg: Registry[type[Base]] = Registry("thing", Base)

    @reg.register()
    class A(Base):
        name = "a"

    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(A)
    with pytest.raises(TypeError, match="subclass of Base"):
        reg.register("b")(int)
    with pytest.raises(UnknownNameError, match="valid: a"):
        reg.get("zz")
    assert reg.names("a*") == ["a"] and reg.names("q*") == []


def test_round_trip_and_hash():
    cfg = resolve_config("faae", "cifar10", "paper", seed=3)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.config_hash() == cfg.config_hash()
    # evaluation settings do not change what is trained, so they stay out of the run's identity
    assert dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, n_images=5)).run_id() == cfg.run_id()
    assert dataclasses.replace(cfg, seed=4).run_id() != cfg.run_id()


def test_protocol_presets():
    paper = resolve_config("aae", "cifar10", "paper")
    assert (paper.train.epochs, paper.loss.rec_weight, paper.loss.adv_weight) == (50, 100.0, 0.1)
    assert (paper.optim.lr_g, paper.optim.lr_d, paper.optim.decay) == (3e-4, 1e-3, 1e-4)
    assert paper.optim.state == "network"  # the paper's weights act only with one Adam per network
    inet = resolve_config("faae", "imagenet64", "paper")
    assert inet.train.epochs == 600
    assert [inet.loss.rec_weight_at(e) for e in (0, 199, 200, 599)] == [30.0, 30.0, 100.0, 100.0]


def test_overrides_are_typed_and_validated():
    cfg = resolve_config("faae", "mnist5k", "smoke", overrides=parse_overrides(
        ["train.epochs=3", "train.precision=fp32", "loss.rec_weight=30", "train.channels_last=false"]))
    assert (cfg.train.epochs, cfg.train.precision, cfg.loss.rec_weight, cfg.train.channels_last) == (3, "fp32", 30.0, False)
    with pytest.raises(ConfigError, match="valid: train.epochs"):
        apply_overrides(cfg, parse_overrides(["train.epoch=3"]))
    with pytest.raises(ConfigError, match="expects int"):
        apply_overrides(cfg, parse_overrides(["train.epochs=three"]))
    with pytest.raises(ConfigError, match="precision must be one of"):
        apply_overrides(cfg, parse_overrides(["train.precision=fp16"]))
    with pytest.raises(ConfigError, match="valid: data, model"):
        parse_overrides(["nope.x=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["epochs3"])
    with pytest.raises(ConfigError, match="model.prior must be one of sphere"):
        apply_overrides(cfg, parse_overrides(["model.prior=cube"]))


def test_method_config_defaults_sit_between_protocol_and_set():
    from bench.core.config import parse_overrides
    from bench.runs.resolve import resolve_config

    # quick's own beta1 and D rate equal BiGAN's, so the protocol that tells them apart is paper's
    assert resolve_config("bigan", "cifar10", "paper").optim.beta1 == 0.5
    assert resolve_config("ali", "cifar10", "quick").optim.lr_d == 2e-4  # BiGAN's, inherited, under every protocol
    assert resolve_config("ali", "cifar10", "paper").optim.lr_d == 1e-4  # paper: ALI's own (docs/methods.md)
    assert resolve_config("bigan", "cifar10", "quick").optim.lr_g == 2e-4
    assert resolve_config("faae", "cifar10", "paper").optim.lr_d == 1e-3  # the paper's protocol
    quick = resolve_config("faae", "cifar10", "quick").optim
    assert (quick.lr_g, quick.lr_d, quick.beta1) == (3e-4, 2e-4, 0.5)  # quick: DCGAN's beta1 and D rate
    # the adversarial phase's scale where it was measured (cifar10), the paper's 1 elsewhere
    assert (quick.lr_adv_scale, resolve_config("faae", "mnist5k", "quick").optim.lr_adv_scale) == (0.5, 1.0)
    assert resolve_config("bigan", "cifar10", "quick", 0, parse_overrides(["optim.beta1=0.7"])).optim.beta1 == 0.7
    # the first command's dataset runs a smaller budget; --set still wins over it, other datasets keep the general one
    def budget(cfg):
        return cfg.model.width, cfg.model.latent_dim, cfg.train.max_steps, cfg.eval.n_samples

    assert budget(resolve_config("faae", "mnist5k", "quick")) == (32, 32, 600, 300)
    assert budget(resolve_config("faae", "cifar10", "quick")) == (64, 256, 2000, 2000)
    assert budget(resolve_config("aae", "mnist5k", "quick", 0, parse_overrides(["model.width=64"])))[0] == 64
