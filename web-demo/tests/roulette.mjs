// The roulette example (examples/roulette) in headless Chromium against the real servers:
// the ferrosoup binary and the ferrosoup-roulette binary sharing an AUTH_SECRET (so every
// call's room needs the tokens the roulette mints), pages with fake cameras.
//
// 1. four clients are paired into two calls; each call connects directly (peer to peer on
//    this machine's addresses): the RTCPeerConnection is `connected`, its selected
//    candidate pair is a succeeded pair of host candidates, and video frames are decoded
//    from the partner;
// 2. `next` on both calls re-pairs the four with new partners;
// 3. a client that leaves is replaced: its partner is paired with a newcomer;
// 4. a pair whose direct path is blocked falls back to the SFU: both pages run the direct
//    connection with iceTransportPolicy "relay" (only TURN candidates allowed) and the
//    ferrosoup server offers no TURN server, so ICE has no candidate at all and cannot
//    connect; after the page's p2pTimeout both sides produce and consume through ferrosoup
//    and decode the partner's video through it (the server counts the consumers);
// 5. a page whose roulette and ferrosoup sockets drop resumes both (`?resume=`) and keeps
//    its call and its media.
//
// Usage: node tests/roulette.mjs [--verbose]
// Env: FERROSOUP_BIN (default ../target/debug/ferrosoup), ROULETTE_BIN (default
// ../target/debug/ferrosoup-roulette), CHROMIUM.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  POLL_MS,
  VERBOSE,
  freeTcpPort,
  launchChromium,
  log,
  onCleanup,
  runTest,
  sleep,
  startServer,
  step,
  tmpDir,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROULETTE_BIN = process.env.ROULETTE_BIN ?? path.resolve(here, '../../target/debug/ferrosoup-roulette');

