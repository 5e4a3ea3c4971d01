// TURN: two Chromium pages forced to relay (`?relay=1`: iceTransportPolicy "relay") through a
// real coturn, with the time-limited credentials the server hands out at /api/ice-servers
// (issue 12).
//
//   node tests/turn-relay.mjs [--verbose]      (part of npm test; needs coturn's turnserver)
//
// coturn (Debian package `coturn`) runs on loopback with `use-auth-secret` and
// `static-auth-secret` = the server's TURN_SECRET, so it accepts exactly the credentials
// ferrosoup computes (TURN REST: username "<expiry>:<peerId>", password
// base64(HMAC-SHA1(secret, username))). ferrosoup is started with TURN_URLS pointing at it.
// The server announces 127.0.0.1, so coturn needs `allow-loopback-peers` to relay to it.
//
// Steps: /api/ice-servers answers the TURN URL and a credential this script recomputes
// with node:crypto; alice and bob (relay=1) join one room and each decodes the other's
// video and receives their audio; every transport of both pages runs on a candidate pair
// whose local candidate is a TURN relay candidate, and coturn's log shows the allocations
// made with each page's credentials. A credential of another secret is refused by coturn
// (checked with a TURN Allocate of this script's own).
//
// Environment: as tests/e2e.mjs (FERROSOUP_BIN, CHROMIUM, RUST_LOG, KEEP_TMP), plus
//   TURNSERVER   coturn's binary (default: turnserver on the PATH)

import { spawn } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

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
  tmpDir,
  waitJoined,
  waitMedia,
  withDiagnosis,
} from './harness.mjs';

const TURNSERVER = process.env.TURNSERVER ?? 'turnserver';
const TURN_TTL_S = 600;
const REALM = 'ferrosoup.test';
const TIMEOUT = { whole: 120_000, turn: 10_000, join: 20_000, media: 30_000, relay: 10_000 };

/** TURN REST password of `username` (what coturn computes with static-auth-secret). */
const restPassword = (secret, username) => createHmac('sha1', secret).update(username).digest('base64');

/** A STUN message: type, transaction id, attributes [type, Buffer] (RFC 5389 §6). */
function stunMessage(type, txid, attributes = []) {
  const body = Buffer.concat(
    attributes.map(([t, value]) => {
      const head = Buffer.alloc(4);
      head.writeUInt16BE(t, 0);
      head.writeUInt16BE(value.length, 2);
      return Buffer.concat([head, value, Buffer.alloc((4 - (value.length % 4)) % 4)]);
    }),
  );
  const header = Buffer.alloc(20);
  header.writeUInt16BE(type, 0);
  header.writeUInt16BE(body.length, 2);
  header.writeUInt32BE(0x2112a442, 4);
  txid.copy(header, 8);
  return Buffer.concat([header, body]);
}

/** A UDP socket toward 127.0.0.1:`port` that sends STUN requests and resolves their answers. */
function stunClient(port) {
  const socket = createSocket('udp4');
  return {
    /** Sends `message`; resolves to the answer (a Buffer), rejects after `timeoutMs`. */
    request(message, timeoutMs = 1000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          socket.off('message', onMessage);
          reject(new Error(`no answer from 127.0.0.1:${port} within ${timeoutMs} ms`));
        }, timeoutMs);
        const onMessage = (msg) => {
          if (msg.length < 20 || !msg.subarray(8, 20).equals(message.subarray(8, 20))) return;
          clearTimeout(timer);
          socket.off('message', onMessage);
          resolve(msg);
        };
        socket.on('message', onMessage);
        socket.send(message, port, '127.0.0.1');
      });
    },
    close: () => socket.close(),
  };
}

/** The attributes of a STUN message, by type. */
function stunAttributes(msg) {
  const attrs = new Map();
  for (let at = 20; at + 4 <= msg.length; ) {
    const type = msg.readUInt16BE(at);
    const len = msg.readUInt16BE(at + 2);
    attrs.set(type, msg.subarray(at + 4, at + 4 + len));
    at += 4 + len + ((4 - (len % 4)) % 4);
  }
  return attrs;
}

/** STUN Binding request to 127.0.0.1:`port`; resolves to the answer's type. */
async function stunBinding(port, timeoutMs) {
  const client = stunClient(port);
  try {
    return (await client.request(stunMessage(0x0001, randomBytes(12)), timeoutMs)).readUInt16BE(0);
  } finally {
    client.close();
  }
}

/**
 * A TURN Allocate with long-term credentials (RFC 5766 §6, RFC 5389 §10.2) from one socket
 * (coturn binds the nonce to the 5-tuple): the first try brings the realm and nonce (401),
 * the second carries USERNAME, REALM, NONCE and MESSAGE-INTEGRITY. Resolves to the second
 * answer's type: 0x0103 success, 0x0113 error.
 */
