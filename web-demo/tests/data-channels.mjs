// Browser test of data channels through the SFU: two headless Chromium pages of the web demo
// (unmodified mediasoup-client) in one room exchange data channel messages.
//
//   node tests/data-channels.mjs [--verbose]      (part of npm test)
//
// Environment: as tests/e2e.mjs (FERROSOUP_BIN, CHROMIUM, RUST_LOG, RTC_MIN_PORT, KEEP_TMP).
//
// The server runs two workers with ROOM_CONSUMERS_PER_WORKER=1, so the room spreads: the
// second receiving transport goes to the other worker, and that peer gets the other's media
// and data channels through pipes between the workers.
//
// Steps: alice and bob join; one of their receiving transports is on a second worker and
// each decodes the other's video; the chat line alice types reaches bob's chat panel; a reliable
// ordered data producer of alice delivers 200 of 200 messages to bob in order; empty and
// binary messages keep their type (the empty PPIDs); an unreliable one (unordered,
// maxRetransmits 0) delivers most of 200; closing alice's data producer closes bob's data
// consumer (dataConsumerClosed). The last line is "N passed, N failed".

import {
  DemoPage,
  POLL_MS,
  launchChromium,
  log,
  runTest,
  sleep,
  startServer,
  step,
  waitJoined,
  waitMedia,
  withDiagnosis,
} from './harness.mjs';

const MESSAGES = 200;
const TIMEOUT = { whole: 120_000, join: 20_000, data: 15_000 };

/** Polls `fn` on `page` until `accept(value)`; returns the value or throws with the last one. */
async function waitFor(page, fn, arg, accept, what, timeoutMs = TIMEOUT.data) {
  const deadline = Date.now() + timeoutMs;
  let value;
  while (Date.now() < deadline) {
    value = await page.eval(fn, arg);
    if (accept(value)) return value;
    await sleep(POLL_MS / 3);
  }
  throw new Error(`page ${page.name}: ${what} not reached after ${timeoutMs} ms (last: ${JSON.stringify(value).slice(0, 400)})`);
}

const received = (id) => window.ferrosoupDemo.dataReceived(id);

async function openChannel(alice, bob, options) {
  const id = await alice.eval((o) => window.ferrosoupDemo.produceData(o), options);
  await waitFor(bob, received, id, (r) => r.open === 1, `data consumer of ${options.label} open`);
  return id;
}

runTest(
  'data-channels',
  async () => {
    const server = await step('start ferrosoup (two workers, rooms spread)', () =>
      startServer({ env: { NUM_WORKERS: '2', ROOM_CONSUMERS_PER_WORKER: '1' } }),
    );
    const context = await step('launch chromium', () => launchChromium('profile'));
    const room = `data-${Date.now()}`;
    // Bob joins after alice: his receiving transport is the one on the second worker, so
    // everything alice sends him crosses a pipe between the workers.
    const alice = await DemoPage.open(context, server.baseUrl, 'alice', { room });
    const pages = [alice];
    try {
      await step('alice joins', () => waitJoined(alice, { timeoutMs: TIMEOUT.join }));
      const bob = await DemoPage.open(context, server.baseUrl, 'bob', { room });
      pages.push(bob);
      await step('bob joins', () =>
        Promise.all(pages.map((p) => waitJoined(p, { timeoutMs: TIMEOUT.join }))),
      );

      await step('the room spreads over two workers; each decodes the other', async () => {
        await Promise.all([waitMedia(alice, [bob]), waitMedia(bob, [alice])]);
        const res = await fetch(new URL(`api/rooms/${room}`, server.baseUrl));
        const { routers } = await res.json();
        const workers = new Set(routers.map((r) => r.worker));
        if (routers.length !== 2 || workers.size !== 2 || routers.some((r) => r.consumers !== 2)) {
          throw new Error(`expected 2 consumers on each of two workers: ${JSON.stringify(routers)}`);
        }
      });

      await step('a chat line of alice reaches bob', async () => {
        await waitFor(alice, () => window.ferrosoupDemo.sendChat('hello from alice'), null, (sent) => sent, 'chat open');
        await waitFor(
          bob,
          () => [...document.querySelectorAll('#chat-log li')].map((li) => li.textContent),
          null,
          (lines) => lines.includes('alice: hello from alice'),
          'chat line shown',
        );
      });

      const reliable = await step('reliable ordered channel: 200 of 200 in order', async () => {
        const id = await openChannel(alice, bob, { label: 'reliable', ordered: true });
        const sent = Array.from({ length: MESSAGES }, (_, i) => `m${i}`);
        await alice.eval(([dp, m]) => window.ferrosoupDemo.sendData(dp, m), [id, sent]);
        const r = await waitFor(bob, received, id, (v) => v.messages.length >= MESSAGES, `${MESSAGES} messages`);
        if (JSON.stringify(r.messages) !== JSON.stringify(sent)) {
          throw new Error(`received out of order or altered: ${JSON.stringify(r.messages).slice(0, 300)}`);
        }
        return id;
      });

      await step('empty and binary messages keep their type', async () => {
        await alice.eval((dp) => {
          const producer = window.ferrosoupDemo.state.data.producers.get(dp);
          producer.send('');
          producer.send(new Uint8Array([1, 2, 3]));
        }, reliable);
        const r = await waitFor(bob, received, reliable, (v) => v.messages.length >= MESSAGES + 2, 'two more messages');
        const tail = r.messages.slice(MESSAGES);
        if (JSON.stringify(tail) !== JSON.stringify(['', 'binary:3'])) throw new Error(`got ${JSON.stringify(tail)}`);
      });

      await step('unreliable channel (maxRetransmits 0): most of 200', async () => {
        const id = await openChannel(alice, bob, { label: 'unreliable', ordered: false, maxRetransmits: 0 });
        const sent = Array.from({ length: MESSAGES }, (_, i) => `u${i}`);
        await alice.eval(([dp, m]) => window.ferrosoupDemo.sendData(dp, m), [id, sent]);
        // Lost messages are not retransmitted: wait for all, or for the count to settle.
        let last = -1;
        let stableSince = Date.now();
        const deadline = Date.now() + TIMEOUT.data;
        let r;
        while (Date.now() < deadline) {
          r = await bob.eval(received, id);
          if (r.messages.length !== last) {
            last = r.messages.length;
            stableSince = Date.now();
          }
          if (last === MESSAGES || Date.now() - stableSince > 2000) break;
          await sleep(POLL_MS / 3);
        }
        const unknown = r.messages.filter((m) => !sent.includes(m));
        if (unknown.length) throw new Error(`messages never sent: ${unknown.slice(0, 5)}`);
        log(`unreliable: ${r.messages.length} of ${MESSAGES} delivered`);
        if (r.messages.length < MESSAGES * 0.8) throw new Error(`only ${r.messages.length} of ${MESSAGES} delivered`);
      });

      await step("closing alice's data producer closes bob's data consumer", async () => {
        await alice.eval((dp) => window.ferrosoupDemo.closeDataProducer(dp), reliable);
        await waitFor(bob, received, reliable, (v) => v.closed && v.consumers === 0, 'dataConsumerClosed');
      });
    } catch (error) {
      throw await withDiagnosis(error, pages);
    }
  },
  TIMEOUT.whole,
);