async function startRoulette(ferrosoupPort, secret) {
  if (!existsSync(ROULETTE_BIN)) throw new Error(`${ROULETTE_BIN} missing: run \`cargo build -p ferrosoup-roulette\``);
  const port = await freeTcpPort();
  const out = createWriteStream(path.join(tmpDir, 'roulette.log'));
  const child = spawn(ROULETTE_BIN, [], {
    env: {
      ...process.env,
      ROULETTE_PORT: String(port),
      ROULETTE_LISTEN_IP: '127.0.0.1',
      FERROSOUP_WS: `ws://127.0.0.1:${ferrosoupPort}/ws`,
      AUTH_SECRET: secret,
      // Short enough for the test: former partners are kept apart 3 s.
      REPAIR_HOLD: '3',
      SETUP_TIMEOUT: '60',
      RUST_LOG: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  onCleanup(async () => {
    if (child.exitCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await gone;
  });
  const base = `http://127.0.0.1:${port}/`;
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${base}stats`, { signal: AbortSignal.timeout(1000) })).ok) return base;
    } catch {
      // not yet
    }
    await sleep(200);
  }
  throw new Error('roulette not answering /stats');
}

class Client {
  constructor(name, page) {
    this.name = name;
    this.page = page;
    this.console = [];
    page.on('console', (m) => {
      const line = `[${name}] ${m.text()}`;
      this.console.push(line);
      if (VERBOSE) console.log(line);
    });
    page.on('pageerror', (e) => this.console.push(`[${name}] pageerror: ${e.message}`));
  }

  static async open(context, base, name, extra = {}) {
    const url = new URL(base);
    url.searchParams.set('name', name);
    // Generous for the direct calls (a slow CI machine with four pages); the blocked pair
    // passes its own, shorter one.
    url.searchParams.set('p2pTimeout', '15000');
    for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, v);
    const client = new Client(name, await context.newPage());
    await client.page.goto(url.href, { timeout: 15_000 });
    return client;
  }

  state() {
    return this.page.evaluate(() => {
      const s = window.roulette.state;
      return { phase: s.phase, clientId: s.clientId, errors: s.errors, call: s.call && { pairId: s.call.pairId, partnerId: s.call.partnerId, partnerName: s.call.partnerName, mode: s.call.mode }, history: s.history };
    });
  }

  stats() {
    return this.page.evaluate(() => window.roulette.callStats());
  }

  diagnose() {
    return `--- ${this.name} console (last 25):\n${this.console.slice(-25).join('\n')}`;
  }
}

/** Waits until `until(value)` holds for `fn()`'s value; fails with the last value. */
async function waitFor(what, fn, until, timeoutMs, clients) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (until(last)) return last;
    await sleep(POLL_MS);
  }
  const error = new Error(`${what}: not after ${timeoutMs} ms; last ${JSON.stringify(last)}`);
  error.message += `\n${clients.map((c) => c.diagnose()).join('\n')}`;
  throw error;
}

/** Waits until `a` and `b` are in one call with each other. */
async function waitPaired(a, b, clients, timeoutMs = 30_000) {
  const ids = await waitFor(
    `${a.name} and ${b.name} paired`,
    async () => [await a.state(), await b.state()],
    ([x, y]) => x.call && y.call && x.call.partnerId === y.clientId && y.call.partnerId === x.clientId,
    timeoutMs,
    clients,
  );
  return ids[0].call.pairId;
}

/** The partner name each client is in a call with, once all are paired. */
async function pairing(clients, timeoutMs = 30_000) {
  const states = await waitFor(
    'every client in a call',
    async () => {
      const all = await Promise.all(clients.map((c) => c.state()));
      const errors = all.flatMap((s, i) => s.errors.map((e) => `${clients[i].name}: ${e}`));
      if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
      return all;
    },
    (all) => all.every((s) => s.call && all.some((o) => o.clientId === s.call.partnerId && o.call?.partnerId === s.clientId)),
    timeoutMs,
    clients,
  );
  return new Map(clients.map((c, i) => [c.name, states[i].call.partnerName]));
}

/** Waits for a direct call of `c`: connected, a host-to-host pair, decoded video growing. */
async function waitDirect(c, clients, timeoutMs = 40_000) {
  let before = null;
  return waitFor(
    `${c.name}: direct call decoding video`,
    async () => {
      const s = await c.stats();
      const ok =
        s?.mode === 'p2p' &&
        s.p2p?.connectionState === 'connected' &&
        s.p2p.pair?.state === 'succeeded' &&
        s.p2p.pair.local?.type === 'host' &&
        s.p2p.pair.remote?.type === 'host' &&
        s.p2p.frameWidth > 0 &&
        before !== null &&
        s.p2p.framesDecoded > before;
      before = s?.p2p?.framesDecoded ?? null;
      return { ...s, ok };
    },
    (s) => s.ok,
    timeoutMs,
    clients,
  );
}

runTest(
  'roulette',
  async () => {
    // Tokens on: the roulette mints one per call and peer, the pages pass it to ferrosoup's
    // WebSocket and /api/ice-servers.
    const secret = randomBytes(32).toString('hex');
    const server = await startServer({ env: { AUTH_SECRET: secret } });
    const base = await startRoulette(server.port, secret);
    log(`ferrosoup ${server.baseUrl}, roulette ${base}`);
    const context = await launchChromium('roulette');
    const clients = [];

    await step('four clients are paired into two calls, each connects directly and decodes video', async () => {
      for (const name of ['ann', 'bob', 'cid', 'dee']) clients.push(await Client.open(context, base, name));
      const partners = await pairing(clients);
      log(`pairs: ${[...partners].map(([a, b]) => `${a}-${b}`).join(', ')}`);
      if (new Set(partners.values()).size !== 4) throw new Error(`not two distinct pairs: ${JSON.stringify([...partners])}`);
      for (const c of clients) {
        const s = await waitDirect(c, clients);
        log(`${c.name}: ${s.p2p.pair.local.address} -> ${s.p2p.pair.remote.address} (${s.p2p.pair.local.protocol}), ${s.p2p.framesDecoded} frames of ${s.p2p.frameWidth} px`);
      }
      const stats = await (await fetch(`${base}stats`)).json();
      if (stats.counters.pairs !== 2) throw new Error(`roulette made ${stats.counters.pairs} pairs`);
    });

    await step('`next` on both calls re-pairs everyone with someone new', async () => {
      const before = await pairing(clients);
      const [first] = clients;
      const third = clients.find((c) => c.name !== first.name && c.name !== before.get(first.name));
      await first.page.evaluate(() => window.roulette.next());
      await third.page.evaluate(() => window.roulette.next());
      // Wait for calls with new partners (the old ones' hold keeps them apart).
      const after = await waitFor(
        'new partners',
        async () => {
          const p = await pairing(clients);
          return [...p].every(([name, partner]) => partner !== before.get(name)) ? p : null;
        },
        (p) => p !== null,
        30_000,
        clients,
      );
      log(`pairs after next: ${[...after].map(([a, b]) => `${a}-${b}`).join(', ')}`);
      for (const c of clients) await waitDirect(c, clients);
    });

    await step('a client that leaves is replaced by a newcomer', async () => {
      const leaver = clients[0];
      const partnerName = (await pairing(clients)).get(leaver.name);
      const partner = clients.find((c) => c.name === partnerName);
      await leaver.page.evaluate(() => window.roulette.leave());
      await leaver.page.close();
      clients.splice(0, 1);
      const eve = await Client.open(context, base, 'eve');
      clients.push(eve);
      await waitPaired(partner, eve, clients);
      await waitDirect(eve, clients);
      await waitDirect(partner, clients);
    });

    await step('a pair whose direct path is blocked falls back to the SFU and decodes video through it', async () => {
      for (const c of clients) {
        await c.page.evaluate(() => window.roulette.leave());
        await c.page.close();
      }
      clients.splice(0);
      const blocked = [];
      for (const name of ['fay', 'gus']) {
        const c = await Client.open(context, base, name, { p2pPolicy: 'relay', p2pTimeout: '5000' });
        blocked.push(c);
        clients.push(c);
      }
      await waitPaired(blocked[0], blocked[1], clients);
      for (const c of blocked) {
        let before = null;
        const s = await waitFor(
          `${c.name}: video through the SFU`,
          async () => {
            const st = await c.stats();
            const ok = st?.mode === 'sfu' && st.p2p === null && st.sfu?.recvState === 'connected' && st.sfu.consumers === 2 && st.sfu.frameWidth > 0 && before !== null && st.sfu.framesDecoded > before;
            before = st?.sfu?.framesDecoded ?? null;
            return { ...st, ok };
          },
          (st) => st.ok,
          45_000,
          clients,
        );
        log(`${c.name}: ${s.sfu.framesDecoded} frames of ${s.sfu.frameWidth} px through ferrosoup`);
      }
      const { pairId } = (await blocked[0].state()).call;
      const room = await (await fetch(new URL(`api/rooms/${pairId}`, server.baseUrl))).json();
      const consumers = (room.peers ?? []).reduce((n, p) => n + (p.consumers?.length ?? 0), 0);
      if (consumers !== 4) throw new Error(`ferrosoup's room ${pairId} has ${consumers} consumers, not 4: ${JSON.stringify(room)}`);
    });

    await step('a page whose sockets drop resumes both and keeps its call', async () => {
      const [fay, gus] = clients;
      const { pairId } = (await fay.state()).call;
      await fay.page.evaluate(() => window.roulette.dropSockets());
      await waitFor(
        'fay resumed the roulette and the ferrosoup session',
        () => fay.page.evaluate(() => ({ ...window.roulette.state.reconnects, pairId: window.roulette.state.call?.pairId })),
        (r) => r.match === 1 && r.signalingResumed === 1 && r.signalingRejoined === 0 && r.pairId === pairId,
        20_000,
        clients,
      );
      // Media kept flowing both ways through the drop.
      for (const c of [fay, gus]) {
        let before = null;
        await waitFor(
          `${c.name}: video still decoding in the same call`,
          async () => {
            const st = await c.stats();
            const ok = st?.pairId === pairId && st.mode === 'sfu' && before !== null && st.sfu.framesDecoded > before;
            before = st?.sfu?.framesDecoded ?? null;
            return { ...st, ok };
          },
          (st) => st.ok,
          20_000,
          clients,
        );
      }
      const stats = await (await fetch(`${base}stats`)).json();
      if (stats.clients !== 2) throw new Error(`roulette has ${stats.clients} clients, not 2: ${JSON.stringify(stats)}`);
    });
  },
  300_000,
);
