"""The stand-ins for generated videos: exact shifts, frozen and reversed clips."""
import numpy as np

from pipeline.testdata.generated import frozen, reversed_clip, translated


def test_translated_moves_frames_after_the_first_by_exactly_d():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 20, 30, 3), dtype=np.uint8)
    out = translated(frames, 3, -2)
    np.testing.assert_array_equal(out[0], frames[0])
    for t in (1, 2):
        np.testing.assert_array_equal(out[t, 0:18, 3:30], frames[t, 2:20, 0:27])   # content at p is now at p + d
    np.testing.assert_array_equal(frozen(frames), np.stack([frames[0]] * 3))
    np.testing.assert_array_equal(reversed_clip(frames), frames[::-1])
