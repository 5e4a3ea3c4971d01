// Browser end-to-end test: real headless Chromium pages running the web demo
// (mediasoup-client + protoo-client) against a real ferrosoup server.
//
//   node tests/e2e.mjs [--simulcast] [--workaround=mid] [--verbose]
//
// Environment:
//   FERROSOUP_BIN   server binary (default ../target/debug/ferrosoup)
//   CHROMIUM        browser binary (default /usr/bin/chromium)
//   RUST_LOG        server log filter (default info); the log is kept in the temp dir
//   DUMP_SDP=1      print each page's recv-transport SDP when a step fails
//   SCREENSHOT_DIR  save a screenshot of every page once three peers see each other
//   RTC_MIN_PORT    first of the 10 UDP ports given to the server (default: random)
//   KEEP_TMP=1      keep the temp dir (server log, browser profile) after the run
//
// Steps: two pages join one room and must decode each other's video and receive each
// other's audio; a third joins and all three must see both others; the third leaves and
// the other two must drop its tile. Every wait is bounded; the server is stopped at the end.
// The last line is "N passed, N failed".

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildDemo } from '../scripts/build.mjs';
import { serveStatic } from '../scripts/serve.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const SERVER_BIN = process.env.FERROSOUP_BIN ?? path.resolve(here, '../../target/debug/ferrosoup');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SIMULCAST = process.argv.includes('--simulcast') || process.env.SIMULCAST === '1';
const VERBOSE = process.argv.includes('--verbose');
// Client-side workarounds for server issues (comma-separated, see src/app.js), e.g. mid.
const WORKAROUND = (process.argv.find((a) => a.startsWith('--workaround=')) ?? '').slice('--workaround='.length);

const TIMEOUT = {
  whole: 150_000,
  serverStart: 20_000,
  join: 20_000,
  media: 25_000,
  leave: 10_000,
};
const POLL_MS = 500;

const results = [];
const cleanups = [];
let tmpDir;
let serverLogPath;

function log(message) {
  console.log(`${new Date().toISOString().slice(11, 23)} ${message}`);
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
    log(`FAIL ${name}: ${error.message}`);
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

// ---------------------------------------------------------------------------
// Server

async function startServer() {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`${SERVER_BIN} missing: run \`flock /tmp/cargo.lock cargo build -p ferrosoup-server\` in /work/main`);
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
      RUST_LOG: process.env.RUST_LOG ?? "info,rtc_dtls=error",
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
      if (res.ok) return { port, child, wsUrl: `ws://127.0.0.1:${port}/ws` };
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

// ---------------------------------------------------------------------------
// Pages

class DemoPage {
  constructor(name, page) {
    this.name = name;
    this.page = page;
    this.console = [];
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
        producers: [...d.state.producers.keys()],
        peers: [...d.state.peers.keys()],
        transports: d.transportStates(),
        consumers: await d.consumerStats(),
        outbound: await d.producerStats(),
      };
    });
  }

  serverStats() {
    return this.eval(() => window.ferrosoupDemo.serverStats());
  }

  /** What to show when a step of this page fails. */
  async diagnose() {
    let snap;
    try {
      snap = JSON.stringify(await this.snapshot());
    } catch (error) {
      snap = `(no snapshot: ${error.message})`;
    }
    let server;
    try {
      server = JSON.stringify(await this.serverStats());
    } catch (error) {
      server = `(none: ${error.message})`;
    }
    if (process.env.DUMP_SDP === '1') {
      const sdp = await this.eval(() => window.ferrosoupDemo.recvSdp()).catch(() => null);
      server += `\n--- page ${this.name} recv SDP:\n${sdp?.remote}\n--- answer:\n${sdp?.local}`;
    }
    return `--- page ${this.name} state:\n${snap}\n--- page ${this.name} server-side stats:\n${server}\n--- page ${this.name} console (last 30):\n${this.console.slice(-30).join('\n')}`;
  }
}

