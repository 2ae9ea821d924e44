"""The `videoccam` command through its real entry points: a subprocess, as a user runs it, and main()."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

import videoccam.assets
import videoccam_cli
from videoccam.cli import main
from videoccam.constants import DEFAULT_NUM_FRAMES, TEMPORAL_ROPE_MODES
from videoccam.modeling import VideoCCAMForConditionalGeneration
from videoccam.session import ChatSession
from videoccam.testing import make_tiny_checkpoint

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "counter.mp4"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videoccam.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def tc_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny"
    done = run("make-tiny-checkpoint", str(out), "--frame-block-mask", "--temporal-rope", "tc")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == out and (out / "config.json").exists()
    return out


def test_chat_about_the_bundled_clip_and_an_image(tc_checkpoint, tmp_path):
    image = tmp_path / "frame.png"
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(image)
    done = run("chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--image", str(image),
               "--num-frames", "6", "--max-new-tokens", "5", "--temporal-rope", "frame", "what happens ?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_missing_video_is_a_clear_error(tc_checkpoint, tmp_path):
    missing = tmp_path / "nope.mp4"
    done = run("chat", "--model", str(tc_checkpoint), "--video", str(missing), "hi")
    assert done.returncode == 2
    assert "nope.mp4" in done.stderr and "Traceback" not in done.stderr


def test_flash_attention_with_block_mask_is_refused(tc_checkpoint):
    done = run("chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--attn-implementation",
               "flash_attention_2", "hi")
    assert done.returncode != 0 and "Traceback" not in done.stderr


def test_help():
    for args in ([], ["chat"], ["make-tiny-checkpoint"]):
        assert run(*args, "--help").returncode == 0


# --- the light entry point: videoccam_cli ------------------------------------------------------------
HEAVY = ("torch", "transformers", "videoccam")


def run_snippet(code: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_help_and_version_import_neither_videoccam_nor_torch():
    """--help, chat --help and --version are answered by videoccam_cli alone (the stdlib): none of
    torch, transformers or any videoccam module (the package init imports transformers) is loaded."""
    done = run_snippet(
        "import sys, videoccam_cli\n"
        "for argv in (['--help'], ['chat', '--help'], ['-q', 'chat', '--help'], ['--version'],\n"
        "             ['train', '--help'], ['data', 'check', '--help'], ['make-tiny-checkpoint', '--help']):\n"
        "    try:\n"
        "        videoccam_cli.main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), (argv, exit.code)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n")
    assert done.stdout.splitlines()[-1] == "[]"
    assert "--video" in done.stdout and "--resume" in done.stdout  # the invoked commands' options are there


def test_only_the_invoked_command_imports_its_option_constants():
    done = run_snippet(
        "import sys, videoccam_cli\n"
        "parser = videoccam_cli.build_parser(['chat'])\n"
        "assert parser.parse_args(['chat', 'hi']).question == 'hi'\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
        "videoccam_cli.build_parser()  # all commands: synth and ablate list the library's constants\n"
        "print('videoccam.synth' in sys.modules)\n")
    assert done.stdout.splitlines() == ["[]", "True"]


def test_version():
    from importlib.metadata import version

    expected = f"videoccam {version('videoccam')}\n"
    assert run("--version").stdout == expected
    script = Path(sys.executable).parent / "videoccam"  # the console script, where installed next to python
    commands = [[sys.executable, "-m", "videoccam", "--version"], [sys.executable, "-m", "videoccam_cli", "--version"]]
    for command in commands + ([[str(script), "--version"]] if script.exists() else []):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert (done.returncode, done.stdout) == (0, expected), (command, done.stderr)


def test_console_script_is_the_light_module():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["videoccam"] == "videoccam_cli:main"
    assert "videoccam_cli" in pyproject["tool"]["setuptools"]["py-modules"]
    import videoccam_cli

    assert main.__module__ == "videoccam.cli" and videoccam_cli.main is not main  # main delegates


def test_missing_module_names_the_extra():
    from videoccam_cli import missing_module_message

    assert missing_module_message("peft", "train") == (
        "this command needs the 'train' extra: pip install \"videoccam[train]\" (missing module: peft)")
    assert missing_module_message("av", "chat") == (
        "this command needs the 'video' extra: pip install \"videoccam[video]\" (missing module: av)")
    assert "'train' extra" in missing_module_message("yaml.constructor", "data")  # pyyaml: import name yaml
    assert "'serve' extra" in missing_module_message("fastapi")
    assert "'video' extra" in missing_module_message("pysubs2")  # the first extra that is not dev
    assert "videoccam needs torch" in missing_module_message("torch", "chat")  # a core dependency
    assert missing_module_message("flash_attn", "chat") is None  # not a requirement: the error as it is


def test_only_a_missing_module_gets_the_extra_hint():
    from videoccam_cli import _error_message

    missing = ModuleNotFoundError("No module named 'peft'", name="peft")
    assert "'train' extra" in _error_message(missing, "train")
    too_old = ImportError("cannot import name 'LoraConfig' from 'peft'", name="peft")  # installed, wrong version
    assert _error_message(too_old, "train") == "cannot import name 'LoraConfig' from 'peft'"
    assert _error_message(RuntimeError("a bug"), "train") is None  # re-raised: a traceback


@pytest.mark.parametrize("blocked, argv, extra", [
    ("av", ["chat", "--video", str(EXAMPLE.parent / "first.mp4"), "hi"], "video"),
    ("yaml", ["train", "tiny-instruct"], "train"),
])
def test_a_missing_extra_is_one_line(blocked, argv, extra):
    """A module of an extra made unimportable (None in sys.modules): the command names the extra."""
    done = subprocess.run(
        [sys.executable, "-c", (f"import sys; sys.modules[{blocked!r}] = None\n"
                                f"import videoccam_cli; sys.exit(videoccam_cli.main({argv!r}))")],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"videoccam {argv[0]}: error: this command needs the '{extra}' extra: "
                           f"pip install \"videoccam[{extra}]\" (missing module: {blocked})\n")


def test_chat_imports_neither_synth_nor_train():
    """A chat on the bundled model loads the model, not the synthetic world or the trainer."""
    first = EXAMPLE.parent / "first.mp4"
    done = run_snippet(
        "import sys, videoccam_cli\n"
        f"code = videoccam_cli.main(['chat', '--video', {str(first)!r}, '--max-new-tokens', '4', '--no-stream', "
        "'which colour flashed first ?'])\n"
        "assert code == 0, code\n"
        "print(sorted({m for m in sys.modules if m.startswith(('videoccam.synth', 'videoccam.train'))}))\n")
    assert done.stdout.splitlines()[-1] == "[]", done.stdout


# accelerate made absent as transformers sees it (find_spec finds nothing) and as an import sees it
WITHOUT_ACCELERATE = """
import importlib.abc, importlib.util, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "accelerate":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] == "accelerate" else _find_spec(name, package))
import videoccam_cli
sys.exit(videoccam_cli.main(sys.argv[1:]))
"""


def test_chat_needs_no_accelerate(tc_checkpoint):
    """The README quick start installs the video extra only, which has no accelerate: the default
    --device auto loads the model without device_map; --device-map says it needs accelerate."""
    chat = ["chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--num-frames", "4",
            "--max-new-tokens", "3", "--no-stream", "hi"]
    for extra, code in ([], 0), (["--device", "cpu"], 0), (["--device-map", "auto"], 2):
        done = subprocess.run([sys.executable, "-c", WITHOUT_ACCELERATE, *chat, *extra], capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == code, (extra, done.stderr)
    assert done.stderr.splitlines()[-1] == ("videoccam chat: error: --device-map auto needs the accelerate "
                                            "package: pip install accelerate (or use --device)")


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="needs a CPU-only machine")
def test_a_missing_device_is_one_line(capsys):
    for device in ("cuda", "cuda:1", "mps"):
        assert main(["chat", "--device", device, "--video", str(EXAMPLE), "hi"]) == 2
        err = capsys.readouterr().err
        kind = device.split(":")[0]
        assert err == (f"videoccam chat: error: --device {device}: no {kind} device on this machine or in this "
                       "torch build (available: cpu)\n")
    assert main(["chat", "--device", "gpu0", "hi"]) == 2
    assert capsys.readouterr().err == "videoccam chat: error: --device gpu0: not a device name (available: cpu)\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", "--device", "cpu", "--device-map", "auto", "hi"])
    assert exit_info.value.code == 2 and "--device-map replaces --device" in capsys.readouterr().err


def test_device_auto_prefers_cuda_then_mps(monkeypatch):
    from videoccam.cli import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    available = r"\(available: cuda:0, cuda:1, mps, cpu\)"
    with pytest.raises(ValueError, match=rf"--device cuda:2: no such cuda device {available}"):
        resolve_device("cuda:2")


# --- in-process: videoccam.cli.main ----------------------------------------------------------------
QUESTIONS = ("what happens in the video ?", "which colour came first ?")
CHAT_FLAGS = ("--num-frames", "6", "--max-new-tokens", "8")


@pytest.fixture(scope="module")
def strong_checkpoint(tmp_path_factory):
    """Large weights, TC options on: answers are many distinct tokens and depend on the history."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("cli") / "strong", frame_block_mask=True,
                                temporal_rope="tc", text_config={"initializer_range": 0.3},
                                projector_config={"initializer_range": 0.3})


