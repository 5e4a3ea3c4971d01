// Browser test of a broadcast into a room: ffmpeg (Debian package) publishes a test pattern
// (VP8) and a tone (Opus) over plain RTP through the broadcaster HTTP API
// (docs/broadcasting.md), and a headless Chromium page of the web demo (unmodified
// mediasoup-client), a viewer in the same room, decodes both.
//
//   node tests/broadcast.mjs [--verbose]      (part of npm test; needs ffmpeg)
//
// Environment: as tests/e2e.mjs (FERROSOUP_BIN, CHROMIUM, RUST_LOG, KEEP_TMP); FFMPEG
// (default ffmpeg).
//
// Steps: the broadcaster joins with two plain transports (comedia, RTCP on its own port)
// and a producer on each; ffmpeg sends; the viewer's page shows the broadcaster's tile,
// decodes its video at the pattern's size and receives its audio. The last line is
// "N passed, N failed".

import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import path from 'node:path';

import {
  DemoPage,
  launchChromium,
  onCleanup,
  runTest,
  startServer,
  step,
  tmpDir,
  waitJoined,
  waitMedia,
  withDiagnosis,
} from './harness.mjs';

const FFMPEG = process.env.FFMPEG ?? 'ffmpeg';
const WIDTH = 320;
const HEIGHT = 240;
/** ffmpeg stops by itself after this long, whatever happens to the test. */
const SEND_S = 90;
const TIMEOUT = { whole: 150_000, join: 20_000, media: 40_000 };

/** POSTs `body` as JSON to `url`; returns the JSON answer, or throws with the status and body. */
async function post(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${text}`);
  return JSON.parse(text);
}

runTest(
  'broadcast',
  async () => {
    const server = await step('start ferrosoup', () => startServer());
    const room = `broadcast-${Date.now()}`;
    const broadcaster = { peerId: 'ffmpeg', name: 'FFmpeg' };
    const api = new URL(`rooms/${room}/broadcasters`, server.baseUrl).href;

    const [audio, video] = await step('the broadcaster joins with a plain transport and a producer for audio and video', async () => {
      await post(api, { id: broadcaster.peerId, displayName: broadcaster.name, device: { name: 'FFmpeg' } });
      const plain = { type: 'plain', comedia: true, rtcpMux: false };
      const a = await post(`${api}/${broadcaster.peerId}/transports`, plain);
      const v = await post(`${api}/${broadcaster.peerId}/transports`, plain);
      await post(`${api}/${broadcaster.peerId}/transports/${a.id}/producers`, {
        kind: 'audio',
        rtpParameters: {
          codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2, parameters: { 'sprop-stereo': 1 } }],
          encodings: [{ ssrc: 1111 }],
        },
      });
      await post(`${api}/${broadcaster.peerId}/transports/${v.id}/producers`, {
        kind: 'video',
        rtpParameters: {
          codecs: [{ mimeType: 'video/vp8', payloadType: 101, clockRate: 90000 }],
          encodings: [{ ssrc: 2222 }],
        },
      });
      return [a, v];
    });

    await step('ffmpeg sends a VP8 test pattern and an Opus tone over RTP', async () => {
      const target = (t, ssrc, pt) => `[select=${ssrc === 1111 ? 'a' : 'v'}:f=rtp:ssrc=${ssrc}:payload_type=${pt}]rtp://${t.ip}:${t.port}?rtcpport=${t.rtcpPort}&pkt_size=1200`;
      const args = [
        '-hide_banner', '-loglevel', 'warning', '-re',
        '-f', 'lavfi', '-i', `testsrc=size=${WIDTH}x${HEIGHT}:rate=30`,
        '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
        '-t', String(SEND_S),
        '-map', '1:a', '-c:a', 'libopus', '-ac', '2', '-ar', '48000', '-b:a', '64k',
        '-map', '0:v', '-c:v', 'libvpx', '-b:v', '500k', '-g', '30', '-deadline', 'realtime', '-cpu-used', '8', '-pix_fmt', 'yuv420p',
        '-f', 'tee', `${target(audio, 1111, 100)}|${target(video, 2222, 101)}`,
      ];
      const log = createWriteStream(path.join(tmpDir, 'ffmpeg.log'));
      const ffmpeg = spawn(FFMPEG, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      ffmpeg.stdout.pipe(log);
      ffmpeg.stderr.pipe(log);
      onCleanup(() => ffmpeg.kill('SIGKILL'));
      await new Promise((resolve, reject) => {
        ffmpeg.once('spawn', resolve);
        ffmpeg.once('error', (error) => reject(new Error(`${FFMPEG}: ${error.message}`)));
      });
    });

    const context = await step('launch chromium', () => launchChromium('profile'));
    const viewer = await DemoPage.open(context, server.baseUrl, 'viewer', { room, produce: '0' });
    try {
      await step('a viewer joins the room in Chromium', () => waitJoined(viewer, { producers: 0, timeoutMs: TIMEOUT.join }));
      await step("the viewer decodes the broadcaster's video and receives its audio", () =>
        waitMedia(viewer, [broadcaster], TIMEOUT.media),
      );
      await step(`the decoded video has the pattern's size (${WIDTH}x${HEIGHT})`, async () => {
        const consumers = await viewer.eval(() => window.ferrosoupDemo.consumerStats());
        const v = consumers.find((c) => c.peerId === broadcaster.peerId && c.kind === 'video');
        if (v?.frameWidth !== WIDTH || v?.frameHeight !== HEIGHT) {
          throw new Error(`decoded ${v?.frameWidth}x${v?.frameHeight}: ${JSON.stringify(v)}`);
        }
      });
    } catch (error) {
      throw await withDiagnosis(error, [viewer]);
    }
  },
  TIMEOUT.whole,
);