async function openPage(context, staticUrl, wsUrl, roomId, name) {
  const page = new DemoPage(name, await context.newPage());
  const url = new URL(staticUrl);
  url.searchParams.set('room', roomId);
  url.searchParams.set('name', name);
  url.searchParams.set('ws', wsUrl);
  if (SIMULCAST) url.searchParams.set('simulcast', '1');
  if (WORKAROUND) url.searchParams.set('workaround', WORKAROUND);
  await page.page.goto(url.href, { timeout: 10_000 });
  return page;
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
        producers: d.state.producers.size,
        transports: d.transportStates(),
      };
    });
    if (snap.errors.length) throw new Error(`page ${page.name}: join failed: ${snap.errors.join('; ')}`);
    if (snap.phase === 'joined' && snap.producers === 2) {
      page.peerId = snap.peerId;
      return snap;
    }
    await sleep(POLL_MS);
  }
  throw new Error(`page ${page.name}: not joined with 2 producers after ${TIMEOUT.join} ms (last: ${JSON.stringify(snap)})`);
}

/**
 * Waits until `page` decodes video (framesDecoded growing, frameWidth > 0) and receives
 * audio (packetsReceived growing) from every page in `others`. Returns first-frame times.
 */
async function waitMedia(page, others) {
  const deadline = Date.now() + TIMEOUT.media;
  const prev = new Map();
  const want = new Map(others.map((o) => [o.peerId, o.name]));
  let missing = [];
  while (Date.now() < deadline) {
    const snap = await page.snapshot();
    if (snap.errors.length) throw new Error(`page ${page.name}: ${snap.errors.join('; ')}`);
    missing = [];
    const firstFrames = {};
    for (const [peerId, name] of want) {
      for (const kind of ['video', 'audio']) {
        const c = snap.consumers.find((x) => x.peerId === peerId && x.kind === kind);
        if (!c) {
          missing.push(`${kind} from ${name}: no consumer`);
          continue;
        }
        const before = prev.get(c.consumerId);
        prev.set(c.consumerId, c);
        if (kind === 'video') {
          if (!(c.framesDecoded > 0 && c.frameWidth > 0 && before && c.framesDecoded > before.framesDecoded)) {
            missing.push(
              `video from ${name}: packetsReceived=${c.packetsReceived} framesDecoded=${c.framesDecoded} ` +
                `keyFramesDecoded=${c.keyFramesDecoded} frameWidth=${c.frameWidth} pli=${c.pliCount} nack=${c.nackCount}`,
            );
          }
          firstFrames[name] = c.firstFrameEpochMs;
        } else if (!(before && c.packetsReceived > before.packetsReceived)) {
          missing.push(`audio from ${name}: packetsReceived=${c.packetsReceived} (not growing)`);
        }
      }
    }
    if (missing.length === 0) return firstFrames;
    await sleep(POLL_MS);
  }
  throw new Error(`page ${page.name}: after ${TIMEOUT.media} ms still missing: ${missing.join(' | ')}`);
}

async function waitGone(page, gone) {
  const deadline = Date.now() + TIMEOUT.leave;
  let snap;
  while (Date.now() < deadline) {
    snap = await page.eval(
      (peerId) => {
        const d = window.ferrosoupDemo;
        return {
          hasPeer: d.state.peers.has(peerId),
          consumers: [...d.state.consumers.values()].filter((c) => c.peerId === peerId).length,
          tiles: document.querySelectorAll(`.tile[data-peer-id="${peerId}"]`).length,
        };
      },
      gone.peerId,
    );
    if (!snap.hasPeer && snap.consumers === 0 && snap.tiles === 0) return;
    await sleep(POLL_MS);
  }
  throw new Error(`page ${page.name}: ${gone.name} still present after ${TIMEOUT.leave} ms (${JSON.stringify(snap)})`);
}

// ---------------------------------------------------------------------------

