// Data channel figures through the SFU, ferrosoup and a reference server in the same run:
// two headless Chromium pages of the web demo (unmodified mediasoup-client, viewers: no
// media) in one room; alice's reliable ordered data producer, bob's data consumer.
//
//   node tests/data-bench.mjs [--verbose]
//
// Environment: FERROSOUP_BIN, CHROMIUM as tests/e2e.mjs; REFERENCE_BIN another server
// speaking PROTOCOL.md with data channels (default shared/reference-mediasoup's release build next to the repo, when it exists;
// the page is then served by this script); ROUNDS (default 3), each round measuring every
// server in turn on a fresh server process.
//
// Figures per round: latency (alice stamps each message with the shared clock,
// performance.timeOrigin + performance.now(), bob notes its arrival): 500 messages of
// ~40 bytes at 100/s, p50 and p99; throughput: 20,000 messages of 100 bytes sent as fast as
// the channel's buffer allows (kept under 1 MiB), messages per second from the first send
// to the last arrival. ferrosoup runs with MAX_DATA_MESSAGES_PER_SECOND=0 (no rate limit).

import { existsSync } from 'node:fs';

import { serveStatic } from '../scripts/serve.mjs';
import { DemoPage, launchChromium, log, onCleanup, percentile, runTest, sleep, startServer, step, waitJoined, withDiagnosis } from './harness.mjs';

const ROUNDS = Number(process.env.ROUNDS) || 3;
const DEFAULT_REFERENCE = new URL('../../../shared/reference-mediasoup/target/release/mediasoup-server', import.meta.url).pathname;
const REFERENCE = process.env.REFERENCE_BIN ?? (existsSync(DEFAULT_REFERENCE) ? DEFAULT_REFERENCE : null);
const LATENCY_MESSAGES = 500;
const THROUGHPUT_MESSAGES = 20_000;

async function waitOpen(bob, id) {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const r = await bob.eval((dp) => window.ferrosoupDemo.dataReceived(dp), id);
    if (r.open === 1) return;
    await sleep(100);
  }
  throw new Error('data consumer not open');
}

/** Arrival times (shared clock) of bob's messages of data producer `id`, once `count` arrived. */
async function arrivals(bob, id, count) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const got = await bob.eval(
      ([dp, n]) => {
        const e = [...window.ferrosoupDemo.state.data.consumers.values()].find((c) => c.dataProducerId === dp);
        if (!e || e.messages.length < n) return e ? e.messages.length : 0;
        return e.messages.map((m) => [m.data, performance.timeOrigin + m.at]);
      },
      [id, count],
    );
    if (Array.isArray(got)) return got;
    await sleep(200);
  }
  throw new Error(`fewer than ${count} messages arrived`);
}

async function measure(context, label, bin) {
  const server = await startServer({ bin: bin ?? undefined, env: { MAX_DATA_MESSAGES_PER_SECOND: '0' } });
  let baseUrl = server.baseUrl;
  const params = { room: `bench-${Date.now()}`, produce: '0' };
  if (bin) {
    const site = await serveStatic(0);
    baseUrl = `http://127.0.0.1:${site.address().port}/`;
    params.ws = `ws://127.0.0.1:${server.port}/ws`;
    onCleanup(() => new Promise((resolve) => site.close(resolve)));
  }
  const alice = await DemoPage.open(context, baseUrl, 'alice', params);
  const bob = await DemoPage.open(context, baseUrl, 'bob', params);
  try {
    await Promise.all([alice, bob].map((p) => waitJoined(p, { producers: 0 })));
    // The chat's data producer comes last in the join: the send transport is ready then.
    for (let i = 0; i < 100 && !(await alice.eval(() => Boolean(window.ferrosoupDemo.state.data.chatProducer))); i++) await sleep(100);
    // Latency.
    const lat = await alice.eval((o) => window.ferrosoupDemo.produceData(o), { label: 'latency' });
    await waitOpen(bob, lat);
    await alice.eval(
      async ([dp, n]) => {
        const producer = window.ferrosoupDemo.state.data.producers.get(dp);
        for (let i = 0; i < n; i++) {
          producer.send(JSON.stringify({ i, t: performance.timeOrigin + performance.now() }));
          await new Promise((r) => setTimeout(r, 10));
        }
      },
      [lat, LATENCY_MESSAGES],
    );
    const got = await arrivals(bob, lat, LATENCY_MESSAGES);
    const delays = got.map(([data, at]) => at - JSON.parse(data).t);
    // Throughput.
    const tp = await alice.eval((o) => window.ferrosoupDemo.produceData(o), { label: 'throughput' });
    await waitOpen(bob, tp);
    const started = await alice.eval(
      async ([dp, n]) => {
        const producer = window.ferrosoupDemo.state.data.producers.get(dp);
        const payload = 'x'.repeat(90);
        const t0 = performance.timeOrigin + performance.now();
        for (let i = 0; i < n; i++) {
          while (producer.bufferedAmount > 1 << 20) await new Promise((r) => setTimeout(r, 1));
          producer.send(`${String(i).padStart(9, '0')}${payload}`);
        }
        return t0;
      },
      [tp, THROUGHPUT_MESSAGES],
    );
    const all = await arrivals(bob, tp, THROUGHPUT_MESSAGES);
    const inOrder = all.every(([data], i) => Number(data.slice(0, 9)) === i);
    const seconds = (all[all.length - 1][1] - started) / 1000;
    return {
      p50: percentile(delays, 50),
      p99: percentile(delays, 99),
      rate: THROUGHPUT_MESSAGES / seconds,
      inOrder,
    };
  } catch (error) {
    throw await withDiagnosis(error, [alice, bob]);
  } finally {
    await alice.page.close().catch(() => {});
    await bob.page.close().catch(() => {});
    server.child.kill('SIGTERM');
    await sleep(500);
  }
}

runTest(
  'data-bench',
  async () => {
    const context = await step('launch chromium', () => launchChromium('profile'));
    const servers = [['ferrosoup', null], ...(REFERENCE ? [['mediasoup', REFERENCE]] : [])];
    const results = Object.fromEntries(servers.map(([name]) => [name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, bin] of servers) {
        const r = await step(`${name}, round ${round + 1}`, () => measure(context, name, bin));
        if (!r.inOrder) throw new Error(`${name}: throughput messages out of order`);
        log(`${name} round ${round + 1}: latency p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms; ${Math.round(r.rate)} msg/s`);
        results[name].push(r);
      }
    }
    for (const [name, rs] of Object.entries(results)) {
      const med = (f) => percentile(rs.map(f), 50);
      log(`${name} (median of ${rs.length} rounds): latency p50 ${med((r) => r.p50).toFixed(2)} ms, p99 ${med((r) => r.p99).toFixed(2)} ms; throughput ${Math.round(med((r) => r.rate))} msg/s (100-byte messages, reliable ordered)`);
    }
  },
  600_000,
);
