"""One RunPod job, start to end: check the worker, validate the input, patch the graph, run it on ComfyUI,
fetch the MP4, deliver it, and always remove ComfyUI's output file. Every failure becomes {"error": ...}
(plus `refresh_worker` when a fresh worker could do better); no exception reaches the SDK.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from . import health, video_input
from .audio_input import fit_clip, load_audio
from .camera import camera_lora
from .comfy import ComfyClient, ComfyError, ComfyUnavailable, ExecutionFailed, OutputFile, output_files, output_text
from .control import check_available, ic_lora
from .early_prompts import EarlyPrompts
from .failures import ProvisionError
from .gpu import GpuError, Profile, detect_gpu, profile_for
from .image_input import load_image
from .job import InputError, VideoRequest, parse_request
from .ladder import step_down
from .launch import CACHE_FLAG
from .lora_cache import CachedLora, LoraCache, LoraCacheUnusable, checkpoint_layers
from .manifest import load_manifest
from .media import ProbeUnavailable
from .model_cache import cached_files
from .output import (
    BUCKET_ENV,
    OUTPUT_DIR_FIX,
    Bucket,
    DeliveryError,
    deliver,
    output_dir_problem,
    output_dir_source,
    remove_outputs,
    safe_stem,
)
from .progress import NodeClock, ProgressReporter, runpod_sender
from .provision import check
from .settings import Settings, SettingsError, load_settings
from .start_files import pages_path, record_pages, start_files_first
from .stopping import Stopping, stop_on_signals
from .text_encoder import sees_images, text_encoder_file
from .workflow import (
    AUDIO_VAE_LOADER_NODE,
    CHECKPOINT_BESIDE_NODE,
    CHECKPOINT_LOADER_NODE,
    COMPILE_BLOCKS_NODE,
    CUDA_GRAPHS_NODE,
    DISTILLED_CHECKPOINT,
    ENCODED_PROMPTS_NODE,
    ENHANCED_PROMPT_NODE,
    ENHANCER_NODE,
    LORA_BYPASS_NODE,
    LORA_STACK_NODE,
    PREPROCESSOR_LOADERS,
    SAVE_VIDEO_NODE,
    TEXT_ENCODER_LOADER_NODE,
    TILE_DECODE_NODE,
    UPSAMPLER_NODE,
    UPSCALER_LOADER_NODE,
    Encoding,
    Workflow,
    WorkflowError,
)

log = logging.getLogger(__name__)
OUTPUT_SUBFOLDER = "ltx2"
# (GraphChoices field, the worker's ComfyUI node it needs, what a graph without that node loses)
CHOICE_NODES = (
    ("cuda_graphs", CUDA_GRAPHS_NODE, "stage 1 runs without CUDA graphs"),
    ("compile_blocks", COMPILE_BLOCKS_NODE, "stage 1's transformer blocks run uncompiled"),
    ("tile_memory_decode", TILE_DECODE_NODE,
     "VAEDecodeTiled asks for the whole latent's memory and may push the text encoder off the GPU"),
    ("fast_upscaler_load", UPSCALER_LOADER_NODE,
     "the upscaler loads with ComfyUI's random initialisation first, seconds more at a cold start"),
    ("fast_audio_vae_load", AUDIO_VAE_LOADER_NODE,
     "the audio VAE's loader opens the whole checkpoint, seconds more at a cold start"),
    ("fast_text_encoder_load", TEXT_ENCODER_LOADER_NODE,
     "the text encoder's loader opens the whole checkpoint, seconds more at a cold start"),
    ("pinned_checkpoint_load", CHECKPOINT_LOADER_NODE,
     "the checkpoint is copied to the GPU from pageable memory, seconds more at a cold start"),
    ("checkpoint_beside_prompts", CHECKPOINT_BESIDE_NODE,
     "the checkpoint loads after the text encoder and the prompts, not beside them"),
    ("lora_bypass", LORA_BYPASS_NODE,
     "stage 2's LoRA is merged into the weights stage 1 shares and re-applied in every job, seconds a job"),
    ("lora_stack", LORA_STACK_NODE,
     "a request's LoRAs are merged into the weights, re-patched whenever they change"),
    ("resident_upscaler", UPSAMPLER_NODE, "the upscaler moves to the GPU and back in every job, about 1 s a job"),
    ("early_prompts", ENCODED_PROMPTS_NODE, "a fresh worker's first prompts are encoded after ComfyUI's start"),
)
READY_POLL_S = 0.5
# How long a job whose prompts are being encoded beside ComfyUI's start waits for that process once ComfyUI is
# ready: it reads the same text encoder ComfyUI would, so waiting costs nothing unless it hangs.
EARLY_PROMPTS_WAIT_S = 120


class BootFailed(Exception):
    """A start-up step (the launcher, beside the handler) failed while a job waited for ComfyUI."""

    def __init__(self, problem: health.Problem):
        super().__init__(problem.message)
        self.problem = problem


class Worker:
    def __init__(self, settings: Settings, workflow: Workflow | None = None, client: ComfyClient | None = None,
                 profile: Profile | None = None):
        self.settings = settings
        self.workflow = workflow or Workflow.load()
        self.client = client or ComfyClient(settings.comfy_url, settings.comfy_http_timeout_s)
        self.bucket = Bucket.from_env(settings)
        self.profile = profile or _gpu_profile(settings)
        # A job whose MP4 is not where the worker looks warns once per Worker, that is once per worker process:
        # the cause is the configuration, the same for every job, and one line per job would bury the rest
        # of the log. Each job's "removed N output file(s)" line still shows 0 while it lasts.
        self.output_warned = False
        self.encoding: Encoding | None = Encoding(settings.x264_preset, settings.x264_crf)
        self.setup_checked = False  # whether ComfyUI was checked for what the launcher gives it (nodes, cache flag)
        self.loras = LoraCache(settings, lambda: checkpoint_layers(settings))
        self.pages_listed = settings.prefetch_libraries is False  # whether the pages ComfyUI's start read were listed

    def check_output_folder(self) -> str | None:
        """At start: warn when the folder each job's MP4 is removed from is probably not ComfyUI's output
        folder (missing, or not the one ComfyUI's command line names). Returns the warning, or None."""
        if health.worker_problem(self.settings):
            return None  # a failed start: every job reports that, a folder warning would only mislead
        problem = output_dir_problem(self.settings, self.client.argv())
        if problem:
            log.warning("ComfyUI's output folder: %s", problem)
        return problem

    def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = str(job.get("id") or "local")
        started = time.monotonic()
        try:
            with stop_on_signals():
                result = self._handle(job_id, job.get("input"), started)
            if not self.pages_listed and "error" not in result and "health" not in result:
                self.pages_listed = True
                self._list_start_pages()
            return result
        except Stopping as exc:
            log.warning("job %s stopped by %s", job_id, exc)
            return _error(f"the worker got {exc} while this job ran and stopped it (ComfyUI's prompt was "
                          "interrupted); send the job again", refresh_worker=True)
        except Exception as exc:  # the last net: a bug must still answer the caller, and say it is one
            log.exception("job %s: unexpected failure", job_id)
            return {"error": f"internal error in the worker ({type(exc).__name__}: {exc}); please report it"}

    def _handle(self, job_id: str, raw_input: Any, started: float) -> dict[str, Any]:
        s = self.settings
        deadline = started + s.job_timeout_s
        if isinstance(raw_input, dict) and "health" in raw_input:
            if raw_input != {"health": True}:
                return {"error": "health: must be true, alone in the input (a health check runs no job)"}
            return {"health": self.health_report()}
        problem = health.worker_problem(s)
        if problem:
            log.error("job %s refused: %s", job_id, problem.message)
            return _error(problem.message, problem.refresh_worker)
        prefixes: list[str] = []  # every output prefix this job used, all removed at the end
        uploads: list[str] = []  # every file this job put in ComfyUI's input folder, all removed at the end
        early: EarlyPrompts | None = None  # its prompts' encoder, where it arrived before ComfyUI answered
        try:
            req = parse_request(raw_input, s, self.profile.clip)
            if req.delivery == "url" and self.bucket is None:  # known now: never generate a clip that cannot go
                raise InputError("delivery", f"\"url\" needs a bucket, and none is configured: set "
                                             f"{', '.join(BUCKET_ENV)} (and BUCKET_NAME) on the endpoint, or leave "
                                             "delivery out to get the video inline")
            timings = {"validate": time.monotonic() - started}
            # everything that can be checked without ComfyUI is, before waiting for it: a bad image or LoRA URL
            # is answered at once, not after a ComfyUI that is starting (or down) had its ready_timeout_s
            if req.enhance_prompt and any(k.frame == 0 for k in req.keyframes):
                self._check_enhancer_sees_images()
            mark = time.monotonic()
            images = [load_image(k.image, int(s.max_image_mb * 1_000_000), s.max_image_pixels, k.field)
                      for k in req.keyframes]
            if images:
                timings["image"] = time.monotonic() - mark
            source = control_report = None
            control_files: dict[str, str] = {}
            if req.video is not None:
                control_files = check_available(req.control, s)
                mark = time.monotonic()
                source = video_input.load_video(req.video, s)
                req, control_report = video_input.fit_clip(req, source, s, self.profile.clip)
                timings["video"] = time.monotonic() - mark
            track = audio_report = None
            if req.audio_input is not None:
                mark = time.monotonic()
                track = load_audio(req.audio_input, s)
                req, audio_report = fit_clip(req, track, s, self.profile.clip)
                timings["audio_input"] = time.monotonic() - mark
            mark = time.monotonic()
            specs = list(req.loras) + ([camera_lora(req.camera_motion, req.camera_strength)]
                                       if req.camera_motion else []) + ([ic_lora(req.control)] if req.video else [])
            loras = [self.loras.get(spec, deadline) for spec in specs]
            if loras:
                timings["loras"] = time.monotonic() - mark
            early = self._start_early_prompts(job_id, req)
            self._wait_ready(deadline, timings)
            if req.mode == "distilled":
                self._check_distilled_available()
            self._check_control_files(control_files)

            def upload(data: bytes, extension: str) -> str:
                name = self.client.upload_image(data, f"ltx2-{safe_stem(job_id)}-{secrets.token_hex(4)}.{extension}")
                uploads.append(name)
                return name

            image_names = [upload(data, ext) for data, ext in images]
            audio = (upload(track.data, track.extension), audio_report) if track is not None else None
            video = (upload(source.data, source.extension), control_report, control_files) \
                if source is not None else None
            return self._run_with_fallback(job_id, req, deadline, timings, started, prefixes, image_names, loras,
                                           audio, video, early)
        except InputError as exc:
            log.info("job %s rejected: %s", job_id, exc)
            return {"error": str(exc)}
        except BootFailed as exc:
            log.error("job %s refused: %s", job_id, exc.problem.message)
            return _error(exc.problem.message, exc.problem.refresh_worker)
        except ComfyError as exc:
            message = str(exc)
            if isinstance(exc, ComfyUnavailable):
                dead = health.comfy_exit_problem(s)
                message = dead.message if dead else message
            log.error("job %s failed: %s", job_id, message)
            return _error(message, exc.refresh_worker)
        except (DeliveryError, LoraCacheUnusable, ProbeUnavailable) as exc:
            log.error("job %s failed: %s", job_id, exc)
            return {"error": str(exc)}
        finally:
            removed = sum(len(remove_outputs(s.comfy_output_dir, prefix)) for prefix in prefixes)
            for name in uploads:
                (s.comfy_input_dir / name).unlink(missing_ok=True)
            if early is not None:
                early.stop()
                for path in early.files():
                    path.unlink(missing_ok=True)
            if prefixes:
                log.info("job %s: removed %d output file(s)", job_id, removed)

    def _list_start_pages(self) -> None:
        """After the first job, where PREFETCH_LIBRARIES (or its auto) has the next fresh worker's prefetch read
        them first: list on the volume the pages of ComfyUI's files in memory, what its start and that job read (its
        CUDA libraries load on first use; ltx2_worker/start_files.py). In a thread: the job's answer does not
        wait."""
        def run() -> None:
            mark = time.monotonic()
            try:
                if not start_files_first(self.settings, set(cached_files(self.settings, load_manifest(self.settings)))):
                    return  # auto, the models on the network volume: the list would never be read
                listed = record_pages(self.settings)
                log.info("listed %.2f GB of pages of ComfyUI's files read by its start and first job in %s (%.1f s)",
                         listed / 1e9, pages_path(self.settings), time.monotonic() - mark)
            except Exception as exc:  # noqa: BLE001 - a warm host, an unreadable folder, ComfyUI's Python gone:
                # only the next worker's head start is lost, never this worker's jobs
                log.warning("could not list the pages of ComfyUI's files its start read: %s: %s",
                            type(exc).__name__, exc)

        threading.Thread(target=run, name="list-start-pages", daemon=True).start()

    def health_report(self) -> dict[str, Any]:
        """What `{"health": true}` answers, at once and without running a job: whether a job could run now, and
        if not why (the start-up failure, a dead ComfyUI, a missing or corrupt model file), the GPU and its
        memory class. RunPod's Hub test asks this: its runner has a GPU but no network volume."""
        s = self.settings
        problem = health.worker_problem(s)
        try:
            bad = check(s, load_manifest(s))
        except (ProvisionError, SettingsError, OSError) as exc:
            bad = [str(exc)]
        comfy_ready = problem is None and self.client.ready(timeout=2.0)
        try:
            gpu = detect_gpu()
        except GpuError as exc:
            gpu, problem = None, problem or health.Problem(str(exc), True)
        return {
            "ready": problem is None and not bad and comfy_ready,
            "problem": problem.message if problem else None,
            "comfyui": "ready" if comfy_ready else ("not running" if problem else "starting"),
            "models": "ok" if not bad else bad,
            "gpu": dataclasses.asdict(gpu) if gpu else None,
            "memory_class": self.profile.name,
            "clip_limits": dataclasses.asdict(self.settings.clip_limits(self.profile.clip)),
        }

    def _check_comfyui_setup(self) -> None:
        """Once, at the first job: a ComfyUI the launcher did not start (ltx2_worker.launch puts the worker's
        nodes on its custom-node path and passes --cache-classic) lacks them; the graph then does without, and
        one warning says what is lost. Without LTX2CudaGraphs stage 1 runs without CUDA graphs; without
        LTX2VAEDecodeTiled the decode is VAEDecodeTiled's, with its whole-latent memory request; without
        LTX2LatentUpscaleModelLoader the upscaler loads the slow way; without LTX2LatentUpsampler the upscaler
        moves in every job; without LTX2SaveVideo the MP4 is written by SaveVideo at libx264's defaults; without
        --cache-classic ComfyUI's memory grows with every job (docs/performance.md: endurance)."""
        if self.setup_checked:
            return
        lost = []
        graph, encoding = self.profile.graph, self.encoding
        for choice, node, without in CHOICE_NODES:
            if getattr(graph, choice) and not self.client.node_info(node):
                graph = dataclasses.replace(graph, **{choice: False})
                lost.append(f"{node} ({without})")
        if encoding is not None and not self.client.node_info(SAVE_VIDEO_NODE):
            encoding = None
            lost.append(f"{SAVE_VIDEO_NODE} (MP4s are encoded by SaveVideo at libx264's defaults, preset medium and "
                        "CRF 23; X264_PRESET and X264_CRF are not applied)")
        argv = self.client.argv()
        if argv is not None and CACHE_FLAG not in argv:
            lost.append(f"{CACHE_FLAG} (ComfyUI's default cache keeps every job's outputs, one decoded clip each, "
                        "until the host runs low on RAM: start it with this flag)")
        # only once every answer came (a ComfyUI that failed to answer is asked again at the next job)
        self.profile = dataclasses.replace(self.profile, graph=graph)
        self.encoding, self.setup_checked = encoding, True
        if lost:
            log.warning("ComfyUI lacks what ltx2_worker.launch gives it: %s. It was not started by "
                        "ltx2_worker.launch, or its custom nodes are disabled", "; ".join(lost))

    def _check_distilled_available(self) -> None:
        if DISTILLED_CHECKPOINT not in self.client.options("CheckpointLoaderSimple", "ckpt_name"):
            raise InputError("mode", f"distilled needs {DISTILLED_CHECKPOINT}, which is not on this worker's "
                                     "volume: set ENABLE_MODELS=checkpoint_distilled ([model.checkpoint_distilled] "
                                     "in config.ini) and provision it, another ~27 GB (README, Modes)")

    def _check_control_files(self, files: dict[str, str]) -> None:
        """A control's preprocessor files (control.check_available) as ComfyUI lists them: provisioning put them
        on the volume, but a ComfyUI started before they were there does not list them."""
        for role, name in files.items():
            node, field = PREPROCESSOR_LOADERS[role]
            if name not in self.client.options(node, field):
                raise InputError("control", f"needs {name}, which ComfyUI does not list ({node}): provision it "
                                            "with ENABLE_MODELS (README, Video-to-video) and restart the worker")

    def _run_with_fallback(self, job_id: str, req: VideoRequest, deadline: float, timings: dict[str, float],
                           started: float, prefixes: list[str], image_names: list[str],
                           loras: list[CachedLora], audio: tuple[str, dict] | None = None,
                           video: tuple[str, dict, dict[str, str]] | None = None,
                           early: EarlyPrompts | None = None) -> dict[str, Any]:
        """Run the request; on a GPU out-of-memory failure climb down the OOM ladder (config.ini)."""
        s = self.settings
        self._check_comfyui_setup()
        encoded = None
        if early is not None and self.profile.graph.early_prompts:
            mark = time.monotonic()
            path = early.wait(min(deadline, mark + EARLY_PROMPTS_WAIT_S))
            encoded = str(path) if path is not None else None
            timings["early_prompts_wait"] = time.monotonic() - mark
        elif early is not None:  # this ComfyUI lacks LTX2EncodedPrompts: its GPU memory is given back at once
            early.stop()
        current, last_oom = req, None
        for rung in [None, *s.oom_ladder]:
            if rung is not None:
                shrunk = step_down(rung, current, s.size_multiple, s.min_size)
                if shrunk is None:
                    log.info("job %s: OOM rung %s cannot shrink the request further; skipped", job_id, rung.name)
                    continue
                log.warning("job %s: %s; freeing memory and trying OOM rung %s", job_id, last_oom, rung.name)
                self.client.free()
                current = shrunk
            prefix = f"{OUTPUT_SUBFOLDER}/{safe_stem(job_id)}-{secrets.token_hex(4)}"
            prefixes.append(prefix)
            log.info("job %s: %dx%d, %d frames at %d fps, seed %d, audio %s", job_id, current.width,
                     current.height, current.frame_count, current.fps, current.seed, current.audio)
            try:
                graph = self.workflow.build(current, prefix, image_names, self.profile.graph, self.encoding,
                                            [lora.name for lora in loras], s.enhance_max_tokens,
                                            audio[0] if audio else None, video[0] if video else None,
                                            video[2] if video else None, encoded)
                out = self._run(job_id, current, graph, deadline, timings, started, loras)
                if audio:
                    out["audio_input"] = {**audio[1], "used_seconds": round(current.frame_count / current.fps, 3)}
                if video:
                    out["control"] = {**out["control"], **video[1], "used_frames": current.frame_count}
            except ExecutionFailed as exc:
                if not exc.out_of_memory:
                    raise
                last_oom = exc
                continue
            if rung is not None:
                out["fallback"] = {"rung": rung.name, "reason": str(last_oom),
                                   "requested": {"width": req.width, "height": req.height,
                                                 "frame_count": req.frame_count}}
            return out
        tried = ", ".join(r.name for r in s.oom_ladder) or "none: OOM_LADDER is empty"
        raise ComfyError(f"{last_oom}; the out-of-memory fallbacks ({tried}) did not help")

    def _run(self, job_id: str, req: VideoRequest, graph: dict[str, Any], deadline: float,
             timings: dict[str, float], started: float, loras: list[CachedLora]) -> dict[str, Any]:
        mark = time.monotonic()
        reporter = ProgressReporter(job_id, graph, self.settings.progress_interval_s, runpod_sender({"id": job_id}))
        clock = NodeClock(reporter)
        prompt_id, entry = self.client.run(graph, deadline, clock)
        timings["generate"] = time.monotonic() - mark
        enhanced: dict[str, Any] = {}
        if req.enhance_prompt:  # the writer's seconds are part of "generate"; shown apart as well
            timings["enhance_prompt"] = clock.seconds(ENHANCER_NODE, time.monotonic())
            enhanced["prompt_enhanced"] = output_text(entry, ENHANCED_PROMPT_NODE)
            if enhanced["prompt_enhanced"] is None:
                log.warning("job %s: ComfyUI reported no text from the prompt enhancer (node %s)", job_id,
                            ENHANCED_PROMPT_NODE)
        mark = time.monotonic()
        videos = [f for f in output_files(entry, self.workflow.node_ids["save_video"])
                  if f.filename.endswith(".mp4")]
        if not videos:
            raise ComfyError(f"ComfyUI finished prompt {prompt_id} but reported no MP4 from its save node "
                             f"(node {self.workflow.node_ids['save_video']})")
        data = self.client.view(videos[0])
        self._check_output_found(videos[0])
        timings["fetch"] = time.monotonic() - mark
        mark = time.monotonic()
        key = f"{OUTPUT_SUBFOLDER}/{safe_stem(job_id)}-{prompt_id}.mp4"
        payload = deliver(data, self.settings, self.bucket, key, req.delivery)
        timings["deliver"] = time.monotonic() - mark
        timings["encode"] = timings["deliver"]  # the old name of "deliver": kept until the next release (README)
        timings["total"] = time.monotonic() - started
        log.info("job %s done: %d bytes in %.1f s", job_id, len(data), timings["total"])
        conditioning: dict[str, Any] = {}
        if req.keyframes:
            conditioning["keyframes"] = [{"frame": k.frame, "strength": k.strength} for k in req.keyframes]
        # the request's LoRAs, then the camera move's, then the control's IC-LoRA
        requested = loras[:len(req.loras)]
        camera = loras[len(req.loras):len(req.loras) + bool(req.camera_motion)]
        if req.loras:
            conditioning["loras"] = [{"url": spec.url, "sha256": lora.sha256, "strength": spec.strength}
                                     for spec, lora in zip(req.loras, requested, strict=True)]
        if req.camera_motion:
            (camera_file,) = camera
            conditioning["camera_motion"] = {"move": req.camera_motion, "strength": req.camera_strength,
                                             "sha256": camera_file.sha256}
        if req.video:
            conditioning["control"] = {"kind": req.control, "strength": req.control_strength,
                                       "ic_lora_sha256": loras[-1].sha256}
        return {
            **payload,
            "seed": req.seed,
            "prompt_id": prompt_id,
            "width": req.width,
            "height": req.height,
            "frame_count": req.frame_count,
            "fps": req.fps,
            "duration_seconds": req.duration_seconds,
            "audio": req.audio,
            "mode": req.mode,
            **conditioning,
            **enhanced,
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }

    def _check_enhancer_sees_images(self) -> None:
        """enhance_prompt with a first frame: the prompt writer looks at the image through Gemma 3's vision
        tower, which the provisioned file must hold (a file that cannot be read is left to the model checks)."""
        path = text_encoder_file(self.settings)
        try:
            found = sees_images(path)
        except Exception as exc:  # safetensors raises its own error type; a broken file fails the job later
            log.warning("cannot read the text encoder's header (%s): %s", path, exc)
            return
        if not found:
            raise InputError("enhance_prompt", f"with an image needs Gemma 3's vision weights, and the text "
                                               f"encoder file {path.name} has none: leave out enhance_prompt or the "
                                               "image, or provision a Gemma 3 file with its vision tower")

    def _check_output_found(self, item: OutputFile) -> None:
        """The MP4 ComfyUI reported must be in the folder the worker cleans; if not, the worker cannot remove
        it and every job leaves one behind: say so, naming the setting (the video itself came through /view)."""
        if self.output_warned or item.type != "output":
            return
        path = self.settings.comfy_output_dir / item.subfolder / item.filename
        if path.is_file():
            return
        self.output_warned = True
        log.warning("ComfyUI reported its video as %s, but %s does not exist: the worker looks for ComfyUI's "
                    "output files in %s (%s) and cannot remove them, so every job's MP4 stays in ComfyUI's own "
                    "output folder until its disk fills; %s. Videos are still fetched through ComfyUI's /view; "
                    "this is logged once per worker process.", f"{item.subfolder}/{item.filename}".lstrip("/"),
                    path, self.settings.comfy_output_dir, output_dir_source(self.settings), OUTPUT_DIR_FIX)

    def _start_early_prompts(self, job_id: str, req: VideoRequest) -> EarlyPrompts | None:
        """Where EARLY_PROMPTS holds and ComfyUI is not answering yet (a fresh worker's first job), start encoding
        the job's prompts beside ComfyUI's start (ltx2_worker.early_prompts); None otherwise, or where it cannot
        start (logged: the job then encodes them in ComfyUI)."""
        if not self.profile.graph.early_prompts or req.enhance_prompt or self.client.ready():
            return None
        positive, negative = self.workflow.prompt_texts(req)
        try:
            return EarlyPrompts.start(self.settings, self.profile.flags, job_id, positive, negative, req.mode,
                                      f"ltx2-{safe_stem(job_id)}-{secrets.token_hex(4)}-prompts")
        except (OSError, SettingsError, StopIteration) as exc:
            log.warning("job %s: cannot start the early prompt encoder (%s); the job encodes its prompts in "
                        "ComfyUI", job_id, exc)
            return None

    def _wait_ready(self, deadline: float, timings: dict[str, float]) -> None:
        """A job that arrives while ComfyUI still starts (entrypoint.sh starts the handler beside the launcher)
        waits for it, within COMFY_READY_TIMEOUT_S; a launch that fails meanwhile ends the wait with its cause."""
        started = time.monotonic()
        deadline = min(deadline, started + self.settings.comfy_ready_timeout_s)
        while not self.client.ready():
            if (boot := health.boot_problem(self.settings)) is not None:
                raise BootFailed(boot)
            problem = health.comfy_exit_problem(self.settings)
            if problem:
                raise ComfyUnavailable(problem.message)
            if time.monotonic() + READY_POLL_S >= deadline:
                raise ComfyUnavailable(f"ComfyUI at {self.settings.comfy_url} did not answer within "
                                       f"{self.settings.comfy_ready_timeout_s:g} s (COMFY_READY_TIMEOUT_S)")
            time.sleep(READY_POLL_S)
        if time.monotonic() - started > READY_POLL_S / 2:
            timings["comfy_startup_wait"] = time.monotonic() - started


def _gpu_profile(settings: Settings) -> Profile:
    """The same memory class the launcher chose ComfyUI's flags from (a GPU that does not answer here is
    reported by the launcher and the health check; the graph then keeps its memory-saving form)."""
    try:
        gpu = detect_gpu()
    except GpuError as exc:
        log.warning("cannot read the GPU (%s); using the small-memory graph", exc)
        gpu = None
    profile = profile_for(settings, gpu)
    log.info("memory class %s: %s", profile.name, profile.graph)
    return profile


def _error(message: str, refresh_worker: bool) -> dict[str, Any]:
    return {"error": message, "refresh_worker": True} if refresh_worker else {"error": message}


def build_handler() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The SDK's handler. A broken configuration still yields a handler, one that names the problem in
    every job's error, so the worker registers and callers learn why instead of waiting."""
    try:
        worker = Worker(load_settings())
    except (SettingsError, WorkflowError) as exc:
        message = f"worker configuration error: {exc}"
        log.error(message)
        return lambda job: {"error": message}
    worker.check_output_folder()
    return worker.handle