async function turnAllocate(port, username, password) {
  const transport = [0x0019, Buffer.from([17, 0, 0, 0])]; // REQUESTED-TRANSPORT: UDP
  const client = stunClient(port);
  try {
    const attrs = stunAttributes(await client.request(stunMessage(0x0003, randomBytes(12), [transport])));
    const nonce = attrs.get(0x0015);
    const realm = attrs.get(0x0014);
    if (!nonce || !realm) throw new Error('the answer to an unauthenticated Allocate carries no NONCE/REALM');
    const key = createHash('md5').update(`${username}:${realm}:${password}`).digest();
    const txid = randomBytes(12);
    const attributes = [transport, [0x0006, Buffer.from(username)], [0x0014, realm], [0x0015, nonce]];
    // MESSAGE-INTEGRITY covers the message with its length field counting the integrity
    // attribute itself (24 bytes).
    const signed = stunMessage(0x0003, txid, attributes);
    signed.writeUInt16BE(signed.length - 20 + 24, 2);
    const integrity = createHmac('sha1', key).update(signed).digest();
    const answer = await client.request(stunMessage(0x0003, txid, [...attributes, [0x0008, integrity]]));
    return answer.readUInt16BE(0);
  } finally {
    client.close();
  }
}

/** Starts coturn on 127.0.0.1:`port` sharing `secret`; stopped by the run's cleanups. */
async function startCoturn(port, secret) {
  // Relay ports apart from the SFU's (42000..46999) and from other runs.
  const relayMin = 49200 + Math.floor(Math.random() * 700) * 20;
  const logPath = path.join(tmpDir, 'coturn.log');
  const args = [
    '-n', // no configuration file: everything is on this line
    `--listening-ip=127.0.0.1`,
    `--listening-port=${port}`,
    `--relay-ip=127.0.0.1`,
    `--min-port=${relayMin}`,
    `--max-port=${relayMin + 19}`,
    '--use-auth-secret',
    `--static-auth-secret=${secret}`,
    `--realm=${REALM}`,
    // ferrosoup announces 127.0.0.1: coturn refuses loopback peers unless told.
    '--allow-loopback-peers',
    '--no-cli',
    '--no-tls',
    '--no-dtls',
    '--fingerprint',
    '--no-software-attribute',
    `--userdb=${path.join(tmpDir, 'turndb')}`,
    `--pidfile=${path.join(tmpDir, 'turnserver.pid')}`,
    '--log-file=stdout',
    '--simple-log',
    '--verbose',
  ];
  const out = createWriteStream(logPath);
  const child = spawn(TURNSERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  child.on('error', (error) => {
    exited = { error: error.message };
  });
  onCleanup(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(timer);
  });
  // Up when it answers a STUN Binding request.
  const deadline = Date.now() + TIMEOUT.turn;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${TURNSERVER} exited (${JSON.stringify(exited)}); see ${logPath} (Debian: apt-get install coturn)`);
    try {
      if ((await stunBinding(port, 300)) === 0x0101) return { logPath, relayMin };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`coturn does not answer STUN on 127.0.0.1:${port} after ${TIMEOUT.turn} ms; see ${logPath}`);
}

/** Per transport of `page`: the selected candidate pair's local and remote candidates. */
async function selectedPairs(page) {
  return page.eval(async () => {
    const d = window.ferrosoupDemo;
    const out = {};
    for (const t of [d.state.sendTransport, d.state.recvTransport]) {
      if (!t) continue;
      const report = await t.getStats();
      const byId = new Map();
      report.forEach((s) => byId.set(s.id, s));
      const transport = [...byId.values()].find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = transport ? byId.get(transport.selectedCandidatePairId) : [...byId.values()].find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
      const local = pair && byId.get(pair.localCandidateId);
      const remote = pair && byId.get(pair.remoteCandidateId);
      out[t.direction] = pair
        ? {
            local: { type: local?.candidateType, address: local?.address, port: local?.port, relayProtocol: local?.relayProtocol, url: local?.url },
            remote: { type: remote?.candidateType, address: remote?.address, port: remote?.port },
            bytesSent: pair.bytesSent,
            bytesReceived: pair.bytesReceived,
          }
        : null;
    }
    return out;
  });
}

async function main() {
  const secret = randomBytes(16).toString('hex');
  const turnPort = await freeTcpPort();
  const turn = await step(`coturn on 127.0.0.1:${turnPort} (use-auth-secret, allow-loopback-peers)`, () => startCoturn(turnPort, secret));
  const turnUrl = `turn:127.0.0.1:${turnPort}?transport=udp`;
  const server = await step(`start ferrosoup with TURN_URLS=${turnUrl} and TURN_SECRET`, () =>
    startServer({ env: { TURN_URLS: turnUrl, TURN_SECRET: secret, TURN_TTL: String(TURN_TTL_S) } }),
  );

  await step('/api/ice-servers: the TURN URL with a credential recomputed here (HMAC-SHA1 of "expiry:user")', async () => {
    const before = Math.floor(Date.now() / 1000);
    const res = await fetch(new URL('api/ice-servers', server.baseUrl));
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const { iceServers } = await res.json();
    const entry = iceServers.find((s) => s.urls.includes(turnUrl));
    if (!entry) throw new Error(`no entry for ${turnUrl}: ${JSON.stringify(iceServers)}`);
    const expiry = Number(entry.username.split(':')[0]);
    if (!(expiry >= before + TURN_TTL_S && expiry <= Math.ceil(Date.now() / 1000) + TURN_TTL_S)) {
      throw new Error(`username ${entry.username}: expiry is not TURN_TTL after now`);
    }
    if (entry.credential !== restPassword(secret, entry.username)) {
      throw new Error(`credential ${entry.credential} != base64(HMAC-SHA1(secret, "${entry.username}"))`);
    }
    if ((await turnAllocate(turnPort, entry.username, entry.credential)) !== 0x0103) {
      throw new Error(`coturn refuses an Allocate with ${entry.username}`);
    }
  });

  await step('coturn refuses a credential made with another secret', async () => {
    const username = `${Math.floor(Date.now() / 1000) + 600}:intruder`;
    const type = await turnAllocate(turnPort, username, restPassword('not-the-secret', username));
    if (type !== 0x0113) throw new Error(`Allocate answered 0x${type.toString(16)}, not an error response (0x0113)`);
  });

  const browser = await step('launch chromium', () => launchChromium('relay'));
  const room = `turn-${Math.random().toString(36).slice(2, 8)}`;
  const pages = [];
  try {
    for (const name of ['alice', 'bob']) {
      const page = await DemoPage.open(browser, server.baseUrl, name, { room, relay: '1' });
      pages.push(page);
      await step(`page ${name} (relay=1): joins and sends camera + mic`, () => waitJoined(page, { timeoutMs: TIMEOUT.join }));
    }
    const [alice, bob] = pages;
    await step("page alice: decodes bob's video and receives his audio, through TURN", () => waitMedia(alice, [bob], TIMEOUT.media));
    await step("page bob: decodes alice's video and receives her audio, through TURN", () => waitMedia(bob, [alice], TIMEOUT.media));

    for (const page of pages) {
      await step(`page ${page.name}: both transports run on a relay candidate of 127.0.0.1:${turnPort}`, async () => {
        const deadline = Date.now() + TIMEOUT.relay;
        let pairs;
        while (Date.now() < deadline) {
          pairs = await selectedPairs(page);
          const ok = ['send', 'recv'].every(
            (dir) => pairs[dir]?.local.type === 'relay' && pairs[dir].local.address === '127.0.0.1' && pairs[dir].remote.address === '127.0.0.1',
          );
          if (ok) {
            log(`page ${page.name}: ${JSON.stringify(pairs)}`);
            return;
          }
          await sleep(POLL_MS);
        }
        throw new Error(`selected candidate pairs: ${JSON.stringify(pairs)}`);
      });
    }

    await step("coturn's log: allocations with each page's /api/ice-servers username", async () => {
      const text = await readFile(turn.logPath, 'utf8');
      // coturn logs "... realm <REALM> user <USERNAME>: incoming packet ALLOCATE processed, success".
      const users = new Set([...text.matchAll(/user <([^>]+)>: incoming packet ALLOCATE processed, success/g)].map((m) => m[1]));
      for (const page of pages) {
        const iceServers = await page.eval(() => window.ferrosoupDemo.state.iceServers);
        const username = iceServers.find((s) => s.urls.includes(turnUrl))?.username;
        if (!username) throw new Error(`page ${page.name} got no TURN entry: ${JSON.stringify(iceServers)}`);
        if (!users.has(username)) {
          throw new Error(`page ${page.name}: no successful ALLOCATE by ${username} in ${turn.logPath} (users seen: ${[...users].join(', ') || 'none'})`);
        }
      }
      log(`coturn allocations by: ${[...users].join(', ')}`);
    });
  } catch (error) {
    throw await withDiagnosis(error, pages);
  }
}

runTest('turn-relay', main, TIMEOUT.whole);
