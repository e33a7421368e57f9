"""Each RecBole compatibility fix, tested against the real library."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import recbole_ext  # noqa: F401  (restores numpy aliases)
from recbole_ext import compat

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120)


def test_numpy_aliases_restored_and_config_builds():
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_
    compat.apply()
    from recbole.config import Config

    config = Config(model="SASRec", dataset="ml-100k", config_dict={"use_gpu": False, "train_neg_sample_args": None})
    assert config["model"] == "SASRec"


def test_without_fix_recbole_config_fails_on_numpy2():
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("numpy 1 still has the aliases")
    result = _python("""
        from recbole.config import Config
        Config(model='SASRec', dataset='ml-100k')
    """)
    assert result.returncode != 0 and "float_" in result.stderr


def test_own_checkpoint_loads_with_config_inside(tmp_path):
    compat.apply()
    from recbole.config import Config

    config = Config(model="SASRec", dataset="ml-100k", config_dict={"use_gpu": False, "train_neg_sample_args": None})
    path = tmp_path / "ckpt.pth"
    torch.save({"config": config, "state_dict": {"w": torch.ones(2)}}, path, pickle_protocol=4)
    loaded = torch.load(path)
    assert loaded["config"]["model"] == "SASRec"
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))


def test_foreign_pickle_is_still_refused(tmp_path):
    compat.apply()
    path = tmp_path / "foreign.pth"
    result = _python(f"""
        import torch, fractions
        torch.save({{"obj": fractions.Fraction(1, 3)}}, {str(path)!r})
    """)
    assert result.returncode == 0, result.stderr
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path)


def test_own_file_changed_on_disk_is_refused(tmp_path):
    import fractions

    compat.apply()
    path = tmp_path / "mine.pth"
    torch.save({"obj": fractions.Fraction(1, 3)}, path)
    assert torch.load(path)["obj"] == fractions.Fraction(1, 3)
    os.utime(path, ns=(1, 1))  # someone touched it after we wrote it
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path)


def test_explicit_weights_only_is_respected(tmp_path):
    import fractions

    compat.apply()
    path = tmp_path / "mine.pth"
    torch.save({"obj": fractions.Fraction(1, 3)}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)


def test_quick_start_imports_report_is_a_no_op_and_other_tune_use_explains():
    result = _python("""
        import recbole_ext
        from recbole_ext import compat
        compat.apply()
        import recbole.quick_start
        import ray.tune
        print("REPORT:", ray.tune.report(x=1))  # what objective_function calls after each trial
        try:
            ray.tune.run(lambda config: None)
        except ImportError as e:
            print("IMPORT-ERROR:", e)
    """)
    assert result.returncode == 0, result.stderr
    real_ray_works = _python("import ray.tune").returncode == 0
    if not real_ray_works:
        assert "REPORT: None" in result.stdout
        assert "IMPORT-ERROR: ray.tune.run is unavailable" in result.stdout and "hyper-parameter tuning" in result.stdout


def test_anomaly_detection_switched_off():
    # Without the fix, importing RecBole's sequential models switches it on for the process.
    result = _python("""
        import numpy as np
        np.float_ = np.float64; np.complex_ = np.complex128; np.unicode_ = np.str_
        import torch, recbole.model.sequential_recommender
        print(torch.is_anomaly_enabled())
    """)
    assert result.stdout.strip() == "True", result.stderr
    compat.apply()
    import recbole.model.sequential_recommender  # noqa: F401

    assert torch.is_anomaly_enabled() is False


def test_pandas_3_is_refused(monkeypatch):
    import pandas as pd

    compat.check_pandas()  # the installed one is fine
    monkeypatch.setattr(pd, "__version__", "3.0.1")
    with pytest.raises(RuntimeError, match="pandas<3"):
        compat.check_pandas()