def library_answers(checkpoint: Path, **video_kwargs) -> list[str]:
    """What the library answers to QUESTIONS, in one conversation about EXAMPLE."""
    model = VideoCCAMForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    session = ChatSession(model, AutoProcessor.from_pretrained(checkpoint), [EXAMPLE],
                          video_kwargs={"num_frames": 6, "sample": "uniform", **video_kwargs})
    answers = [session.ask(q, max_new_tokens=8, do_sample=False).strip() for q in QUESTIONS]
    assert all(len(set(a)) > 2 for a in answers) and answers[0] != answers[1]
    return answers


@pytest.fixture(scope="module")
def expected(strong_checkpoint):
    """The library's answers with the video loaded as the CLI does: decoded at the model's input
    size (the tiny checkpoint's 32 x 32, from its image-processor config), the CLI's default --size."""
    return library_answers(strong_checkpoint, size=32)


class Spy(io.StringIO):
    """A stdout that records each write."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[str] = []

    def write(self, s: str) -> int:
        self.pieces.append(s)
        return super().write(s)


def test_stream_and_no_stream_print_the_same(strong_checkpoint, expected, monkeypatch):
    printed = {}
    for flag in ("--stream", "--no-stream"):
        out = Spy()
        monkeypatch.setattr(sys, "stdout", out)
        assert main(["chat", "--model", str(strong_checkpoint), "--video", str(EXAMPLE), *CHAT_FLAGS, flag,
                     QUESTIONS[0]]) == 0
        printed[flag] = out
    assert printed["--stream"].getvalue() == printed["--no-stream"].getvalue() == expected[0] + "\n"
    assert len([p for p in printed["--stream"].pieces if p]) > 3  # written piece by piece
    assert len([p for p in printed["--no-stream"].pieces if p]) <= 2  # written once


def test_interactive_mode_through_main(strong_checkpoint, expected, monkeypatch, capsys):
    base = ["chat", "--model", str(strong_checkpoint), "--video", str(EXAMPLE), *CHAT_FLAGS]
    for stdin, argv, answers in [
        ("\n".join(QUESTIONS) + "\n", base, expected),  # no question: read stdin to EOF
        (f"{QUESTIONS[0]}\nexit\n{QUESTIONS[1]}\n", [*base, "--no-stream"], expected[:1]),  # "exit" ends
        (f"  {QUESTIONS[1]}  \n\n{QUESTIONS[0]}\n", [*base, "-i", QUESTIONS[0]], expected),  # -i + question
    ]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        assert main(argv) == 0
        assert capsys.readouterr().out == "".join(f"{a}\n" for a in answers)


def test_interactive_mode_in_a_subprocess(strong_checkpoint, expected):
    done = subprocess.run(
        [sys.executable, "-m", "videoccam.cli", "chat", "--model", str(strong_checkpoint), "--video", str(EXAMPLE),
         *CHAT_FLAGS], input="\n".join(QUESTIONS) + "\n", capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(f"{a}\n" for a in expected)  # two answers, no prompt (stdin is a pipe)


def test_default_model(strong_checkpoint, expected, tmp_path, monkeypatch, capsys):
    argv = ["chat", "--video", str(EXAMPLE), *CHAT_FLAGS, QUESTIONS[0]]
    missing = tmp_path / "not-there"
    monkeypatch.setattr(videoccam.assets, "DEFAULT_MODEL_DIR", missing)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--model" in err and "Traceback" not in err

    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    shutil.copy(strong_checkpoint / "config.json", incomplete)
    monkeypatch.setattr(videoccam.assets, "DEFAULT_MODEL_DIR", incomplete)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(incomplete) in err and "model.safetensors" in err and "processor_config.json" in err

    monkeypatch.setattr(videoccam.assets, "DEFAULT_MODEL_DIR", strong_checkpoint)
    assert videoccam.assets.default_model_path() == strong_checkpoint
    assert main(argv) == 0
    assert capsys.readouterr().out == expected[0] + "\n"


def test_sampling_flags(strong_checkpoint, capsys):
    base = ["chat", "--model", str(strong_checkpoint), "--video", str(EXAMPLE), *CHAT_FLAGS, "--no-stream"]
    assert main([*base, "--temperature", "0.8", "--top-p", "0.9", QUESTIONS[0]]) == 0
    assert capsys.readouterr().out.strip()
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--temperature", "0.8", "--top-p", "1.5", QUESTIONS[0]])
    assert exit_info.value.code == 2 and "--top-p" in capsys.readouterr().err


@pytest.fixture
def load_video_calls(monkeypatch):
    """Every load_video call of the CLI: its keyword arguments and the Video it returned."""
    import videoccam.processing.video as video_module

    calls = []
    real = video_module.load_video

    def spy(source, **kwargs):
        video = real(source, **kwargs)
        calls.append((kwargs, video))
        return video

    monkeypatch.setattr(video_module, "load_video", spy)
    return calls


@pytest.mark.parametrize("flags, indices, frame_shape", [
    # counter.mp4: 90 frames at 30 fps, 320x240; the tiny checkpoint's input size is 32x32
    (["--num-frames", "4"], [11, 33, 56, 78], (32, 32, 3)),
    (["--fps", "2"], [0, 15, 30, 45, 60, 75], (32, 32, 3)),  # --fps alone implies --sample fps
    (["--sample", "fps", "--fps", "10", "--max-frames", "5"], [9, 27, 45, 63, 81], (32, 32, 3)),
    (["--num-frames", "4", "--start", "1", "--end", "2"], [33, 41, 48, 56], (32, 32, 3)),
    (["--num-frames", "2", "--size", "48x40"], [22, 67], (40, 48, 3)),
    (["--num-frames", "2", "--size", "20"], [22, 67], (20, 20, 3)),
    (["--num-frames", "2", "--size", "source"], [22, 67], (240, 320, 3)),
])
def test_video_flags_reach_load_video(tc_checkpoint, load_video_calls, flags, indices, frame_shape):
    assert main(["chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--max-new-tokens", "1",
                 "--no-stream", *flags, "hi"]) == 0
    [(kwargs, video)] = load_video_calls
    assert video.indices.tolist() == indices
    assert video.frames.shape[1:] == frame_shape
    assert np.allclose(video.timestamps, np.array(indices) / 30)
    assert kwargs["sample"] == ("fps" if "--fps" in flags else "uniform")


def test_size_source_decodes_as_the_library_does_without_size(strong_checkpoint, capsys):
    """--size source: full-size frames, resized by the image processor only (as the library without size=)."""
    argv = ["chat", "--model", str(strong_checkpoint), "--video", str(EXAMPLE), *CHAT_FLAGS, "--no-stream"]
    assert main([*argv, "--size", "source", QUESTIONS[0]]) == 0
    assert capsys.readouterr().out == library_answers(strong_checkpoint)[0] + "\n"


@pytest.mark.parametrize("flags, message", [
    (["--sample", "fps"], "--sample fps needs --fps"),
    (["--sample", "uniform", "--fps", "2"], "--fps applies to --sample fps, not --sample uniform"),
    (["--max-frames", "8"], "--max-frames applies to --fps sampling"),
    (["--fps", "0"], "argument --fps: must be a number > 0"),
    (["--start", "-1"], "argument --start: must be a number of seconds >= 0"),
    (["--start", "2", "--end", "1"], "--end (1.0 s) must be after --start (2.0 s)"),
    (["--size", "big"], "argument --size: expected S, WxH"),
    (["--num-frames", "0"], "argument --num-frames: must be an integer >= 1"),
    (["--subtitles", "a.srt", "--video", str(EXAMPLE)], "--subtitles needs exactly one --video (got 2)"),
])
def test_bad_video_flags_are_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", "--video", str(EXAMPLE), *flags, "hi"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"videoccam chat: error: {message}" in err and "Traceback" not in err


def test_num_frames_defaults_to_the_models_processor_setting(tc_checkpoint, tmp_path, load_video_calls):
    """Without --num-frames the chat samples the processor's num_frames (processor_config.json)."""
    model = shutil.copytree(tc_checkpoint, tmp_path / "five")
    config = json.loads((model / "processor_config.json").read_text())
    (model / "processor_config.json").write_text(json.dumps({**config, "num_frames": 5}))
    assert videoccam_cli.build_parser(["chat"]).parse_args(["chat", "hi"]).num_frames is None
    assert main(["chat", "--model", str(model), "--video", str(EXAMPLE), "--max-new-tokens", "1", "--no-stream",
                 "hi"]) == 0
    [(kwargs, video)] = load_video_calls
    assert kwargs["num_frames"] == 5 and len(video.indices) == 5


