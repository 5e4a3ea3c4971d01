// Bandwidth estimation with a real browser on a narrow downlink (issue 10).
//
//   node tests/shaped-link.mjs [--verbose]      (part of npm test; needs root: ip netns, tc)
//
// A publisher page (headless Chromium in the host's network namespace) sends the web demo's
// 3-layer VP8 simulcast (1280x720 fake camera) plus Opus. A subscriber page runs in a second
// Chromium inside a network namespace of its own, joined to the host by a veth pair whose
// host end is shaped with a token bucket (`tc ... tbf`): everything the server sends it,
// signaling included, goes through LINK_KBPS kbit/s with a queue of QUEUE_MS. The server
// listens on the veth's host address (the publisher reaches it over loopback, unshaped).
//
// Steps: the subscriber decodes the publisher's video; over the WINDOW_S seconds from its
// first frame it decodes at least MIN_FPS frames/s, freezes (Chromium's
// totalFreezesDuration) less than MAX_FROZEN_S and loses less than MAX_AUDIO_LOSS of the
// audio packets; then the limit is lifted and the top simulcast layer (the width the
// publisher sends as its top encoding) must be decoded again within RECOVER_S seconds.
//
// Environment: as tests/e2e.mjs (FERROSOUP_BIN, CHROMIUM, RUST_LOG, KEEP_TMP), plus
//   LINK_KBPS       the downlink's rate (default 400)
//   RECOVER_S       how long the top layer may take to come back (default 20)
//   REFERENCE_BIN   another server speaking PROTOCOL.md (e.g. shared/reference-mediasoup's
//                   mediasoup-server) to measure instead of ferrosoup, started the same way;
//                   the page is then served by this script (same steps, same link)

import { execFileSync } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';

import { serveStatic } from '../scripts/serve.mjs';

import {
  CHROMIUM,
  DemoPage,
  POLL_MS,
  launchChromium,
  log,
  onCleanup,
  runTest,
  sleep,
  startServer,
  step,
  tmpDir,
  waitJoined,
  withDiagnosis,
} from './harness.mjs';

/** The subscriber's downlink, kbit/s. */
const LINK_KBPS = Number(process.env.LINK_KBPS) || 400;
/** The bottleneck's queue, in ms at LINK_KBPS (RFC 8867's test links use 300 ms). */
const QUEUE_MS = 300;
/** The measured window after the subscriber's first frame, s. */
const WINDOW_S = 15;
/** Least frame rate decoded over the window. */
const MIN_FPS = 10;
/** Most time frozen over the window, s. */
const MAX_FROZEN_S = 1.5;
/** Most audio packets lost over the window, as a fraction of those sent. */
const MAX_AUDIO_LOSS = 0.05;
/** The top layer must be back this long after the limit is lifted, s. */
const RECOVER_S = Number(process.env.RECOVER_S) || 20;
const TIMEOUT = { whole: 130_000 + RECOVER_S * 1000, join: 20_000, firstFrame: 20_000 };

const root = (...args) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });

/**
 * A namespace `ns` joined to the host by a veth pair: host end `host` (10.77.N.1/24,
 * shaped), namespace end 10.77.N.2/24. Removed by the run's cleanups.
 */
function createLink() {
  const n = 1 + (process.pid % 250);
  const link = { ns: `fs-bwe-${process.pid}`, host: `fsbwe${process.pid % 100000}h`, peer: `fsbwe${process.pid % 100000}n` };
  link.hostIp = `10.77.${n}.1`;
  link.peerIp = `10.77.${n}.2`;
  root('ip', 'netns', 'add', link.ns);
  onCleanup(() => root('ip', 'netns', 'del', link.ns));
  root('ip', 'link', 'add', link.host, 'type', 'veth', 'peer', 'name', link.peer);
  onCleanup(() => {
    try {
      root('ip', 'link', 'del', link.host);
    } catch {
      // already gone with the namespace
    }
  });
  root('ip', 'link', 'set', link.peer, 'netns', link.ns);
  root('ip', 'addr', 'add', `${link.hostIp}/24`, 'dev', link.host);
  root('ip', 'link', 'set', link.host, 'up');
  const inNs = (...args) => root('ip', 'netns', 'exec', link.ns, ...args);
  inNs('ip', 'addr', 'add', `${link.peerIp}/24`, 'dev', link.peer);
  inNs('ip', 'link', 'set', link.peer, 'up');
  inNs('ip', 'link', 'set', 'lo', 'up');
  return link;
}

