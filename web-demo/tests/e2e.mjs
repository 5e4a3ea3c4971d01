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
// tile to Low then High and the decoded width grows, then to Auto: the server's preferred
// layer is the top one again and the tile's overlay shows the server's estimate toward
// alice and the layer its allocation gives (`auto → layer N/3`); then, per codec (VP9, H264), two
// fresh pages in a new room with `?codec=` each decode the other's video in that codec
// (H264 is SKIPPED, saying so, only when the browser cannot send H264). Every wait is bounded, a failure
// prints every page's state, stats and console plus the server log. The last line is
// "N passed, N failed"; the exit code is 0 only when all passed.

import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  DemoPage,
  POLL_MS,
  failureCount,
  launchChromium,
  log,
  percentile,
  recordFailure,
  runTest,
  skip,
  sleep,
  startServer,
  step,
  waitJoined,
  waitMedia,
  withDiagnosis,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.resolve(here, '../dist');
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
  join: 20_000,
  media: 30_000,
  gone: 10_000,
  resume: 10_000,
  layer: 20_000,
};

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
 * Waits until the server's `preferredSpatialLayer` for `page`'s video consumer of `sender`
 * is `preferred` (a layer, or 'top': Auto leaves the choice to the server's allocation)
 * and that tile's stats overlay has a line matching `line` (the server's view) naming the
 * layer the server allocates now; returns the overlay text.
 */
async function waitServerView(page, sender, preferred, line) {
  const deadline = Date.now() + TIMEOUT.layer;
  let last = null;
  while (Date.now() < deadline) {
    last = await page.eval(async (peerId) => {
      const d = window.ferrosoupDemo;
      const entry = [...d.state.consumers.values()].find((c) => c.peerId === peerId && c.kind === 'video');
      const server = entry && (await d.serverStats()).consumers[`video ${entry.consumer.id}`];
      const outbound = Array.isArray(server) ? server.find((s) => s.type === 'outbound-rtp') : null;
      return {
        top: entry ? entry.spatialLayers - 1 : null,
        preferred: outbound?.preferredSpatialLayer ?? null,
        allocation: outbound?.allocation ?? null,
        allocated: outbound?.allocatedSpatialLayer ?? null,
        overlay: document.querySelector(`.tile[data-peer-id="${peerId}"] pre.stats`)?.textContent ?? '',
      };
    }, sender.peerId);
    const wanted = preferred === 'top' ? last.top : preferred;
    const layer = last.allocation === 'layer' ? last.allocated : last.preferred;
    const current = layer !== null && last.overlay.includes(`→ layer ${layer + 1}/`);
    if (last.top !== null && last.preferred === wanted && current && line.test(last.overlay)) return last.overlay;
    await sleep(POLL_MS);
  }
  throw new Error(`page ${page.name}: server view of ${sender.name}'s video not shown after ${TIMEOUT.layer} ms (last: ${JSON.stringify(last)})`);
}

/**
 * Two pages join `room` with `?codec=codec`; each must decode the other's video
 * (framesDecoded growing, frameWidth > 0) with `mimeType` as the inbound codec. H264 is
 * skipped only when the browser's sender capabilities have no H264 at all.
 */
async function codecCall(context, baseUrl, room, codec, mimeType) {
  const members = [];
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
        await waitMedia(page, [other], TIMEOUT.media);
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
    throw await withDiagnosis(error, members);
  } finally {
    for (const page of members) await page.page.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------

async function main() {
  const server = await step('start ferrosoup', () => startServer({ env: { SESSION_GRACE: String(SESSION_GRACE_S) } }));
  log(`server at ${server.baseUrl}, log ${server.logPath}`);
  await step('server serves the built bundle (dist/) at / , /app.js, /style.css', () => checkServedBundle(server.baseUrl));

  const context = await step('launch chromium', () => launchChromium('profile'));

  const roomId = `e2e-${Math.random().toString(36).slice(2, 8)}`;
  /** Pages in the call. */
  const pages = [];
  const failWith = async (error, involved) => {
    throw await withDiagnosis(error, involved);
  };
  // "viewer <- sender" -> ms from the later of the two joins to the viewer's first frame.
  const pairTimes = new Map();
  // page -> ms from its join to the first frame of every peer already in the room.
  const joinerTimes = new Map();

  const join = async (name) => {
    const page = await DemoPage.open(context, server.baseUrl, name, { room: roomId });
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
          () => waitMedia(page, others, TIMEOUT.media),
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
    await step("page alice: bob's tile set to Auto, the server's preferred layer is the top one again and the overlay shows the server's estimate and allocation", async () => {
      // From Low, so that Auto has the preferred layer to restore.
      await alice.page.selectOption(qualitySelect, 'low', { timeout: 5000 });
      await waitServerView(alice, bob, 0, /^server est .* {2}low → layer 1\/3$/m);
      await alice.page.selectOption(qualitySelect, 'auto', { timeout: 5000 });
      const text = await waitServerView(alice, bob, 'top', /^server est \d+(\.\d)? [kM]b\/s {2}auto → layer [1-3]\/3$/m);
      log(`alice's overlay of bob: ${JSON.stringify(text)}`);
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
    const failedBefore = failureCount();
    try {
      await codecCall(context, server.baseUrl, `${roomId}-${codec}`, codec, mimeType);
    } catch (error) {
      // Reported here (the exit code comes from the results); the next codec still runs.
      if (failureCount() === failedBefore) recordFailure(`${codec} call`, error);
      console.log(error.message.slice(error.message.indexOf('\n') + 1));
    }
  }
}

runTest('e2e', main, TIMEOUT.whole);
