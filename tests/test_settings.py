from pathlib import Path

import pytest

from ltx2_worker.settings import SETTINGS, SettingsError, load_settings


def test_config_ini_loads_with_documented_defaults():
    s = load_settings(env={})
    assert s.comfy_url == "http://127.0.0.1:8188"
    assert s.job_timeout_s == 540
    assert s.comfy_output_dir == Path("/comfyui/output")


def test_environment_overrides_config():
    s = load_settings(env={"COMFY_URL": "http://10.1.2.3:9000/", "JOB_TIMEOUT_S": "12.5",
                           "COMFY_OUTPUT_DIR": "/data/out"})
    assert s.comfy_url == "http://10.1.2.3:9000"
    assert s.job_timeout_s == 12.5
    assert s.comfy_output_dir == Path("/data/out")


@pytest.mark.parametrize("env,needle", [
    ({"JOB_TIMEOUT_S": "soon"}, "JOB_TIMEOUT_S"),
    ({"JOB_TIMEOUT_S": "0"}, "greater than 0"),
    ({"COMFY_URL": "127.0.0.1:8188"}, "COMFY_URL"),
    ({"MAX_FRAMES": "100"}, r"8k\+1"),
    ({"MIN_SIZE": "2000"}, "MIN_SIZE"),
    ({"SIZE_MULTIPLE": "32"}, "DEFAULT_HEIGHT"),
    ({"DEFAULT_FRAME_COUNT": "120"}, "DEFAULT_FRAME_COUNT"),
    ({"DOWNLOAD_ATTEMPTS": "0"}, "DOWNLOAD_ATTEMPTS"),
    ({"DOWNLOAD_TIMEOUT_S": "-1"}, "DOWNLOAD_TIMEOUT_S"),
    ({"X264_PRESET": "quick"}, "X264_PRESET.*veryfast"),
    ({"X264_CRF": "52"}, "X264_CRF.*0 \\(lossless\\) to 51"),
])
def test_bad_values_name_the_setting(env, needle):
    with pytest.raises(SettingsError, match=needle):
        load_settings(env=env)


def test_every_setting_has_a_distinct_environment_variable():
    envs = [s.env for s in SETTINGS]
    assert len(envs) == len(set(envs))


def test_settings_import_nothing_above_them():
    """Imports go one way, from the job down to the settings: loading settings pulls in no job or ladder code."""
    import subprocess
    import sys

    from ltx2_worker.settings import ROOT

    code = ("import sys, ltx2_worker.settings; "
            "print(sorted(m for m in sys.modules if m.startswith('ltx2_worker.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "['ltx2_worker.rungs', 'ltx2_worker.settings']", out.stderr