/** Limits what the host sends into the namespace to `kbps` with a QUEUE_MS queue. */
function shape(link, kbps) {
  root('tc', 'qdisc', 'replace', 'dev', link.host, 'root', 'tbf', 'rate', `${kbps}kbit`, 'burst', '3000', 'latency', `${QUEUE_MS}ms`);
}

/** Lifts the limit. */
function unshape(link) {
  root('tc', 'qdisc', 'del', 'dev', link.host, 'root');
}

/** Serves dist/ on `ip` (for REFERENCE_BIN runs: the other server has no web demo). */
async function serveDist(ip) {
  const server = await serveStatic(0, undefined, ip);
  onCleanup(() => new Promise((resolve) => server.close(resolve)));
  return `http://${ip}:${server.address().port}/`;
}

/** The subscriber's view of the publisher's video and audio (cumulative counters). */
async function received(page) {
  return page.eval(async () => {
    const d = window.ferrosoupDemo;
    const out = { at: performance.now() };
    for (const entry of d.state.consumers.values()) {
      const report = await entry.consumer.getStats();
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp' || s.kind !== entry.kind) return;
        if (entry.kind === 'video') {
          out.video = {
            framesDecoded: s.framesDecoded ?? 0,
            frameWidth: s.frameWidth ?? 0,
            totalFreezesDuration: s.totalFreezesDuration,
            freezeCount: s.freezeCount,
            bytesReceived: s.bytesReceived ?? 0,
            spatialLayer: entry.spatialLayer,
          };
        } else {
          out.audio = { packetsReceived: s.packetsReceived ?? 0, packetsLost: s.packetsLost ?? 0, bytesReceived: s.bytesReceived ?? 0 };
        }
      });
    }
    return out;
  });
}

/** The width of the publisher's top simulcast encoding as it sends it now. */
async function topSentWidth(page) {
  const { outbound } = await page.snapshot();
  return Math.max(0, ...outbound.filter((o) => o.kind === 'video').map((o) => o.frameWidth ?? 0));
}

