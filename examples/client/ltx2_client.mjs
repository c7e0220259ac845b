// Submit one clip to the worker and save the MP4 (Node 18+, no packages): /run, then /status until the job
// ends, printing the progress the worker reports, then the video from base64 or its bucket URL.
//   RUNPOD_API_KEY=... node ltx2_client.mjs --endpoint ENDPOINT_ID --input ../../test_input.json --out clip.mp4
//   node ltx2_client.mjs --base http://localhost:8000 --input ../../test_input.json --out clip.mp4   # local API
import { readFile, writeFile } from "node:fs/promises";

const ENDS = new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]);

export async function runClip(base, input, { apiKey, pollMs = 2000, deadlineMs = 1_800_000, say = console.log } = {}) {
  const headers = { "Content-Type": "application/json", ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}) };
  const submitted = await fetch(`${base}/run`, { method: "POST", headers, body: JSON.stringify({ input }) });
  if (!submitted.ok) throw new Error(`/run answered HTTP ${submitted.status}: ${await submitted.text()}`);
  const { id } = await submitted.json();
  say(`job ${id} submitted`);
  const giveUp = Date.now() + deadlineMs;
  let last = "";
  let method = "GET";
  for (;;) {
    const response = await fetch(`${base}/status/${id}`, { method, headers });
    if (response.status === 405 && method === "GET") { method = "POST"; continue; } // RunPod's local API: POST
    if (!response.ok) throw new Error(`/status answered HTTP ${response.status}: ${await response.text()}`);
    const body = await response.json();
    if (!body.status) throw new Error(`/status answered without a status: ${JSON.stringify(body).slice(0, 300)}`);
    if (ENDS.has(body.status)) return body;
    const progress = body.output ? JSON.stringify(body.output) : ""; // while IN_PROGRESS: stage and step
    if (progress && progress !== last) { say(`  ${body.status}: ${progress}`); last = progress; }
    if (Date.now() > giveUp) {
      await fetch(`${base}/cancel/${id}`, { method: "POST", headers });
      throw new Error(`job ${id} did not end within ${deadlineMs / 1000} s; cancelled`);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

export async function videoBytes(output) {
  if (output.video) return Buffer.from(output.video, "base64");
  const response = await fetch(output.video_url);
  if (!response.ok) throw new Error(`the video URL answered HTTP ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
}

async function main(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) args[argv[i].replace(/^--/, "")] = argv[i + 1];
  if (!args.input || !(args.base || args.endpoint)) {
    console.error("usage: node ltx2_client.mjs (--endpoint ID | --base URL) --input FILE [--out clip.mp4]");
    return 2;
  }
  const base = args.base ? args.base.replace(/\/$/, "") : `https://api.runpod.ai/v2/${args.endpoint}`;
  const loaded = JSON.parse(await readFile(args.input, "utf8"));
  const body = await runClip(base, loaded.input ?? loaded, { apiKey: process.env.RUNPOD_API_KEY });
  if (body.status !== "COMPLETED" || body.output?.error) {
    console.error(`job ${body.id} ${body.status}: ${body.error ?? JSON.stringify(body.output)}`);
    return 1;
  }
  const out = args.out ?? "clip.mp4";
  const data = await videoBytes(body.output);
  await writeFile(out, data);
  const o = body.output;
  console.log(`${out}: ${data.length} bytes, ${o.width}x${o.height}, ${o.frame_count} frames at ${o.fps} fps, seed ${o.seed}`);
  return 0;
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = await main(process.argv.slice(2));
