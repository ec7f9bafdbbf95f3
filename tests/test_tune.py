"""`bench tune`: the same budget per method over a declared space, scored on a validation split of the training
split, in Optuna's RDB storage that workers share and reruns continue; the best settings as a variants file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.core.data import ImageData, tensor_digest
from bench.core.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["--dataset", "mnist5k", "--protocol", "smoke"]


# --- the space, the split, the file: no training ---------------------------------------------------------------
def test_default_space_searches_what_acts_under_each_protocol():
    from bench.tune.space import active, load_space
    from bench.tune.study import TuneSpec, trial_config

    space = load_space()
    assert {"faae", "aae", "bigan", "ali", "latent-recovery"} <= set(space)
    for protocol, acts, inert in (("paper", "loss.rec_weight", "optim.lr_adv_scale"),
                                  ("quick", "optim.lr_adv_scale", "loss.rec_weight")):
        spec = TuneSpec(methods=("faae",), dataset="cifar10", protocol=protocol, trials=1,
                        overrides={"train": {"precision": "fp32"}})
        keys = {p.key for p in active(space["faae"], trial_config(spec, "faae"))}
        assert acts in keys and inert not in keys, (protocol, keys)
        for method, params in space.items():  # every default entry is a valid key of its method, at both ends
            for p in active(params, trial_config(spec, method)):
                for value in (p.choices or (p.low, p.high)):
                    trial_config(spec, method, {p.key: value})


@pytest.mark.parametrize("text,match", [
    ('[faae]\n"optim.lr_g" = {low = 1e-3, high = 1e-4}', "low must be below high"),
    ('[faae]\n"optim.lr_g" = {low = 1e-4, high = 1e-3, logg = true}', "unknown field"),
    ('[faae]\n"data.max_train" = {low = 10, high = 20}', "data.. cannot be searched"),
    ('[faae]\n"optim.lr_g" = {choices = []}', "either low and high"),
    ('[faae]\n"nope.x" = {low = 1, high = 2}', "unknown config section"),
])
def test_space_files_are_validated(tmp_path, text, match):
    from bench.tune.space import load_space

    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=match):
        load_space(path)


def test_validation_is_carved_from_the_training_split_only():
    from bench.tune.validation import carve_validation

    train = torch.arange(200, dtype=torch.uint8).view(200, 1, 1, 1).expand(200, 1, 4, 4).contiguous()
    test = torch.full((20, 1, 4, 4), 255, dtype=torch.uint8)
    data = ImageData("toy", train, test, torch.arange(200), torch.zeros(20), "src", "fixed",
                     tensor_digest(train), tensor_digest(test), "s")
    carved = carve_validation(data, 0.1)
    ids = lambda x: set(x[:, 0, 0, 0].tolist())  # noqa: E731
    assert len(carved.test) == 20 and len(carved.train) == 180
    assert ids(carved.test) | ids(carved.train) == ids(train) and not ids(carved.test) & ids(carved.train)
    assert 255 not in ids(carved.test)  # no test image
    assert carved.test_sha256 == tensor_digest(carved.test) != data.test_sha256
    assert torch.equal(carved.test_labels, carved.test[:, 0, 0, 0].long())  # labels follow their images
    assert torch.equal(carve_validation(data, 0.1).test, carved.test)  # a fixed split
    with pytest.raises(UsageError, match="too few"):
        carve_validation(data, 0.001)


def test_variants_values_round_trip_through_toml():
    import tomllib

    from bench.tune.variants import toml_value

    for value in (1e-05, 0.000123456789, 3.0, 0, 200, True, "a \"quoted\" \\ text", 0.5):
        assert tomllib.loads(f"x = {toml_value(value)}")["x"] == value


def test_objective_keys_and_directions():
    from bench.tune.objective import objective_directions, score

    assert objective_directions(("recon_mse", "probe_accuracy")) == [
        ("recon_mse", "lower", "minimize"), ("probe_accuracy", "higher", "maximize")]
    assert score("recon_sharpness_ratio", 0.5) == score("recon_sharpness_ratio", 2.0) > 0  # |ln ratio|
    with pytest.raises(UsageError, match="unknown key"):
        objective_directions(("fid",))


# --- studies -------------------------------------------------------------------------------------------------------
def _studies(out: Path) -> dict:
    import optuna

    storage = f"sqlite:///{out / 'results.db'}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def _spent(study) -> int:
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


@pytest.mark.soak  # ~1-2 min of smoke trials: with the soak in CI's second step
def test_tune_stores_its_studies_writes_variants_that_run_and_continues(tmp_path, tmp_cache, capsys):
    from bench.core.layout import OutDir
    from bench.core.records import read_runs
    from bench.core.store import Store
    from bench.runs.resolve import load_variants
    from reports.render import settings_origin

    out = tmp_path / "out"
    args = ["tune", "--methods", "faae,aae", *SMOKE, "--trials", "4", "--out", str(out)]
    assert main(args) == 0
    studies = _studies(out)
    assert sorted(s.split("-")[0] for s in studies) == ["aae", "faae"]
    for study in studies.values():
        assert _spent(study) == 4 and len(study.trials) == 4
        # trial 0 is the protocol's own settings: the baseline the search is measured against
        baseline = [t for t in study.trials if t.user_attrs.get("baseline")]
        assert [t.number for t in baseline] == [0]
        assert baseline[0].params == {"optim.lr_g": 3e-4, "optim.lr_d": 1e-3, "optim.beta1": 0.9,
                                      "optim.lr_adv_scale": 1.0}
        prov = study.user_attrs["provenance"]
        assert prov["budget"]["trials"] == 4 and prov["budget"]["max_steps"] == 6 and prov["seeds"] == [0]
        assert prov["objective"] == [{"key": "recon_mse", "direction": "lower", "study": "minimize"}]
        assert len(prov["validation"]["sha256"]) == 64
        # every trial was scored on the validation split: its runs' values record that digest, not the test's
        trial_store = Store(OutDir(out / "tune" / study.study_name).store, readonly=True)
        for run in read_runs(trial_store):
            assert run.values["recon_mse"].provenance["test_split_sha256"] == prov["validation"]["sha256"][:16]
    path = out / "tuned-mnist5k-smoke.toml"
    text = path.read_text()
    assert "validation" in text and "4 trials" in text
    variants = load_variants(path)
    assert set(variants) == {"faae-tuned", "aae-tuned"}
    assert variants["faae-tuned"].overrides["origin"]["study"].startswith("faae-mnist5k-smoke-recon_mse-")

    assert main(["run", "--variants", str(path), "--methods", "faae-tuned,aae-tuned", *SMOKE, "--metrics", "mse",
                 "--out", str(out), "--no-report", "--no-progress"]) == 0
    runs = read_runs(Store(OutDir(out).store, readonly=True))
    assert sorted(r.label for r in runs) == ["aae-tuned", "faae-tuned"]
    for run in runs:
        assert settings_origin(run).startswith("settings tuned by study ")

    assert main(args) == 0  # a rerun continues: the budget is spent, nothing more runs
    assert [len(s.trials) for s in _studies(out).values()] == [4, 4]
    assert main([*args[:-4], "--trials", "5", "--out", str(out)]) == 0  # a bigger budget adds its trials
    assert [_spent(s) for s in _studies(out).values()] == [5, 5]


def test_settings_origin_of_authors_protocol_and_overridden_rows():
    from bench.core.records import RunRecord
    from bench.runs.resolve import resolve_config
    from reports.render import settings_origin

    def record(method: str, protocol: str, sets: list[str] = ()) -> RunRecord:
        from bench.core.config import parse_overrides

        cfg = resolve_config(method, "cifar10", protocol, 0, parse_overrides(list(sets)))
        return RunRecord(run_id="r", method=method, variant=method, dataset="cifar10", protocol=protocol, seed=0,
                         config=cfg.to_dict())

    assert settings_origin(record("ali", "paper")) == "the authors' settings (docs/methods.md)"
    assert settings_origin(record("ali", "quick")) == "the quick protocol's settings"
    assert settings_origin(record("ali", "paper", ["optim.lr_g=3e-4"])) == \
        "the authors' settings (docs/methods.md); overridden: optim.lr_g=0.0003 (not 0.0001)"


def _tune_process(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", "tune", "--methods", "faae", *SMOKE, "--out", str(out),
                             "--heartbeat", "1", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.soak  # ~40 s (two processes, a heartbeat's grace): with the fault-injection soak in CI's second step
def test_a_killed_tune_continues_and_reruns_the_killed_trial(tmp_path, tmp_cache):
    """SIGKILL mid-trial: the trial stays 'running' in the storage; the rerun waits out its heartbeat's grace,
    fails it, runs it again with the same settings (resuming its run) and completes the budget."""
    from optuna.trial import TrialState

    out = tmp_path / "out"
    budget = ["--trials", "4", "--steps", "60"]  # 60 steps, a checkpoint at each epoch's end (14 steps)

    def in_progress() -> list[Path]:
        """Trial runs held by a process (lease.json) with a checkpoint written."""
        return [d for d in out.glob("tune/*/runs/*") if (d / "lease.json").exists() and (d / "last.pt").exists()]

    proc = _tune_process(out, *budget)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        done = any(s.trials[0].state == TrialState.COMPLETE for s in _studies(out).values()) \
            if (out / "results.db").exists() else False
        if done and in_progress():
            break
    assert proc.poll() is None, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_dir,) = in_progress()
    (study,) = _studies(out).values()
    killed = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1

    rerun = _tune_process(out, *budget)
    log = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, log
    (study,) = _studies(out).values()
    assert _spent(study) == 4
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [killed[0].number]
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed[0].params
    # the same settings, the same run: taken over from the dead worker and resumed from its checkpoint
    assert retry.user_attrs["runs"] == [run_dir.name]
    history = [json.loads(line) for line in (run_dir / "lease.history.jsonl").read_text().splitlines()]
    assert any(e["event"] == "claim" and e["took_over"] for e in history)
    assert [e["from_step"] for e in history if e["event"] == "train"][-1] > 0
    assert (out / "tuned-mnist5k-smoke.toml").exists()


@pytest.mark.soak  # two worker processes sharing a study: with the soak in CI's second step
def test_two_worker_processes_share_one_study(tmp_path, tmp_cache):
    """Two commands started together on one --out share the study (one of them with a local worker process of its
    own, --workers 2): the budget is spent once, not once per worker."""
    out = tmp_path / "out"
    budget = ["--trials", "6", "--steps", "30"]
    procs = [_tune_process(out, *budget, "--workers", "2"), _tune_process(out, *budget)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    (study,) = _studies(out).values()
    assert _spent(study) == 6
    workers = {t.user_attrs.get("worker") for t in study.trials if t.user_attrs.get("outcome") == "scored"}
    assert len(workers) >= 2, workers
