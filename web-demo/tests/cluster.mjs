// Browser test of a room spanning two nodes of a cluster: a real redis-server, two ferrosoup
// processes sharing it, headless Chromium pages of the web demo (unmodified
// mediasoup-client) connected to one node or the other.
//
//   node tests/cluster.mjs [--verbose]      (part of npm test; needs redis-server)
//
// Environment: as tests/e2e.mjs (FERROSOUP_BIN, CHROMIUM, RUST_LOG, KEEP_TMP); REDIS_SERVER
// (default redis-server) and REDIS_CLI (default redis-cli).
//
// Steps: two signaling-only pages (no media: nothing else loads the machine yet, so their
// clocks read the servers' path, not a busy renderer's) join one room on node 1 and node 2:
// the leave of the first reaches the second within 100 ms; alice on node 1 and bob on
// node 2 join the room and each decodes the other's video and hears the other's audio,
// across the nodes (pipe transports); carol joins late on node 2: her joinRoom answer
// lists alice's producers (node 1) and she decodes alice and bob; alice leaves on node 1
// and bob's page on node 2 gets peerLeft; dave joins on node 1, node 1 is killed
// (SIGKILL): bob gets peerLeft for dave within NODE_TIMEOUT + 2 s, and Redis holds no key
// naming node 1 afterwards. The last line is "N passed, N failed".

import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

import {
  DemoPage,
  POLL_MS,
  freeTcpPort,
  launchChromium,
  log,
  onCleanup,
  runTest,
  sleep,
  startServer,
  step,
  waitJoined,
  waitMedia,
  withDiagnosis,
} from './harness.mjs';

const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';
const REDIS_CLI = process.env.REDIS_CLI ?? 'redis-cli';
/** Seconds without a heartbeat before a node is dead (the nodes' NODE_TIMEOUT). */
const NODE_TIMEOUT_S = 2;
/** The most a leave on one node may take to reach a page on the other (issue 13). */
const MAX_LEAVE_MS = 100;
const TIMEOUT = { whole: 180_000, join: 20_000, media: 40_000, redis: 10_000 };

const run = promisify(execFile);

/** A redis-server of the test's own on a free loopback port, nothing kept on disk. */
async function startRedis() {
  const port = await freeTcpPort();
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  child.on('error', (error) => {
    exited = { error: error.message };
  });
  onCleanup(() => child.kill('SIGKILL'));
  const cli = (...args) => run(REDIS_CLI, ['-h', '127.0.0.1', '-p', String(port), ...args]).then((r) => r.stdout.trim());
  const deadline = Date.now() + TIMEOUT.redis;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`redis-server exited: ${JSON.stringify(exited)}`);
    try {
      if ((await cli('PING')) === 'PONG') return { url: `redis://127.0.0.1:${port}`, cli };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`redis-server not answering PING after ${TIMEOUT.redis} ms`);
}

/** Waits until `page` shows a tile of `other`'s peer with its name. */
async function waitTile(page, other) {
  const deadline = Date.now() + TIMEOUT.join;
  let tiles;
  while (Date.now() < deadline) {
    tiles = (await page.snapshot()).tiles;
    if (tiles.some((t) => t.peerId === other.peerId && t.name === other.name)) return;
    await sleep(POLL_MS);
  }
  throw new Error(`page ${page.name}: no tile named ${other.name} (tiles: ${JSON.stringify(tiles)})`);
}

/**
 * A page of `context` that speaks protoo over a bare WebSocket to `baseUrl`'s node and joins
 * `room` as `name`, with no media; it records when each notification arrives (epoch ms).
 * Returns {page, peerId}; `page.evaluate(() => leave())` sends leaveRoom and returns when.
 */
