// What the browser tests share: the run's steps and results, the ferrosoup server process,
// headless Chromium, and a page of the web demo read through `window.ferrosoupDemo`.
//
// A test script calls `runTest(name, main, timeoutMs)`: `main` runs its steps (`step`,
// `skip`); cleanups registered with `onCleanup` run at the end (last registered first);
// the last line printed is "N passed, N failed" and the exit code is 0 only when all passed.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Server binary under test. */
export const SERVER_BIN = process.env.FERROSOUP_BIN ?? path.resolve(here, '../../target/debug/ferrosoup');
/** Browser binary. */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** Print every page's console as it happens. */
export const VERBOSE = process.argv.includes('--verbose');
/** Interval of every polling loop. */
export const POLL_MS = 300;

const results = [];
const cleanups = [];
/** The run's temp dir (server log, browser profiles); set by `runTest`. */
export let tmpDir;
/** The logs of the servers started, shown when a step fails. */
const serverLogPaths = [];

export function log(message) {
  console.log(`${new Date().toISOString().slice(11, 23)} ${message}`);
}

/** Registers `fn` to run at the end of the test, before the cleanups registered earlier. */
export function onCleanup(fn) {
  cleanups.unshift(fn);
}

/** Records a step that could not run, with the reason. */
export function skip(name, reason) {
  results.push({ name, ok: true, skipped: reason });
  log(`SKIPPED ${name}: ${reason}`);
}

/** Runs one named step; its failure is recorded and rethrown. */
export async function step(name, fn) {
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

/** Records a failure outside any step (the next part of a test still runs). */
export function recordFailure(name, error) {
  results.push({ name, ok: false, error });
  log(`FAIL ${name}: ${error.message.split('\n')[0]}`);
}

/** How many failures are recorded so far. */
export function failureCount() {
  return results.filter((r) => !r.ok).length;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// ---------------------------------------------------------------------------
// Server

/**
 * Starts the server `bin` (another server speaking PROTOCOL.md takes the same settings) on
 * `listenIp` (HTTP and RTC) with one worker and a small random UDP range, plus `env`;
 * resolves once /health answers. Its output goes to `logName` in the run's temp dir (shown
 * when a step fails). Stopped by the run's cleanups.
 */
export async function startServer({ bin = SERVER_BIN, listenIp = '127.0.0.1', env = {}, timeoutMs = 20_000, logName = 'server.log' } = {}) {
  if (!existsSync(bin)) {
    throw new Error(`${bin} missing: run \`cargo build -p ferrosoup-server\` at the repository root`);
  }
  const port = await freeTcpPort();
  // One worker needs one UDP port; a small random range keeps parallel runs apart.
  const rtcMin = Number(process.env.RTC_MIN_PORT) || 42000 + Math.floor(Math.random() * 500) * 10;
  const serverLogPath = path.join(tmpDir, logName);
  serverLogPaths.push(serverLogPath);
  const out = createWriteStream(serverLogPath);
  const child = spawn(bin, [], {
    env: {
      ...process.env,
      PORT: String(port),
      LISTEN_IP: listenIp,
      RTC_MIN_PORT: String(rtcMin),
      RTC_MAX_PORT: String(rtcMin + 9),
      NUM_WORKERS: '1',
      DRAIN_SECONDS: '0',
      RUST_LOG: process.env.RUST_LOG ?? 'info,rtc_dtls=error',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  onCleanup(() => stopServer(child));

  const baseUrl = `http://${listenIp}:${port}/`;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`server exited early (${JSON.stringify(exited)}); see ${serverLogPath}`);
    try {
      const res = await fetch(new URL('health', baseUrl), { signal: AbortSignal.timeout(1000) });
      if (res.ok) return { port, child, baseUrl, logPath: serverLogPath };
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  throw new Error(`server not healthy after ${timeoutMs} ms; see ${serverLogPath}`);
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
// Browser

/**
 * Launches headless Chromium with a fake camera and microphone, profile in the run's temp
 * dir under `profile`; `executablePath` may wrap the browser (e.g. run it in a network
 * namespace). Closed by the run's cleanups.
 */
export async function launchChromium(profile, { executablePath = CHROMIUM, args = [] } = {}) {
  const context = await chromium.launchPersistentContext(path.join(tmpDir, profile), {
    executablePath,
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
      ...args,
    ],
  });
  onCleanup(() => context.close());
  return context;
}

/** A page of the web demo, read through the `window.ferrosoupDemo` it exposes. */
export class DemoPage {
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

  /** Opens a page of `context` at the demo with `params` (room, name, codec, ...). */
  static async open(context, baseUrl, name, params) {
    const page = new DemoPage(name, await context.newPage());
    const url = new URL(baseUrl);
    for (const [k, v] of Object.entries({ name, ...params })) url.searchParams.set(k, v);
    await page.page.goto(url.href, { timeout: 10_000 });
    return page;
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

/** Appends every page's diagnosis to `error`'s message and returns it. */
export async function withDiagnosis(error, pages) {
  const diag = await Promise.all(pages.map((p) => p.diagnose()));
  error.message += `\n${diag.join('\n')}`;
  return error;
}

/** Waits until `page` joined its room with `producers` producers (camera + mic by default). */
export async function waitJoined(page, { producers = 2, timeoutMs = 20_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
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
    if (snap.phase === 'joined' && snap.producers.length === producers) {
      page.peerId = snap.peerId;
      return snap;
    }
    await sleep(POLL_MS);
  }
  throw new Error(`page ${page.name}: not joined with ${producers} producers after ${timeoutMs} ms (last: ${JSON.stringify(snap)})`);
}

/**
 * Waits until `page` decodes video (framesDecoded growing, frameWidth > 0) and receives
 * audio (packetsReceived growing) from every page in `others`, with a named tile for each.
 * Returns {senderName: first-frame epoch ms}.
 */
export async function waitMedia(page, others, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
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
  throw new Error(`page ${page.name}: after ${timeoutMs} ms still missing: ${missing.join(' | ')}`);
}

// ---------------------------------------------------------------------------
// Run

/**
 * Runs `main` with a temp dir and a watchdog of `timeoutMs`, then the cleanups; prints
 * the summary and exits with 0 only when every step passed.
 */
export function runTest(name, main, timeoutMs) {
  let finished = false;
  const finish = async () => {
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
    for (const serverLogPath of failed.length ? serverLogPaths : []) {
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
  };
  const watchdog = setTimeout(() => {
    log(`FAIL whole test exceeded ${timeoutMs} ms`);
    results.push({ name: 'whole test within time', ok: false });
    finish().finally(() => process.exit(1));
  }, timeoutMs);
  (async () => {
    tmpDir = await mkdtemp(path.join(os.tmpdir(), `ferrosoup-${name}-`));
    log(`temp dir ${tmpDir}; server ${SERVER_BIN}`);
    await main();
  })()
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
}
