// Browser end-to-end test: headless Chromium pages running the web demo that the real
// ferrosoup binary serves at GET / (mediasoup-client + protoo-client, simulcast video).
//
//   node tests/e2e.mjs [--verbose] [--screenshot[=PATH]]      (npm test)
//
// Environment:
//   FERROSOUP_BIN   server binary (default ../target/debug/ferrosoup)
//   CHROMIUM        browser binary (default /usr/bin/chromium)
//   RUST_LOG        server log filter (default info,rtc_dtls=error); the log is in the temp dir
//   RTC_MIN_PORT    first of the 10 UDP ports given to the server (default: random)
//   KEEP_TMP=1      keep the temp dir (server log, browser profile) after the run
//   --screenshot    save alice's page during the 3-peer call (default ../docs/screenshot-3-peers.png)
//
// Steps (each names its page): the server serves the bundle in dist/; alice, bob and carol
// join one room and each decodes every other's video and receives their audio; dave joins
// late and sees everyone (and everyone him); bob loses signaling and resumes his session;
// bob loses it for longer than the session grace and joins afresh; carol presses Leave and
// disappears from the others; dave closes his tab and disappears; alice switches bob's
// tile to Low then High and the decoded width grows; then, per codec (VP9, H264), two
// fresh pages in a new room with `?codec=` each decode the other's video in that codec
// (H264 is SKIPPED, saying so, only when the browser cannot send H264). Every wait is bounded, a failure
// prints every page's state, stats and console plus the server log. The last line is
// "N passed, N failed"; the exit code is 0 only when all passed.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const SERVER_BIN = process.env.FERROSOUP_BIN ?? path.resolve(here, '../../target/debug/ferrosoup');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const DIST = path.resolve(here, '../dist');
const VERBOSE = process.argv.includes('--verbose');
const screenshotArg = process.argv.find((a) => a === '--screenshot' || a.startsWith('--screenshot='));
const SCREENSHOT = screenshotArg
  ? screenshotArg.includes('=')
    ? path.resolve(screenshotArg.slice('--screenshot='.length))
    : path.resolve(here, '../../docs/screenshot-3-peers.png')
  : null;
/** Seconds the server keeps a disconnected peer for resume (short, so expiry is testable). */
const SESSION_GRACE_S = 2;
/** A peer that leaves (Leave button, tab closed) must vanish well before the grace would remove it. */
const LEFT_WITHIN_MS = 1500;

const TIMEOUT = {
  whole: 170_000,
  serverStart: 20_000,
  join: 20_000,
  media: 30_000,
  gone: 10_000,
  resume: 10_000,
  layer: 20_000,
};
const POLL_MS = 300;

const results = [];
const cleanups = [];
let tmpDir;
let serverLogPath;

function log(message) {
  console.log(`${new Date().toISOString().slice(11, 23)} ${message}`);
}

/** Records a step that could not run, with the reason. */
function skip(name, reason) {
  results.push({ name, ok: true, skipped: reason });
  log(`SKIPPED ${name}: ${reason}`);
}

