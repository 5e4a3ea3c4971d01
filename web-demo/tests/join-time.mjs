// Join → first decoded frame in Chromium, a benchmark (not part of npm test):
//
//   node tests/join-time.mjs [--runs=N] [--peers=2,6] [--timeline]   (npm run join-time)
//
// Per run: a fresh server, one headless Chromium; pages join one room one after another,
// each sending the web demo's 3-layer VP8 simulcast + Opus, each waiting until it decodes
// every peer already there. The figure is the last page's: from its join (the moment the
// page starts joining) to the first decoded frame of each peer that was already in the
// room. A pair gives one figure per run, a room of 6 gives five. Printed per room size:
// every figure, p50 and max. --timeline prints the last joiner's timeline per run
// (signaling, transport states, first packet and frame of each stream: tests/timeline.mjs).
//
// Environment: as tests/e2e.mjs (FERROSOUP_BIN, CHROMIUM, RUST_LOG, KEEP_TMP), plus
//   REFERENCE_BIN   another server speaking PROTOCOL.md (e.g. shared/reference-mediasoup's
//                   mediasoup-server) measured instead, the page served by this script

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  DemoPage,
  launchChromium,
  log,
  onCleanup,
  percentile,
  runTest,
  startServer,
  step,
  tmpDir,
  waitJoined,
  waitMedia,
  withDiagnosis,
} from './harness.mjs';
import { serveStatic } from '../scripts/serve.mjs';
import { installTimeline, readTimeline } from './timeline.mjs';

const arg = (name, fallback) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
const RUNS = Number(arg('runs', 5));
const SIZES = arg('peers', '2,6').split(',').map(Number);
/** Print the last joiner's timeline of every run (tests/timeline.mjs). */
const TIMELINE = process.argv.includes('--timeline');

/** The frame heights a page decodes, e.g. "p0 180,360,720". */
async function decoding(page) {
  const stats = await page.eval(() => window.ferrosoupDemo.consumerStats());
  const heights = stats.filter((c) => c.kind === 'video').map((c) => c.frameHeight ?? '-');
  return `${page.name} ${heights.join(',')}`;
}

/** One room of `size` pages on a fresh server; returns the last page's figures, ms. */
async function oneRoom(context, size, run) {
  const reference = process.env.REFERENCE_BIN;
  const server = await startServer({ bin: reference });
  let baseUrl = server.baseUrl;
  const params = { room: `join-${size}-${run}` };
  if (reference) {
    const site = await serveStatic(0);
    baseUrl = `http://127.0.0.1:${site.address().port}/`;
    params.ws = `ws://127.0.0.1:${server.port}/ws`;
    onCleanup(() => new Promise((resolve) => site.close(resolve)));
  }
  const pages = [];
  try {
    let figures = [];
    for (let i = 0; i < size; i++) {
      const last = i === size - 1;
      const page = await DemoPage.open(context, baseUrl, `p${i}`, TIMELINE && last ? { ...params, timeline: 1 } : params);
      const joinStart = await page.eval(() => Math.round(performance.timeOrigin + window.ferrosoupDemo.state.joinStartedAt));
      const before = [...pages];
      pages.push(page);
      await waitJoined(page);
      if (before.length === 0) continue;
      const firstFrames = await waitMedia(page, before);
      figures = before.map((p) => firstFrames[p.name] - joinStart);
      if (TIMELINE && last) {
        log(`timeline of ${page.name}, from its join:\n${await readTimeline(page, joinStart)}`);
        const events = await page.eval(() => window.__timeline ?? []);
        await writeFile(path.join(tmpDir, `timeline-${size}-${run}.json`), JSON.stringify({ joinStart, events }));
        log(`what each page decodes now (the browser's load): ${(await Promise.all(pages.map(decoding))).join('; ')}`);
      }
    }
    return figures;
  } catch (error) {
    throw await withDiagnosis(error, pages);
  } finally {
    for (const page of pages) await page.page.close().catch(() => {});
    server.child.kill('SIGTERM');
  }
}

async function main() {
  const context = await step('launch chromium', () => launchChromium('profile'));
  if (TIMELINE) await installTimeline(context);
  const server = process.env.REFERENCE_BIN ?? 'ferrosoup';
  for (const size of SIZES) {
    const all = [];
    for (let run = 0; run < RUNS; run++) {
      const figures = await step(`${server}: room of ${size}, run ${run + 1}: the last page decodes every other`, () =>
        oneRoom(context, size, run),
      );
      log(`room of ${size}, run ${run + 1}: join → first frame ${figures.join(', ')} ms`);
      all.push(...figures);
    }
    log(`${server}: room of ${size}: join → first frame p50 ${percentile(all, 50)} ms, max ${Math.max(...all)} ms (n=${all.length}: ${all.join(' ')})`);
  }
}

runTest('join-time', main, 60_000 + RUNS * SIZES.reduce((a, b) => a + b, 0) * 15_000);