/** The server's view of the subscriber's receive transport: its estimate, if it reports one. */
async function serverEstimate(page) {
  const stats = await page.eval(() => window.ferrosoupDemo.serverStats());
  const recv = stats?.transports?.recv;
  const t = Array.isArray(recv) ? recv[0] : null;
  return t?.availableOutgoingBitrate ?? null;
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('needs root (ip netns, tc); CI runs as root');
  const link = await step(`network namespace with a veth pair, downlink shaped to ${LINK_KBPS} kbit/s (tbf, ${QUEUE_MS} ms queue)`, () => {
    const l = createLink();
    shape(l, LINK_KBPS);
    return l;
  });
  log(`link up: host ${link.hostIp} (${link.host}), subscriber ${link.peerIp} in ${link.ns}`);

  let baseUrl;
  const params = {};
  const reference = process.env.REFERENCE_BIN;
  const server = await step(`start ${reference ?? 'ferrosoup'} on ${link.hostIp}`, () =>
    startServer({ bin: reference, listenIp: link.hostIp }),
  );
  if (reference) {
    baseUrl = await serveDist(link.hostIp);
    params.ws = `ws://${link.hostIp}:${server.port}/ws`;
    log(`page served at ${baseUrl}; signaling ${params.ws}`);
  } else {
    baseUrl = server.baseUrl;
  }

  // mediasoup-client needs a secure context (navigator.userAgentData); this origin is no
  // localhost, so both browsers are told to treat it as secure.
  const secure = [`--unsafely-treat-insecure-origin-as-secure=${new URL(baseUrl).origin}`];
  const publisherBrowser = await step('launch the publisher chromium', () => launchChromium('publisher', { args: secure }));
  const wrapper = path.join(tmpDir, 'chromium-in-ns.sh');
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${link.ns} ${CHROMIUM} "$@"\n`);
  await chmod(wrapper, 0o755);
  const subscriberBrowser = await step(`launch the subscriber chromium in ${link.ns}`, () =>
    launchChromium('subscriber', { executablePath: wrapper, args: secure }),
  );

  const room = `bwe-${Math.random().toString(36).slice(2, 8)}`;
  const alice = await DemoPage.open(publisherBrowser, baseUrl, 'alice', { room, ...params });
  const pages = [alice];
  try {
    await step('page alice (publisher, unshaped): joins and sends 3-layer VP8 simulcast + Opus', () =>
      waitJoined(alice, { timeoutMs: TIMEOUT.join }),
    );
    const bob = await DemoPage.open(subscriberBrowser, baseUrl, 'bob', { room, produce: '0', ...params });
    pages.push(bob);
    await step(`page bob (subscriber behind ${LINK_KBPS} kbit/s): joins as a viewer`, () =>
      waitJoined(bob, { producers: 0, timeoutMs: TIMEOUT.join }),
    );

    const start = await step("page bob: decodes alice's video and receives her audio", async () => {
      const deadline = Date.now() + TIMEOUT.firstFrame;
      let r;
      while (Date.now() < deadline) {
        r = await received(bob);
        if (r.video?.framesDecoded > 0 && r.audio?.packetsReceived > 0) return r;
        await sleep(100);
      }
      throw new Error(`no decoded frame and audio after ${TIMEOUT.firstFrame} ms (last: ${JSON.stringify(r)})`);
    });

    const samples = [];
    const end = await step(`page bob: over ${WINDOW_S} s at ${LINK_KBPS} kbit/s, >= ${MIN_FPS} fps, < ${MAX_FROZEN_S} s frozen, < ${MAX_AUDIO_LOSS * 100} % audio lost`, async () => {
      let r = start;
      while (r.at - start.at < WINDOW_S * 1000) {
        await sleep(1000);
        r = await received(bob);
        samples.push(r);
      }
      const s = (r.at - start.at) / 1000;
      const fps = (r.video.framesDecoded - start.video.framesDecoded) / s;
      if (r.video.totalFreezesDuration === undefined) throw new Error('this Chromium reports no totalFreezesDuration');
      const frozen = r.video.totalFreezesDuration - start.video.totalFreezesDuration;
      const got = r.audio.packetsReceived - start.audio.packetsReceived;
      const lost = r.audio.packetsLost - start.audio.packetsLost;
      const loss = lost / Math.max(1, got + lost);
      const kbps = ((r.video.bytesReceived - start.video.bytesReceived + r.audio.bytesReceived - start.audio.bytesReceived) * 8) / s / 1000;
      log(
        `bob at ${LINK_KBPS} kbit/s over ${s.toFixed(1)} s: ${fps.toFixed(1)} fps, frozen ${frozen.toFixed(2)} s ` +
          `(${r.video.freezeCount - start.video.freezeCount} freezes), audio loss ${(loss * 100).toFixed(1)} % (${lost}/${got + lost}), ` +
          `received ${kbps.toFixed(0)} kbit/s of payload, width ${r.video.frameWidth}, widths per second ${samples.map((x) => x.video.frameWidth).join(' ')}`,
      );
      const problems = [];
      if (fps < MIN_FPS) problems.push(`${fps.toFixed(1)} fps < ${MIN_FPS}`);
      if (frozen >= MAX_FROZEN_S) problems.push(`frozen ${frozen.toFixed(2)} s >= ${MAX_FROZEN_S} s`);
      if (loss >= MAX_AUDIO_LOSS) problems.push(`audio loss ${(loss * 100).toFixed(1)} % >= ${MAX_AUDIO_LOSS * 100} %`);
      if (problems.length) throw new Error(problems.join(', '));
      return r;
    });
    log(`server's estimate toward bob: ${await serverEstimate(bob).catch(() => null)} bit/s`);
    const overlay = await bob.eval(() => document.querySelector('.tile.remote pre.stats')?.textContent ?? '').catch(() => '');
    log(`bob's overlay of alice: ${JSON.stringify(overlay)}`);

    await step(`limit lifted: page bob decodes alice's top layer again within ${RECOVER_S} s`, async () => {
      unshape(link);
      const lifted = Date.now();
      let top = 0;
      let r = end;
      let agreed = 0;
      const widths = [];
      while (Date.now() - lifted < RECOVER_S * 1000) {
        await sleep(POLL_MS);
        top = await topSentWidth(alice);
        const next = await received(bob);
        const flowing = next.video.framesDecoded > r.video.framesDecoded;
        r = next;
        widths.push(r.video.frameWidth);
        agreed = flowing && top > 0 && r.video.frameWidth === top ? agreed + 1 : 0;
        if (agreed >= 2) {
          log(`bob decodes ${top}px (alice's top layer) ${((Date.now() - lifted) / 1000).toFixed(1)} s after the limit was lifted`);
          return;
        }
      }
      throw new Error(`after ${RECOVER_S} s bob decodes ${r.video.frameWidth}px, alice's top layer is ${top}px (widths seen: ${widths.join(' ')})`);
    });
  } catch (error) {
    throw await withDiagnosis(error, pages);
  }
}

runTest('shaped-link', main, TIMEOUT.whole);