async function signalingPeer(context, baseUrl, room, name) {
  const page = await context.newPage();
  const url = new URL('ws', baseUrl);
  url.protocol = 'ws:';
  const peerId = await page.evaluate(
    async ({ url, room, name }) => {
      window.notifications = [];
      const ws = new WebSocket(url, 'protoo');
      const pending = new Map();
      let nextId = 1;
      ws.onmessage = (event) => {
        const at = Date.now();
        const m = JSON.parse(event.data);
        if (m.notification) window.notifications.push({ method: m.method, data: m.data, at });
        else if (m.response && pending.has(m.id)) {
          pending.get(m.id)(m);
          pending.delete(m.id);
        }
      };
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error(`WebSocket to ${url} failed`));
      });
      const request = (method, data) =>
        new Promise((resolve, reject) => {
          const id = nextId++;
          pending.set(id, (m) => (m.ok ? resolve(m.data) : reject(new Error(`${method}: ${m.errorCode} ${m.errorReason}`))));
          ws.send(JSON.stringify({ request: true, id, method, data }));
        });
      window.leave = () => {
        const at = Date.now();
        ws.send(JSON.stringify({ request: true, id: nextId++, method: 'leaveRoom', data: {} }));
        return at;
      };
      const joined = await request('joinRoom', { roomId: room, displayName: name });
      return joined.peerId;
    },
    { url: url.href, room, name },
  );
  onCleanup(() => page.close());
  return { page, peerId };
}

/**
 * Waits until `peer` (a signaling-only page, or a demo page after recordNotifications)
 * got `method` about `peerId`; returns when it arrived (epoch ms).
 */
async function waitNotification(peer, method, peerId, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const at = await peer.page.evaluate(
      ({ method, peerId }) => window.notifications.find((n) => n.method === method && n.data.peerId === peerId)?.at ?? null,
      { method, peerId },
    );
    if (at !== null) return at;
    await sleep(20);
  }
  throw new Error(`no ${method} for ${peerId} after ${timeoutMs} ms`);
}

/** Makes demo page `page` record its notifications from now on, as signaling-only pages do. */
function recordNotifications(page) {
  return page.eval(() => {
    window.notifications = [];
    window.ferrosoupDemo.state.protoo.on('notification', ({ method, data }) => {
      window.notifications.push({ method, data, at: Date.now() });
    });
  });
}