@pytest.mark.parametrize("argv", [["chat", "--video", str(EXAMPLE)], ["make-tiny-checkpoint", "OUT"]])
def test_an_unknown_temporal_rope_is_the_librarys_one_line_error(argv, tmp_path, capsys):
    """The parser does not list the modes; the library's ConfigError, which does, is the message (exit 2),
    before anything is loaded or written."""
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main([*argv, "--temporal-rope", "spiral", "hi" if argv[0] == "chat" else "--seed=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"videoccam {argv[0]}: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "'spiral'" in err and all(repr(mode) in err for mode in TEMPORAL_ROPE_MODES)
    assert not (tmp_path / "out").exists()
    assert main([*argv[:1], *argv[1:], "--rope-gamma", "-1", "hi" if argv[0] == "chat" else "--seed=0"]) == 2
    assert "rope_gamma must be finite and >= 0, got -1.0" in capsys.readouterr().err


def test_data_check_num_frames_defaults_to_the_library_or_the_model(tc_checkpoint, tmp_path, monkeypatch, capsys):
    import videoccam.data as data

    seen = []

    def fake_check(path, processor, **kwargs):
        seen.append(kwargs["num_frames"])
        return data.DataCheckReport(Path(path), num_records=0, problems=[])

    monkeypatch.setattr(data, "run_data_check", fake_check)
    records = tmp_path / "train.json"
    records.write_text("[]")
    model = shutil.copytree(tc_checkpoint, tmp_path / "seven")
    config = json.loads((model / "processor_config.json").read_text())
    (model / "processor_config.json").write_text(json.dumps({**config, "num_frames": 7}))
    for extra in ([], ["--model", str(model)], ["--model", str(model), "--num-frames", "3"]):
        assert main(["data", "check", str(records), *extra]) == 0
    assert seen == [DEFAULT_NUM_FRAMES, 7, 3]


def test_a_start_past_the_end_names_it(tc_checkpoint, capsys):
    assert main(["chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--start", "5", "hi"]) == 2
    assert "start (5.0 s) is at or past the end of the clip" in capsys.readouterr().err


def test_subtitles_go_before_the_first_question(tc_checkpoint, tmp_path, monkeypatch, capsys):
    srt = tmp_path / "counter.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\none\n\n2\n00:00:01,000 --> 00:00:02,000\n<i>two</i>\n\n"
                   "3\n00:00:05,000 --> 00:00:06,000\nnever shown\n\n")
    asked = []
    real_ask = ChatSession.ask
    monkeypatch.setattr(ChatSession, "ask", lambda self, q, *a, **k: asked.append(q) or real_ask(self, q, *a, **k))
    monkeypatch.setattr(sys, "stdin", io.StringIO("and then ?\n"))
    # 3 frames of counter.mp4: 0.5, 1.5 and 2.5 s; the third has no subtitle line
    assert main(["chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--num-frames", "3",
                 "--max-new-tokens", "1", "--subtitles", str(srt), "-i", "what is said ?"]) == 0
    assert asked == ["This video's subtitles are listed below:\none\ntwo\nwhat is said ?", "and then ?"]
    capsys.readouterr()
    missing = tmp_path / "none.srt"
    assert main(["chat", "--model", str(tc_checkpoint), "--video", str(EXAMPLE), "--subtitles", str(missing),
                 "hi"]) == 2
    assert f"videoccam chat: error: {missing}: no such subtitle file" in capsys.readouterr().err


def test_train_passes_overwrite(monkeypatch, capsys):
    import videoccam.train

    calls = []
    monkeypatch.setattr(videoccam.train, "load_config", lambda path, overrides: "config")
    monkeypatch.setattr(videoccam.train, "train", lambda config, **kwargs: calls.append(kwargs) or "runs/x/final")
    assert main(["train", "tiny-instruct", "--overwrite"]) == 0
    assert main(["train", "tiny-instruct", "--resume"]) == 0
    assert calls[0] == {"resume": None, "overwrite": True}
    assert calls[1]["resume"] == "latest" and not calls[1].get("overwrite", False)
    assert capsys.readouterr().out == "runs/x/final\nruns/x/final\n"


def test_package_data_ships_the_default_model():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "default_model/*" in pyproject["tool"]["setuptools"]["package-data"]["videoccam.assets"]
    assert videoccam.assets.DEFAULT_MODEL_DIR.parent == Path(videoccam.assets.__file__).resolve().parent


def test_timings_flag_prints_each_answers_stages(strong_checkpoint, monkeypatch, capsys):
    """--timings: one line per answer on stderr with every stage; the first answer carries the decode and
    the encoding, the second (media encoded once) none of them."""
    monkeypatch.setattr("sys.stdin", io.StringIO(QUESTIONS[1] + "\n"))
    assert main(["chat", "--model", str(strong_checkpoint), "--video", str(EXAMPLE), *CHAT_FLAGS, "--timings", "-i",
                 QUESTIONS[0]]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[timings]")]
    assert len(lines) == 2
    stage = {name: [float(line.split(f"{name} ")[1].split("s")[0]) for line in lines]
             for name in ("decode", "vision", "projector", "prefill")}
    assert stage["decode"][0] > 0 and stage["vision"][0] > 0 and stage["prefill"][0] > 0
    assert stage["decode"][1] == stage["vision"][1] == stage["projector"][1] == 0
    assert all("8 new tokens" in line and "tok/s" in line for line in lines)
