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
    ({"JOB_TIMEOUT_S": "0"}, "JOB_TIMEOUT_S = '0': must be from 1 to 86400"),
    ({"COMFY_URL": "127.0.0.1:8188"}, "COMFY_URL"),
    ({"MAX_FRAMES": "100"}, r"8k\+1"),
    ({"MAX_FRAMES": "120"}, r"^MAX_FRAMES \(120\) must be 8k\+1"),  # its own error, not the default frame count's
    ({"MAX_FRAMES": "97"}, r"^DEFAULT_FRAME_COUNT \(121\) must be 8k\+1 and at most MAX_FRAMES \(97\)"),
    ({"MAX_FRAMES": "many"}, r"MAX_FRAMES = 'many': must be auto or a whole number from 9 to 2049"),
    ({"DEFAULT_FRAME_COUNT": "481"}, r"at most MAX_FRAMES on auto \(257, what every memory class allows\)"),
    ({"DEFAULT_FPS": "8", "DEFAULT_FRAME_COUNT": "185"}, r"spans more than LTX-2's 20 s"),
    ({"MAX_CLIP_PIXELS": "1000000"}, r"more pixels than MAX_CLIP_PIXELS \(1000000\)"),
    ({"MIN_SIZE": "2000"}, "MIN_SIZE"),
    ({"SIZE_MULTIPLE": "32"}, "DEFAULT_HEIGHT"),
    ({"DEFAULT_FRAME_COUNT": "120"}, "DEFAULT_FRAME_COUNT"),
    ({"DOWNLOAD_ATTEMPTS": "0"}, "DOWNLOAD_ATTEMPTS"),
    ({"DOWNLOAD_TIMEOUT_S": "-1"}, "DOWNLOAD_TIMEOUT_S"),
    ({"X264_PRESET": "quick"}, "X264_PRESET.*veryfast"),
    ({"X264_CRF": "52"}, "X264_CRF = '52': must be from 0 to 51"),
])
def test_bad_values_name_the_setting(env, needle):
    with pytest.raises(SettingsError, match=needle):
        load_settings(env=env)


@pytest.mark.parametrize("name, value, rule", [
    ("PROGRESS_INTERVAL_S", "-5", "from 0 to 600"), ("DISK_RESERVE_MB", "-100", "from 0 to 1000000"),
    ("COMFY_RESERVE_VRAM_GB", "-3", "from 0 to 64"), ("MAX_CFG", "0.5", "from 1 to 100"),
    ("PREFETCH_READERS", "1.5", "a whole number from 1 to 64"), ("JOB_TIMEOUT_S", "nan", "from 1 to 86400"),
    ("MAX_INLINE_MB", "inf", "from 0.001 to 1000"),
])
def test_a_number_outside_its_range_stops_the_worker_naming_the_setting_and_the_range(name, value, rule):
    with pytest.raises(SettingsError) as info:
        load_settings(env={name: value})
    assert str(info.value) == f"environment variable {name} = {value!r}: must be {rule}"


def test_every_numeric_setting_has_a_range():
    """No number is taken unchecked: every int or float setting parses through a ranged parser, and the
    shipped config.ini's value lies inside its range."""
    defaults = load_settings(env={})
    for setting in SETTINGS:
        value = getattr(defaults, setting.field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        low, high = setting.parse.range
        assert low <= value <= high, f"{setting.env}: config.ini's {value} is outside {low}-{high}"


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