async function main() {
  tmpDir = await mkdtemp(path.join(os.tmpdir(), 'ferrosoup-e2e-'));
  log(`temp dir ${tmpDir}; simulcast ${SIMULCAST ? 'on' : 'off'}; workarounds ${WORKAROUND || 'none'}`);

  await step('build the bundle', () => buildDemo({ dev: true }));
  const httpServer = await serveStatic(0);
  cleanups.push(() => new Promise((resolve) => httpServer.close(resolve)));
  const staticUrl = `http://127.0.0.1:${httpServer.address().port}/`;

  const server = await step('start ferrosoup', startServer);
  log(`server on ${server.wsUrl}, log ${serverLogPath}`);

  const context = await step('launch chromium', () =>
    chromium.launchPersistentContext(path.join(tmpDir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 20_000,
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
      ],
    }),
  );
  cleanups.unshift(() => context.close());

  const roomId = `e2e-${Math.random().toString(36).slice(2, 8)}`;
  const pages = [];
  const failWith = async (error, involved) => {
    const diag = await Promise.all(involved.map((p) => p.diagnose()));
    error.message += `\n${diag.join('\n')}`;
    throw error;
  };
  // "viewer <- sender" -> ms from the later of the two joins to the viewer's first frame.
  const timings = new Map();

  const join = async (name) => {
    const page = await openPage(context, staticUrl, server.wsUrl, roomId, name);
    page.joinStartEpochMs = await page.eval(() =>
      Math.round(performance.timeOrigin + window.ferrosoupDemo.state.joinStartedAt),
    );
    pages.push(page);
    try {
      await step(`page ${name}: join room ${roomId} and produce camera + mic`, () => waitJoined(page));
    } catch (error) {
      await failWith(error, [page]);
    }
    return page;
  };
  const expectAllMedia = async (label) => {
    for (const page of pages) {
      const others = pages.filter((p) => p !== page);
      try {
        const firstFrames = await step(
          `${label}: page ${page.name} decodes video + receives audio of ${others.map((o) => o.name).join(', ')}`,
          () => waitMedia(page, others),
        );
        for (const [from, epochMs] of Object.entries(firstFrames)) {
          const sender = others.find((o) => o.name === from);
          const key = `${page.name} <- ${from}`;
          if (!timings.has(key)) timings.set(key, epochMs - Math.max(page.joinStartEpochMs, sender.joinStartEpochMs));
        }
      } catch (error) {
        await failWith(error, pages);
      }
    }
  };

  await join('alice');
  await join('bob');
  await expectAllMedia('2 peers');
  const carol = await join('carol');
  await expectAllMedia('3 peers');
  if (process.env.SCREENSHOT_DIR) {
    for (const page of pages) {
      await page.page.bringToFront();
      await page.page.screenshot({ path: path.join(process.env.SCREENSHOT_DIR, `${page.name}.png`), timeout: 10_000 });
    }
  }

  await carol.page.close();
  pages.splice(pages.indexOf(carol), 1);
  for (const page of pages) {
    try {
      await step(`page ${page.name}: carol's tile and consumers removed after she leaves`, () => waitGone(page, carol));
    } catch (error) {
      await failWith(error, [page]);
    }
  }
  await expectAllMedia('after carol left');

  // What the senders manage to send (their bandwidth estimate depends on server feedback).
  for (const page of pages) {
    const { outbound, consumers } = await page.snapshot();
    const bwe = outbound.find((o) => o.kind === 'transport')?.availableOutgoingBitrate;
    const video = outbound
      .filter((o) => o.kind === 'video')
      .map((o) => `${o.rid ?? 'single'} ${o.frameWidth}x${o.frameHeight} (${o.qualityLimitationReason})`);
    const received = consumers
      .filter((c) => c.kind === 'video')
      .map((c) => `${c.displayName} ${c.frameWidth}x${c.frameHeight} pli=${c.pliCount}`);
    log(`page ${page.name}: send BWE ${bwe ?? '?'} bps; sends ${video.join(', ')}; receives ${received.join(', ')}`);
  }
  const list = [...timings].map(([k, ms]) => `${k}: ${ms} ms`);
  log(`join-to-first-frame (from the later join of viewer and sender): ${list.join(', ')}`);
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
  console.log(`${results.length - failed.length} passed, ${failed.length} failed`);
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