async function step(name, fn) {
  const started = Date.now();
  try {
    const value = await fn();
    results.push({ name, ok: true });
    log(`PASS ${name} (${Date.now() - started} ms)`);
    return value;
  } catch (error) {
    results.push({ name, ok: false, error });
    log(`FAIL ${name}: ${error.message.split('\n')[0]}`);
    throw error;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// ---------------------------------------------------------------------------
// Server

async function startServer() {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`${SERVER_BIN} missing: run \`cargo build -p ferrosoup-server\` at the repository root`);
  }
  const port = await freeTcpPort();
  // One worker needs one UDP port; a small random range keeps parallel runs apart.
  const rtcMin = Number(process.env.RTC_MIN_PORT) || 42000 + Math.floor(Math.random() * 500) * 10;
  serverLogPath = path.join(tmpDir, 'server.log');
  const out = createWriteStream(serverLogPath);
  const child = spawn(SERVER_BIN, [], {
    env: {
      ...process.env,
      PORT: String(port),
      LISTEN_IP: '127.0.0.1',
      RTC_MIN_PORT: String(rtcMin),
      RTC_MAX_PORT: String(rtcMin + 9),
      NUM_WORKERS: '1',
      SESSION_GRACE: String(SESSION_GRACE_S),
      DRAIN_SECONDS: '0',
      RUST_LOG: process.env.RUST_LOG ?? 'info,rtc_dtls=error',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  cleanups.push(() => stopServer(child));

  const deadline = Date.now() + TIMEOUT.serverStart;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`server exited early (${JSON.stringify(exited)}); see ${serverLogPath}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return { port, child, baseUrl: `http://127.0.0.1:${port}/` };
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  throw new Error(`server not healthy after ${TIMEOUT.serverStart} ms; see ${serverLogPath}`);
}

async function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(timer);
}

/** The server must serve exactly the bundle in dist/ (else it was built before the last `npm run build`). */
async function checkServedBundle(baseUrl) {
  for (const [route, file] of [
    ['', 'index.html'],
    ['app.js', 'app.js'],
    ['style.css', 'style.css'],
  ]) {
    const res = await fetch(new URL(route, baseUrl));
    if (!res.ok) throw new Error(`GET /${route}: HTTP ${res.status}`);
    const served = await res.text();
    const built = await readFile(path.join(DIST, file), 'utf8');
    if (served !== built) {
      throw new Error(`GET /${route} differs from dist/${file}: rebuild the server (cargo build -p ferrosoup-server) after npm run build`);
    }
  }
}

// ---------------------------------------------------------------------------
// Pages

class DemoPage {
  constructor(name, page) {
    this.name = name;
    this.page = page;
    this.console = [];
    this.joinStartEpochMs = null;
    page.on('console', (msg) => {
      const line = `[${this.name}] ${msg.type()}: ${msg.text()}`;
      this.console.push(line);
      if (VERBOSE) console.log(line);
    });
    page.on('pageerror', (error) => this.console.push(`[${this.name}] pageerror: ${error.message}`));
  }

  eval(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  async snapshot() {
    return this.eval(async () => {
      const d = window.ferrosoupDemo;
      return {
        phase: d.state.phase,
        peerId: d.state.peerId,
        errors: d.state.errors,
        warnings: d.state.warnings,
        reconnects: d.state.reconnects,
        producers: [...d.state.producers.keys()],
        peers: [...d.state.peers.keys()],
        tiles: [...document.querySelectorAll('.tile.remote')].map((t) => ({
          peerId: t.dataset.peerId,
          name: t.querySelector('.name')?.textContent,
          video: t.dataset.video,
        })),
        transports: d.transportStates(),
        consumers: await d.consumerStats(),
        outbound: await d.producerStats(),
      };
    });
  }

  /** What to show when a step involving this page fails. */
  async diagnose() {
    if (this.page.isClosed()) return `--- page ${this.name}: closed`;
    let snap;
    try {
      snap = JSON.stringify(await this.snapshot());
    } catch (error) {
      snap = `(no snapshot: ${error.message})`;
    }
    let server;
    try {
      server = JSON.stringify(await this.eval(() => window.ferrosoupDemo.serverStats()));
    } catch (error) {
      server = `(none: ${error.message})`;
    }
    return `--- page ${this.name} state:\n${snap}\n--- page ${this.name} server-side stats:\n${server}\n--- page ${this.name} console (last 30):\n${this.console.slice(-30).join('\n')}`;
  }
}

async function waitJoined(page) {
  const deadline = Date.now() + TIMEOUT.join;
  let snap;
  while (Date.now() < deadline) {
    snap = await page.eval(() => {
      const d = window.ferrosoupDemo;
      return {
        phase: d.state.phase,
        peerId: d.state.peerId,
        errors: d.state.errors,
        warnings: d.state.warnings,
        producers: [...d.state.producers.keys()],
        transports: d.transportStates(),
      };
    });
    if (snap.errors.length) throw new Error(`page ${page.name}: join failed: ${snap.errors.join('; ')}`);
    if (snap.phase === 'joined' && snap.producers.length === 2) {
      page.peerId = snap.peerId;
      return snap;
    }
    await sleep(POLL_MS);
  }
  throw new Error(`page ${page.name}: not joined with camera + mic producers after ${TIMEOUT.join} ms (last: ${JSON.stringify(snap)})`);
}

/**
 * Waits until `page` decodes video (framesDecoded growing, frameWidth > 0) and receives
 * audio (packetsReceived growing) from every page in `others`, with a named tile for each.
 * Returns {senderName: first-frame epoch ms}.
 */
async function waitMedia(page, others) {
  const deadline = Date.now() + TIMEOUT.media;
  const prev = new Map();
  let missing = [];
  while (Date.now() < deadline) {
    const snap = await page.snapshot();
    if (snap.errors.length) throw new Error(`page ${page.name}: ${snap.errors.join('; ')}`);
    missing = [];
    const firstFrames = {};
    for (const other of others) {
      const tile = snap.tiles.find((t) => t.peerId === other.peerId);
      if (!tile) missing.push(`no tile for ${other.name}`);
      else if (tile.name !== other.name) missing.push(`tile of ${other.name} is named "${tile.name}"`);
      for (const kind of ['video', 'audio']) {
        const c = snap.consumers.find((x) => x.peerId === other.peerId && x.kind === kind);
        if (!c) {
          missing.push(`${kind} from ${other.name}: no consumer`);
          continue;
        }
        const before = prev.get(c.consumerId);
        prev.set(c.consumerId, c);
        if (kind === 'video') {
          const decoding = c.framesDecoded > 0 && c.frameWidth > 0 && c.firstFrameEpochMs !== null;
          if (!(decoding && before && c.framesDecoded > before.framesDecoded)) {
            missing.push(
              `video from ${other.name}: packetsReceived=${c.packetsReceived} framesDecoded=${c.framesDecoded} ` +
                `frameWidth=${c.frameWidth} pli=${c.pliCount} nack=${c.nackCount}`,
            );
          }
          firstFrames[other.name] = c.firstFrameEpochMs;
        } else if (!(before && c.packetsReceived > before.packetsReceived)) {
          missing.push(`audio from ${other.name}: packetsReceived=${c.packetsReceived} (not growing)`);
        }
      }
    }
    if (missing.length === 0) return firstFrames;
    await sleep(POLL_MS);
  }
  throw new Error(`page ${page.name}: after ${TIMEOUT.media} ms still missing: ${missing.join(' | ')}`);
}

/** Waits (up to `limitMs`) until `page` has no tile, peer entry or consumer of the peer `peerId` any more. */
async function waitGone(page, peerId, name, limitMs) {
  const started = Date.now();
  let snap;
  while (Date.now() - started < limitMs) {
    snap = await page.eval(
      (id) => {
        const d = window.ferrosoupDemo;
        return {
          hasPeer: d.state.peers.has(id),
          consumers: [...d.state.consumers.values()].filter((c) => c.peerId === id).length,
          tiles: document.querySelectorAll(`.tile[data-peer-id="${id}"]`).length,
        };
      },
      peerId,
    );
    if (!snap.hasPeer && snap.consumers === 0 && snap.tiles === 0) return Date.now() - started;
    await sleep(100);
  }
  throw new Error(`page ${page.name}: ${name} still present after ${limitMs} ms (${JSON.stringify(snap)})`);
}

/** Decoded width of `sender`'s video on `page`, once `accept(width, consumer)` holds for two polls with frames flowing. */
async function waitWidth(page, sender, accept, what) {
  const deadline = Date.now() + TIMEOUT.layer;
  let last = null;
  let agreed = 0;
  while (Date.now() < deadline) {
    const consumers = await page.eval(() => window.ferrosoupDemo.consumerStats());
    const c = consumers.find((x) => x.peerId === sender.peerId && x.kind === 'video');
    const flowing = c && last && c.framesDecoded > last.framesDecoded;
    agreed = flowing && accept(c.frameWidth, c) && c.frameWidth === last.frameWidth ? agreed + 1 : 0;
    if (agreed >= 2) return c.frameWidth;
    if (c) last = c;
    await sleep(POLL_MS);
  }
  throw new Error(
    `page ${page.name}: ${what} of ${sender.name}'s video not reached after ${TIMEOUT.layer} ms ` +
      `(last: frameWidth=${last?.frameWidth} spatialLayer=${last?.spatialLayer} framesDecoded=${last?.framesDecoded})`,
  );
}

/**
 * Two pages join `room` with `?codec=codec`; each must decode the other's video
 * (framesDecoded growing, frameWidth > 0) with `mimeType` as the inbound codec. H264 is
 * skipped only when the browser's sender capabilities have no H264 at all.
 */
async function codecCall(context, baseUrl, room, codec, mimeType) {
  const members = [];
  const diagnoseAll = async (error) => {
    const diag = await Promise.all(members.map((p) => p.diagnose()));
    error.message += `\n${diag.join('\n')}`;
    return error;
  };
  try {
    for (const letter of ['a', 'b']) {
      const name = `${codec}-${letter}`;
      const page = new DemoPage(name, await context.newPage());
      members.push(page);
      const url = new URL(baseUrl);
      url.searchParams.set('room', room);
      url.searchParams.set('name', name);
      url.searchParams.set('codec', codec);
      if (letter === 'a') {
        const sendCodecs = await page.eval(() => RTCRtpSender.getCapabilities('video')?.codecs.map((c) => c.mimeType) ?? []);
        if (!sendCodecs.some((m) => m.toLowerCase() === mimeType.toLowerCase())) {
          skip(`${codec}: two pages exchange ${mimeType} video`, `no ${mimeType} in this browser's RTCRtpSender.getCapabilities('video') (${[...new Set(sendCodecs)].join(', ')})`);
          return;
        }
      }
      await page.page.goto(url.href, { timeout: 10_000 });
      await step(`page ${name}: join room ${room} and send camera (${codec}) + mic`, () => waitJoined(page));
    }
    for (const page of members) {
      const other = members.find((p) => p !== page);
      await step(`${codec}: page ${page.name} decodes ${other.name}'s video as ${mimeType}`, async () => {
        await waitMedia(page, [other]);
        const { consumers } = await page.snapshot();
        const video = consumers.find((c) => c.peerId === other.peerId && c.kind === 'video');
        if (video.codec?.toLowerCase() !== mimeType.toLowerCase()) {
          throw new Error(`page ${page.name}: ${other.name}'s video decodes as ${video.codec}, not ${mimeType}`);
        }
      });
    }
    for (const page of members) {
      const { outbound, consumers } = await page.snapshot();
      const sent = outbound
        .filter((o) => o.kind === 'video')
        .map((o) => `${o.rid ?? 'single'} ${o.codec} ${o.frameWidth}x${o.frameHeight}${o.scalabilityMode ? ` ${o.scalabilityMode}` : ''} by ${o.encoderImplementation}`);
      const received = consumers.filter((c) => c.kind === 'video').map((c) => `${c.type} ${c.codec} ${c.frameWidth}x${c.frameHeight}`);
      log(`page ${page.name}: sends ${sent.join(', ')}; receives ${received.join(', ')}`);
    }
  } catch (error) {
    throw await diagnoseAll(error);
  } finally {
    for (const page of members) await page.page.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------

async function main() {
  tmpDir = await mkdtemp(path.join(os.tmpdir(), 'ferrosoup-e2e-'));
  log(`temp dir ${tmpDir}; server ${SERVER_BIN}`);

  const server = await step('start ferrosoup', startServer);
  log(`server at ${server.baseUrl}, log ${serverLogPath}`);
  await step('server serves the built bundle (dist/) at / , /app.js, /style.css', () => checkServedBundle(server.baseUrl));

  const context = await step('launch chromium', () =>
    chromium.launchPersistentContext(path.join(tmpDir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 20_000,
      viewport: { width: 1280, height: 760 },
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
        '--autoplay-policy=no-user-gesture-required',
        '--disable-background-timer-throttling',
        '--disable-renderer-backgrounding',
        '--disable-backgrounding-occluded-windows',
      ],
    }),
  );
  cleanups.unshift(() => context.close());

  const roomId = `e2e-${Math.random().toString(36).slice(2, 8)}`;
  /** Pages in the call. */
  const pages = [];
  const failWith = async (error, involved) => {
    const diag = await Promise.all(involved.map((p) => p.diagnose()));
    error.message += `\n${diag.join('\n')}`;
    throw error;
  };
  // "viewer <- sender" -> ms from the later of the two joins to the viewer's first frame.
  const pairTimes = new Map();
  // page -> ms from its join to the first frame of every peer already in the room.
  const joinerTimes = new Map();

  const join = async (name) => {
    const page = new DemoPage(name, await context.newPage());
    const url = new URL(server.baseUrl);
    url.searchParams.set('room', roomId);
    url.searchParams.set('name', name);
    await page.page.goto(url.href, { timeout: 10_000 });
    page.joinStartEpochMs = await page.eval(() => Math.round(performance.timeOrigin + window.ferrosoupDemo.state.joinStartedAt));
    page.peersAtJoin = [...pages];
    pages.push(page);
    try {
      await step(`page ${name}: join room ${roomId} and send camera (simulcast) + mic`, () => waitJoined(page));
    } catch (error) {
      await failWith(error, [page]);
    }
    return page;
  };
  const expectAllMedia = async (label, viewers = pages) => {
    for (const page of viewers) {
      const others = pages.filter((p) => p !== page);
      try {
        const firstFrames = await step(
          `${label}: page ${page.name} decodes video + receives audio of ${others.map((o) => o.name).join(', ')}`,
          () => waitMedia(page, others),
        );
        for (const [from, epochMs] of Object.entries(firstFrames)) {
          const sender = others.find((o) => o.name === from);
          const key = `${page.name} <- ${from}`;
          if (!pairTimes.has(key)) pairTimes.set(key, epochMs - Math.max(page.joinStartEpochMs, sender.joinStartEpochMs));
        }
        if (page.peersAtJoin?.length && !joinerTimes.has(page.name)) {
          const last = Math.max(...page.peersAtJoin.map((p) => firstFrames[p.name]));
          joinerTimes.set(page.name, last - page.joinStartEpochMs);
        }
      } catch (error) {
        await failWith(error, pages);
      }
    }
  };
  // `limitMs` below the grace period: removed by the page's leaveRoom, not by the server's timeout.
  const expectGone = async (label, leaver, viewers, limitMs = TIMEOUT.gone) => {
    const times = [];
    for (const page of viewers) {
      try {
        times.push(
          await step(`${label}: ${leaver.name}'s tile and consumers removed on page ${page.name} within ${limitMs} ms`, () =>
            waitGone(page, leaver.peerId, leaver.name, limitMs),
          ),
        );
      } catch (error) {
        await failWith(error, [page]);
      }
    }
    return times;
  };

  // 1. Three peers.
  const alice = await join('alice');
  const bob = await join('bob');
  const carol = await join('carol');
  await expectAllMedia('3 peers');

  if (SCREENSHOT) {
    await step(`screenshot of alice's page -> ${SCREENSHOT}`, async () => {
      await sleep(2500); // stats overlays filled, top layers up
      await mkdir(path.dirname(SCREENSHOT), { recursive: true });
      await alice.page.bringToFront();
      await alice.page.screenshot({ path: SCREENSHOT, timeout: 10_000 });
    });
  }

  // 2. A late joiner sees everyone and everyone sees him.
  const dave = await join('dave');
  await expectAllMedia('dave joined late');

  // 3. Signaling lost briefly: the session is resumed (same peer, same consumers).
  const consumerIdsOf = (page, peerId) =>
    page.eval((id) => [...window.ferrosoupDemo.state.consumers.values()].filter((c) => c.peerId === id).map((c) => c.consumer.id).sort(), peerId);
  const aliceSeesBob = await consumerIdsOf(alice, bob.peerId);
  try {
    await step('page bob: signaling dropped, session resumed within the grace period', async () => {
      await bob.eval(() => window.ferrosoupDemo.dropSignaling());
      const deadline = Date.now() + TIMEOUT.resume;
      let s;
      while (Date.now() < deadline) {
        s = await bob.eval(() => ({ ...window.ferrosoupDemo.state.reconnects, phase: window.ferrosoupDemo.state.phase, peerId: window.ferrosoupDemo.state.peerId }));
        if (s.resumed === 1 && s.phase === 'joined') break;
        await sleep(POLL_MS);
      }
      if (s.resumed !== 1 || s.phase !== 'joined') throw new Error(`page bob: not resumed after ${TIMEOUT.resume} ms (${JSON.stringify(s)})`);
      if (s.peerId !== bob.peerId) throw new Error(`page bob: peer id changed ${bob.peerId} -> ${s.peerId}`);
      const now = await consumerIdsOf(alice, bob.peerId);
      if (JSON.stringify(now) !== JSON.stringify(aliceSeesBob)) {
        throw new Error(`page alice: bob's consumers changed across the resume (${aliceSeesBob} -> ${now})`);
      }
    });
  } catch (error) {
    await failWith(error, [bob, alice]);
  }
  await expectAllMedia('after bob resumed', [alice, bob]);

  // 4. Signaling lost for longer than the grace: the server drops the peer; the page joins afresh.
  const oldBob = bob.peerId;
  try {
    await step(`page bob: signaling lost for longer than SESSION_GRACE=${SESSION_GRACE_S}s, joined again as a new peer`, async () => {
      await bob.eval((holdMs) => window.ferrosoupDemo.dropSignaling({ holdMs }), SESSION_GRACE_S * 1000 + 1500);
      const deadline = Date.now() + TIMEOUT.join + SESSION_GRACE_S * 1000;
      let s;
      while (Date.now() < deadline) {
        s = await bob.eval(() => {
          const d = window.ferrosoupDemo.state;
          return { ...d.reconnects, phase: d.phase, peerId: d.peerId, producers: d.producers.size, errors: d.errors };
        });
        if (s.errors.length) throw new Error(`page bob: ${s.errors.join('; ')}`);
        if (s.rejoined === 1 && s.phase === 'joined' && s.peerId !== oldBob && s.producers === 2) break;
        await sleep(POLL_MS);
      }
      if (!(s.rejoined === 1 && s.phase === 'joined' && s.peerId !== oldBob && s.producers === 2)) {
        throw new Error(`page bob: no fresh join (${JSON.stringify(s)})`);
      }
      bob.peerId = s.peerId;
    });
  } catch (error) {
    await failWith(error, [bob]);
  }
  await expectGone('bob expired', { name: 'bob (old session)', peerId: oldBob }, [alice, carol, dave]);
  await expectAllMedia('after bob joined again');

  // 5. carol presses Leave: gone from the others at once (leaveRoom), not after the grace.
  await carol.page.click('#leave');
  pages.splice(pages.indexOf(carol), 1);
  const leaveTimes = await expectGone('carol pressed Leave', carol, pages, LEFT_WITHIN_MS);
  await carol.page.close();

  // 6. dave closes his tab: the page sends leaveRoom on pagehide.
  await dave.page.close();
  pages.splice(pages.indexOf(dave), 1);
  const closeTimes = await expectGone('dave closed his tab', dave, pages, LEFT_WITHIN_MS);
  log(`removal seen after: Leave ${leaveTimes.join('/')} ms, tab closed ${closeTimes.join('/')} ms (grace ${SESSION_GRACE_S * 1000} ms)`);
  await expectAllMedia('alice and bob after the others left');

  // 7. Quality: Low then High on alice's tile of bob changes the decoded resolution.
  const qualitySelect = `.tile[data-peer-id="${bob.peerId}"] select.quality`;
  let low;
  try {
    low = await step("page alice: bob's tile set to Low, decoded at the lowest layer", async () => {
      await alice.page.selectOption(qualitySelect, 'low', { timeout: 5000 });
      return waitWidth(alice, bob, (w, c) => w > 0 && (c.spatialLayer === 0 || c.spatialLayer === null), 'Low layer');
    });
    await step(`page alice: bob's tile set to High, decoded wider than Low (${low}px)`, async () => {
      await alice.page.selectOption(qualitySelect, 'high', { timeout: 5000 });
      const high = await waitWidth(alice, bob, (w) => w > low, 'a wider layer');
      log(`bob's video on alice: Low ${low}px wide, High ${high}px wide`);
    });
  } catch (error) {
    await failWith(error, [alice, bob]);
  }

  // What the senders manage to send (their bandwidth estimate depends on server feedback).
  for (const page of pages) {
    const { outbound, consumers } = await page.snapshot();
    const bwe = outbound.find((o) => o.kind === 'transport')?.availableOutgoingBitrate;
    const video = outbound
      .filter((o) => o.kind === 'video')
      .map((o) => `${o.rid ?? 'single'} ${o.frameWidth}x${o.frameHeight} (${o.qualityLimitationReason})`);
    const received = consumers.filter((c) => c.kind === 'video').map((c) => `${c.displayName} ${c.frameWidth}x${c.frameHeight}`);
    log(`page ${page.name}: send BWE ${bwe ?? '?'} bps; sends ${video.join(', ')}; receives ${received.join(', ')}`);
  }
  const pairs = [...pairTimes.values()];
  log(`join-to-first-frame per viewer/sender pair (ms from the later join): ${[...pairTimes].map(([k, ms]) => `${k} ${ms}`).join(', ')}`);
  log(`join-to-first-frame pairs: n=${pairs.length} p50 ${percentile(pairs, 50)} ms, max ${Math.max(...pairs)} ms`);
  const joiners = [...joinerTimes.values()];
  log(
    `join-to-first-frame of every peer already there, per joining page: ${[...joinerTimes].map(([k, ms]) => `${k} ${ms}`).join(', ')}; ` +
      `p50 ${percentile(joiners, 50)} ms, max ${Math.max(...joiners)} ms`,
  );
  for (const page of pages) await page.page.close();

  // 8. Other codecs: two pages in a fresh room sending VP9, then H264.
  for (const [codec, mimeType] of [
    ['vp9', 'video/VP9'],
    ['h264', 'video/H264'],
  ]) {
    const failedBefore = results.filter((r) => !r.ok).length;
    try {
      await codecCall(context, server.baseUrl, `${roomId}-${codec}`, codec, mimeType);
    } catch (error) {
      // Reported here (the exit code comes from the results); the next codec still runs.
      if (results.filter((r) => !r.ok).length === failedBefore) {
        results.push({ name: `${codec} call`, ok: false, error });
        log(`FAIL ${codec} call: ${error.message.split('\n')[0]}`);
      }
      console.log(error.message.slice(error.message.indexOf('\n') + 1));
    }
  }
}

const watchdog = setTimeout(() => {
  log(`FAIL whole test exceeded ${TIMEOUT.whole} ms`);
  results.push({ name: 'whole test within time', ok: false });
  finish().finally(() => process.exit(1));
}, TIMEOUT.whole);

let finished = false;
async function finish() {
  if (finished) return;
  finished = true;
  for (const cleanup of cleanups) {
    try {
      await cleanup();
    } catch (error) {
      log(`cleanup: ${error.message}`);
    }
  }
  const failed = results.filter((r) => !r.ok);
  if (failed.length && serverLogPath) {
    try {
      const text = await readFile(serverLogPath, 'utf8');
      const lines = text.trimEnd().split('\n');
      console.log(`--- server log (last 40 of ${lines.length} lines, ${serverLogPath}):\n${lines.slice(-40).join('\n')}`);
    } catch {
      // no log
    }
  }
  if (tmpDir && !failed.length && process.env.KEEP_TMP !== '1') await rm(tmpDir, { recursive: true, force: true });
  const skipped = results.filter((r) => r.skipped).length;
  console.log(`${results.length - failed.length - skipped} passed, ${failed.length} failed${skipped ? `, ${skipped} skipped` : ''}`);
}

main()
  .catch((error) => {
    if (!results.some((r) => !r.ok)) {
      results.push({ name: 'setup', ok: false });
      log(`FAIL ${error.stack ?? error}`);
    } else if (error.message.includes('\n')) {
      console.log(error.message.slice(error.message.indexOf('\n') + 1));
    }
  })
  .finally(async () => {
    clearTimeout(watchdog);
    await finish();
    process.exit(results.some((r) => !r.ok) ? 1 : 0);
  });
