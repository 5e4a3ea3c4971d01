// ICE-TCP: two Chromium pages on a network that lets no UDP out still get each other's
// audio and video, through the server's passive TCP candidates (RFC 6544), with unmodified
// mediasoup-client (issue 12).
//
//   node tests/ice-tcp.mjs [--verbose]      (part of npm test; needs root: ip netns, nft)
//
// Both pages run in one Chromium inside a network namespace joined to the host by a veth
// pair; the server listens on the veth's host address. An nftables rule in the namespace
// drops every UDP packet it sends (counted), as an office or hotel firewall does.
//
// Steps: alice and bob join one room and each decodes the other's video and receives their
// audio; every transport of both pages runs on a candidate pair whose remote candidate is
// the server's TCP candidate; the rule dropped UDP (the browser did try it). Then the rule
// is removed and a second pair joins another room over UDP, for the join → first frame
// figure of both paths (logged, not asserted).
//
// Environment: as tests/e2e.mjs (FERROSOUP_BIN, CHROMIUM, RUST_LOG, KEEP_TMP).

import { execFileSync } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';

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
  waitMedia,
  withDiagnosis,
} from './harness.mjs';

const TIMEOUT = { whole: 150_000, join: 20_000, media: 30_000, pairs: 10_000 };
const NFT_TABLE = 'ferrosoup_no_udp';

const root = (...args) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/**
 * A namespace joined to the host by a veth pair: host end 10.78.N.1/24, namespace end
 * 10.78.N.2/24. Removed by the run's cleanups.
 */
function createLink() {
  const n = 1 + (process.pid % 250);
  const id = process.pid % 100000;
  const link = { ns: `fs-tcp-${process.pid}`, host: `fstcp${id}h`, peer: `fstcp${id}n`, hostIp: `10.78.${n}.1`, peerIp: `10.78.${n}.2` };
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
  link.inNs = (...args) => root('ip', 'netns', 'exec', link.ns, ...args);
  link.inNs('ip', 'addr', 'add', `${link.peerIp}/24`, 'dev', link.peer);
  link.inNs('ip', 'link', 'set', link.peer, 'up');
  link.inNs('ip', 'link', 'set', 'lo', 'up');
  return link;
}

/** In the namespace: an nftables table whose output chain drops (and counts) all UDP. */
function blockUdp(link) {
  const rules = `table inet ${NFT_TABLE} {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    meta l4proto udp counter drop\n  }\n}\n`;
  execFileSync('ip', ['netns', 'exec', link.ns, 'nft', '-f', '-'], { input: rules, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** UDP packets the namespace's rule dropped so far. */
function udpDropped(link) {
  const text = link.inNs('nft', 'list', 'table', 'inet', NFT_TABLE);
  const m = text.match(/counter packets (\d+)/);
  if (!m) throw new Error(`no counter in the rule: ${text}`);
  return Number(m[1]);
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
            local: { type: local?.candidateType, protocol: local?.protocol, tcpType: local?.tcpType, address: local?.address },
            remote: { type: remote?.candidateType, protocol: remote?.protocol, address: remote?.address, port: remote?.port },
            bytesReceived: pair.bytesReceived,
          }
        : null;
    }
    return out;
  });
}

/** Joins alice and bob to `room`; both decode each other. Returns bob's join → first frame of alice, ms. */
async function pair(browser, baseUrl, room, label, pages) {
  const names = ['alice', 'bob'].map((n) => `${n}-${label}`);
  const joined = [];
  for (const name of names) {
    const page = await DemoPage.open(browser, baseUrl, name, { room });
    pages.push(page);
    joined.push(page);
    await step(`page ${name} (${label}): joins and sends camera + mic`, () => waitJoined(page, { timeoutMs: TIMEOUT.join }));
    page.joinStartEpochMs = await page.eval(() => Math.round(performance.timeOrigin + window.ferrosoupDemo.state.joinStartedAt));
  }
  const [alice, bob] = joined;
  const frames = await step(`page ${bob.name}: decodes ${alice.name}'s video and receives her audio`, () => waitMedia(bob, [alice], TIMEOUT.media));
  await step(`page ${alice.name}: decodes ${bob.name}'s video and receives his audio`, () => waitMedia(alice, [bob], TIMEOUT.media));
  return frames[alice.name] - Math.max(alice.joinStartEpochMs, bob.joinStartEpochMs);
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('needs root (ip netns, nft); CI runs as root');
  const link = await step('network namespace with a veth pair, all UDP out of it dropped (nftables)', () => {
    const l = createLink();
    blockUdp(l);
    return l;
  });
  log(`link up: host ${link.hostIp}, pages at ${link.peerIp} in ${link.ns}`);
  const server = await step(`start ferrosoup on ${link.hostIp}`, () => startServer({ listenIp: link.hostIp }));
  const baseUrl = server.baseUrl;

  // mediasoup-client needs a secure context; this origin is no localhost.
  const secure = [`--unsafely-treat-insecure-origin-as-secure=${new URL(baseUrl).origin}`];
  const wrapper = path.join(tmpDir, 'chromium-in-ns.sh');
  await writeFile(wrapper, `#!/bin/sh\nexec ip netns exec ${link.ns} ${CHROMIUM} "$@"\n`);
  await chmod(wrapper, 0o755);
  const browser = await step(`launch chromium in ${link.ns}`, () => launchChromium('no-udp', { executablePath: wrapper, args: secure }));

  const pages = [];
  try {
    const tcpMs = await pair(browser, baseUrl, `tcp-${Math.random().toString(36).slice(2, 8)}`, 'tcp', pages);
    for (const page of pages) {
      await step(`page ${page.name}: both transports run on the server's TCP candidate`, async () => {
        const deadline = Date.now() + TIMEOUT.pairs;
        let pairs;
        while (Date.now() < deadline) {
          pairs = await selectedPairs(page);
          const ok = ['send', 'recv'].every((dir) => pairs[dir]?.remote.protocol === 'tcp' && pairs[dir].remote.address === link.hostIp && pairs[dir].local.protocol === 'tcp');
          if (ok) {
            log(`page ${page.name}: ${JSON.stringify(pairs)}`);
            return;
          }
          await sleep(POLL_MS);
        }
        throw new Error(`selected candidate pairs: ${JSON.stringify(pairs)}`);
      });
    }
    await step('the namespace did try UDP: the rule dropped packets', () => {
      const dropped = udpDropped(link);
      log(`UDP packets dropped in ${link.ns}: ${dropped}`);
      if (dropped === 0) throw new Error('no UDP packet was dropped: the pages never tried UDP, the rule proves nothing');
    });
    for (const page of pages.splice(0)) await page.page.close();

    await step('UDP allowed again (rule removed)', () => link.inNs('nft', 'delete', 'table', 'inet', NFT_TABLE));
    const udpMs = await pair(browser, baseUrl, `udp-${Math.random().toString(36).slice(2, 8)}`, 'udp', pages);
    await step("the UDP pair's transports run on the server's UDP candidate", async () => {
      const pairs = await selectedPairs(pages[1]);
      log(`page ${pages[1].name}: ${JSON.stringify(pairs)}`);
      if (!['send', 'recv'].every((dir) => pairs[dir]?.remote.protocol === 'udp')) throw new Error(`selected: ${JSON.stringify(pairs)}`);
    });
    log(`join -> first frame (bob joins, first decoded frame of alice): ICE-TCP ${tcpMs} ms, UDP ${udpMs} ms`);
  } catch (error) {
    throw await withDiagnosis(error, pages);
  }
}

runTest('ice-tcp', main, TIMEOUT.whole);