runTest(
  'cluster',
  async () => {
    const redis = await step('start redis-server', () => startRedis());
    const nodeIds = [`node1-${process.pid}`, `node2-${process.pid}`];
    // Two ranges of 10 ports apart from each other.
    const rtcBase = 42000 + Math.floor(Math.random() * 250) * 20;
    const node = (i) =>
      startServer({
        logName: `${nodeIds[i]}.log`,
        env: {
          REDIS_URL: redis.url,
          NODE_ID: nodeIds[i],
          NODE_TIMEOUT: String(NODE_TIMEOUT_S),
          RTC_MIN_PORT: String(rtcBase + 10 * i),
          RTC_MAX_PORT: String(rtcBase + 10 * i + 9),
        },
      });
    const node1 = await step('start node 1', () => node(0));
    const node2 = await step('start node 2', () => node(1));
    const context = await step('launch chromium', () => launchChromium('profile'));
    const room = `cluster-${Date.now()}`;
    // Before any media page loads the machine's cores: the clocks then read the servers'
    // path, not a busy renderer's.
    await step(`a leave on node 1 reaches a page on node 2 within ${MAX_LEAVE_MS} ms (signaling-only pages)`, async () => {
      const eve = await signalingPeer(context, node1.baseUrl, room, 'eve');
      const frank = await signalingPeer(context, node2.baseUrl, room, 'frank');
      await waitNotification(eve, 'peerJoined', frank.peerId, 5_000);
      const leftAt = await eve.page.evaluate(() => window.leave());
      const seenAt = await waitNotification(frank, 'peerLeft', eve.peerId, 5_000);
      log(`leaveRoom on node 1 → peerLeft on node 2: ${seenAt - leftAt} ms`);
      if (seenAt - leftAt > MAX_LEAVE_MS) throw new Error(`${seenAt - leftAt} ms > ${MAX_LEAVE_MS} ms`);
      await frank.page.evaluate(() => window.leave());
      await Promise.all([eve.page.close(), frank.page.close()]);
    });
    const alice = await DemoPage.open(context, node1.baseUrl, 'alice', { room });
    const bob = await DemoPage.open(context, node2.baseUrl, 'bob', { room });
    const pages = [alice, bob];
    try {
      await step('alice (node 1) and bob (node 2) join the same room', () =>
        Promise.all([alice, bob].map((p) => waitJoined(p, { timeoutMs: TIMEOUT.join }))),
      );
      await step("each sees the other's tile, named, across the nodes", () =>
        Promise.all([waitTile(alice, bob), waitTile(bob, alice)]),
      );
      await step('each decodes the video and receives the audio of the other, across the nodes', () =>
        Promise.all([waitMedia(alice, [bob], TIMEOUT.media), waitMedia(bob, [alice], TIMEOUT.media)]),
      );

      const carol = await DemoPage.open(context, node2.baseUrl, 'carol', { room });
      pages.push(carol);
      await step("carol joins late on node 2: her joinRoom answer lists alice's producers (node 1) and bob", async () => {
        await waitJoined(carol, { timeoutMs: TIMEOUT.join });
        const listed = await carol.eval(() => window.ferrosoupDemo.state.joinedPeers);
        const names = Object.fromEntries(listed.map((p) => [p.peerId, p.displayName]));
        if (names[alice.peerId] !== 'alice' || names[bob.peerId] !== 'bob') {
          throw new Error(`carol's joinRoom answer: ${JSON.stringify(listed)}`);
        }
        const a = listed.find((p) => p.peerId === alice.peerId);
        const kinds = (a?.producers ?? []).map((p) => p.kind).sort();
        if (JSON.stringify(kinds) !== '["audio","video"]') {
          throw new Error(`alice in carol's joinRoom answer: ${JSON.stringify(a)}`);
        }
      });
      await step('carol decodes alice (node 1) and bob (node 2)', () => waitMedia(carol, [alice, bob], TIMEOUT.media));

      await step('alice leaves on node 1 (the Leave button): bob on node 2 gets peerLeft', async () => {
        await recordNotifications(bob);
        const leftAt = await alice.eval(() => {
          const at = Date.now();
          document.getElementById('leave').click();
          return at;
        });
        const seenAt = await waitNotification(bob, 'peerLeft', alice.peerId, 5_000);
        log(`alice's click on node 1 → peerLeft in bob's page on node 2: ${seenAt - leftAt} ms (busy pages)`);
      });

      const dave = await DemoPage.open(context, node1.baseUrl, 'dave', { room, produce: '0' });
      pages.push(dave);
      await step(`node 1 killed (SIGKILL) with dave on it: bob gets peerLeft within NODE_TIMEOUT + 2 s`, async () => {
        await waitJoined(dave, { producers: 0, timeoutMs: TIMEOUT.join });
        // Bob knows dave before node 1 dies.
        const deadline = Date.now() + 10_000;
        while (!(await bob.eval((id) => window.ferrosoupDemo.state.peers.has(id), dave.peerId))) {
          if (Date.now() > deadline) throw new Error('bob never saw dave join');
          await sleep(POLL_MS);
        }
        const killedAt = Date.now();
        node1.child.kill('SIGKILL');
        const seenAt = await waitNotification(bob, 'peerLeft', dave.peerId, (NODE_TIMEOUT_S + 2) * 1000);
        log(`kill -9 of node 1 → peerLeft on node 2: ${seenAt - killedAt} ms (NODE_TIMEOUT ${NODE_TIMEOUT_S} s)`);
      });
      await step('Redis holds no key naming node 1 afterwards', async () => {
        const deadline = Date.now() + 5_000;
        let keys;
        do {
          keys = await redis.cli('--scan', '--pattern', `*${nodeIds[0]}*`);
          if (keys === '') return;
          await sleep(POLL_MS);
        } while (Date.now() < deadline);
        throw new Error(`keys of node 1 left: ${keys.split('\n').join(' ')}`);
      });
    } catch (error) {
      throw await withDiagnosis(error, pages);
    }
  },
  TIMEOUT.whole,
);
