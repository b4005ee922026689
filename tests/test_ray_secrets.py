"""Keys never reach Ray's files: a local Ray job (bound to 127.0.0.1, its own temp folder)
runs with a fake key in the driver's environment; afterwards no file under Ray's temp
folder holds the key, yet the workers could read it from their own environment. And
the Ray runner's one-line refusals: GPUs the cluster does not have, bad addresses."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("efficientnet_lite_pytorch")

ROOT = Path(__file__).resolve().parent.parent
FAKE = "sk-fake-ray-key-0123456789abcdefXYZ"

JOB = r'''
import os, sys
import numpy as np
import ray
from capshap.job import ImageInput, Plan, Prepared
from capshap.runners import runner_for
from capshap.settings import Settings

ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
         _temp_dir=sys.argv[1], logging_level="ERROR", log_to_driver=False,
         runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})

@ray.remote
def key_seen():
    return os.environ.get("OPENAI_API_KEY") == sys.argv[2]

seen = ray.get(key_seen.remote(), timeout=120)
rng = np.random.default_rng(0)
items = [ImageInput("a", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), None, (40, 48))]
s = Settings(max_evals=8, batch_size=8, mask="0", max_side=48, runner="ray", workers=1, in_flight=1)
outs = list(runner_for("ray")(Prepared(Plan.of(s)), items))
ray.shutdown()
print("SEEN" if seen else "NOT-SEEN", "OK" if outs and outs[0].ok else "FAILED " + str(outs[0].error))
'''


def test_keys_reach_workers_but_no_file_of_ray(tmp_path):
    temp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OPENAI_API_KEY=FAKE, AZURE_VISION_KEY=FAKE + "az",
                   RAY_USAGE_STATS_ENABLED="0")
        res = subprocess.run([sys.executable, "-c", JOB, temp, FAKE], env=env, capture_output=True, text=True,
                             timeout=300, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "SEEN OK" in res.stdout, res.stdout + res.stderr[-3000:]
        n, hits = 0, []
        for dirpath, _, names in os.walk(temp):
            for name in names:
                p = os.path.join(dirpath, name)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                n += 1
                with open(p, "rb") as f:
                    data = f.read()
                if FAKE.encode() in data or FAKE[::-1].encode() in data:
                    hits.append(p)
        assert n > 10, "Ray wrote almost nothing: the test did not look at its logs"
        assert hits == []
    finally:
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


def test_gpus_the_cluster_lacks_fail_up_front():
    from capshap.runners.ray import RayUnavailable, check_gpus

    with pytest.raises(RayUnavailable, match="has 0 GPU") as e:
        check_gpus({"CPU": 2.0}, 1)
    assert "\n" not in str(e.value)
    check_gpus({"CPU": 2.0, "GPU": 1.0}, 1)
    check_gpus({"CPU": 2.0}, 0)


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://"])
def test_bad_ray_address_is_one_line_exit_2(address, tmp_path, capsys):
    from capshap.cli import main

    src = tmp_path / "in"
    src.mkdir()
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(src / "a.png")
    code = main(["explain", str(src), "--out", str(tmp_path / "out"), "--ray", address, "--max-evals", "4", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") == 0 and "--ray" in err
