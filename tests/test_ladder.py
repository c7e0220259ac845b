import dataclasses

import pytest

from ltx2_worker.job import parse_request
from ltx2_worker.ladder import step_down
from ltx2_worker.rungs import Rung, parse_ladder
from ltx2_worker.settings import load_settings

S = load_settings(env={})
REQ = parse_request({"prompt": "keep me", "width": 1280, "height": 720, "frame_count": 121, "seed": 3}, S)


def test_parse_ladder():
    assert parse_ladder("retry, scale:0.75 ,frames:0.5") == (
        Rung("retry"), Rung("scale:0.75", scale=0.75), Rung("frames:0.5", frames=0.5))
    assert parse_ladder("") == ()


@pytest.mark.parametrize("bad", ["again", "scale:2", "frames:0", "scale:x", "retry:1"])
def test_bad_rungs_are_named(bad):
    with pytest.raises(ValueError, match=bad):
        parse_ladder(f"retry, {bad}")


def test_bad_ladder_in_environment_names_the_variable():
    from ltx2_worker.settings import SettingsError

    with pytest.raises(SettingsError, match="OOM_LADDER"):
        load_settings(env={"OOM_LADDER": "retry, smaller"})


def test_steps_shrink_size_on_the_grid_and_frames_to_8k_plus_1_and_keep_the_rest():
    scaled = step_down(Rung("scale:0.75", scale=0.75), REQ, 16, 256)
    assert (scaled.width, scaled.height, scaled.frame_count) == (960, 528, 121)
    fewer = step_down(Rung("frames:0.5", frames=0.5), scaled, 16, 256)
    assert (fewer.width, fewer.height, fewer.frame_count) == (960, 528, 57)
    same = dataclasses.replace(fewer, width=REQ.width, height=REQ.height, frame_count=REQ.frame_count)
    assert same == REQ  # prompt, seed, fps, audio... untouched
    assert step_down(Rung("retry"), REQ, 16, 256) is REQ


def test_a_rung_that_cannot_shrink_is_skipped():
    tiny = dataclasses.replace(REQ, width=256, height=256, frame_count=9)
    assert step_down(Rung("scale:0.5", scale=0.5), tiny, 16, 256) is None


def test_the_frames_rung_keeps_keyframes_in_their_place_in_time():
    s = S
    req = parse_request({"prompt": "x", "frame_count": 121, "image": "aGk=",
                         "keyframes": [{"image": "aGk=", "frame": 60}, {"image": "aGk=", "frame": -1}]}, s)
    shrunk = step_down(Rung("frames:0.5", frames=0.5), req, 8, 256)
    assert shrunk.frame_count == 57 and [k.frame for k in shrunk.keyframes] == [0, 28, 56]
    crowded = parse_request({"prompt": "x", "frame_count": 17, "keyframes": [
        {"image": "aGk=", "frame": 15}, {"image": "aGk=", "frame": 16}]}, s)
    assert step_down(Rung("frames:0.5", frames=0.5), crowded, 8, 256) is None, "two keyframes on one frame"
