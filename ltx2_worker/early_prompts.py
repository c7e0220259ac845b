"""A fresh worker's first prompts encoded while ComfyUI starts (EARLY_PROMPTS): the job that arrives before
ComfyUI answers starts an encoder process of its own (ltx2_worker/comfy_nodes/ltx2_early_prompts.py, in ComfyUI's
Python, under ComfyUI's flags), and its graph then reads the two conditionings from that process's file instead
of loading the text encoder and encoding them after ComfyUI's start.

Why: the GPU idles through ComfyUI's start (16-28 s on the GPU host), and the first job then spends 5-7 s on the
text encoder's load and the prompts before anything else (docs/performance.md). The encoder process does the same
work in that idle time with the same code, so the first job's frames are unchanged. Anything that goes wrong in
it (an exit, a missing file, its deadline) costs nothing but a log line: the job runs its usual graph.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
from pathlib import Path

from .model_cache import role_paths
from .settings import Settings

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parent / "comfy_nodes" / "ltx2_early_prompts.py"
CHECKPOINT_ROLE = {"standard": "checkpoint", "distilled": "checkpoint_distilled"}


class EarlyPrompts:
    """One encoder process for one job's prompts; `wait` gives the file for LTX2EncodedPrompts, or None."""

    def __init__(self, proc: subprocess.Popen, out: Path, stderr: Path, job_id: str):
        self.proc, self.out, self.stderr, self.job_id = proc, out, stderr, job_id
        self.started = time.monotonic()

    @classmethod
    def start(cls, settings: Settings, flags: tuple[str, ...], job_id: str, positive: str, negative: str,
              mode: str, stem: str) -> EarlyPrompts:
        """Start encoding `positive` and `negative` for a job of `mode`, with the files ComfyUI will load;
        `stem` names the output file in ComfyUI's input folder (removed with the job's other uploads)."""
        encoder, checkpoint = role_paths(settings, "text_encoder", CHECKPOINT_ROLE[mode])
        settings.comfy_input_dir.mkdir(parents=True, exist_ok=True)
        out = settings.comfy_input_dir / f"{stem}.pt"
        stderr = settings.comfy_input_dir / f"{stem}.log"
        cmd = [*shlex.split(settings.comfy_python), str(SCRIPT), "--comfyui-dir", str(settings.comfy_dir),
               "--text-encoder", str(encoder), "--checkpoint", str(checkpoint), "--out", str(out), "--", *flags]
        with open(stderr, "wb") as err:
            proc = subprocess.Popen(cmd, cwd=settings.comfy_dir, stdin=subprocess.PIPE, stdout=err,
                                    stderr=subprocess.STDOUT)
        try:
            proc.stdin.write(json.dumps({"positive": positive, "negative": negative}).encode())
            proc.stdin.close()
        except OSError:  # it exited at once: wait() reports why
            pass
        log.info("job %s: encoding its prompts beside ComfyUI's start (pid %d)", job_id, proc.pid)
        return cls(proc, out, stderr, job_id)

    def wait(self, deadline: float) -> Path | None:
        """The conditionings' file once the process has exited (its GPU memory given back), or None with the
        reason logged; the process is killed at `deadline`."""
        try:
            rc = self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            log.warning("job %s: the early prompt encoder was still running at its deadline; the job encodes its "
                        "prompts in ComfyUI", self.job_id)
            return None
        if rc == 0 and self.out.is_file():
            log.info("job %s: prompts encoded beside ComfyUI's start, ready %.1f s after it began (%s)", self.job_id,
                     time.monotonic() - self.started, self._last_line())
            return self.out
        log.warning("job %s: the early prompt encoder failed (exit %s: %s); the job encodes its prompts in "
                    "ComfyUI", self.job_id, rc, self._last_line())
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _last_line(self) -> str:
        """The script's own summary line, else its output's last line (an exception's, where it failed)."""
        try:
            lines = self.stderr.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no output"
        ours = [line for line in lines if line.startswith("ltx2_early_prompts:")]
        return (ours or lines or ["no output"])[-1][:300]

    def files(self) -> list[Path]:
        return [self.out, self.stderr, Path(f"{self.out}.part")]
