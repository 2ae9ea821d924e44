"""synth.forked.run_forked: a child never collects garbage that owns its parent's native threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD_COLLECTS_INHERITED_GARBAGE = textwrap.dedent("""
    import gc
    import av
    from videoccam.synth.forked import run_forked
    from videoccam.testing.media import write_test_video

    path = write_test_video({path!r}, num_frames=24, fps=8)
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    frames[3].reformat(width=64, height=48, format="rgb24", threads=2)  # swscale slice threads, parent only
    cycle = [frames]
    cycle.append(cycle)  # garbage only a collection frees
    del frames, cycle
    gc.disable()  # keep it for the child
    print(run_forked(gc.collect, [()], workers=1))
""")


def test_a_forked_child_does_not_hang_on_inherited_pyav_garbage(tmp_path):
    """Before the fix the child hung in sws_freeContext / pthread_cond_destroy (a test_ablation run hung
    this way); now the parent collects before forking and freezes what is left."""
    code = CHILD_COLLECTS_INHERITED_GARBAGE.format(path=str(tmp_path / "clip.mp4"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[0]"
