// ferrosoup roulette page: waits in the roulette's queue (its /match WebSocket), and for
// each pairing joins the call's private room on the ferrosoup server, tries a direct
// RTCPeerConnection signalled through ferrosoup's `p2pSignal` relay, and falls back to the
// SFU (mediasoup-client, simulcast) when ICE has not connected after `p2pTimeout` ms.
//
// URL parameters:
//   name=NAME           display name; when given, the page starts at once
//   match=URL           the roulette's WebSocket (default: ws(s)://<this host>/match)
//   p2pTimeout=MS       how long the direct connection may take (default 5000)
//   p2pPolicy=all|relay the direct connection's iceTransportPolicy (default all). `relay`
//                       allows only TURN candidates: without a TURN server in the ferrosoup
//                       server's /api/ice-servers no direct path exists, and the call goes
//                       through the SFU
//
// The page exposes `window.roulette` (state, callStats(), next(), report(), leave()) for
// tests (web-demo/tests/roulette.mjs).

import { Device } from 'mediasoup-client';
import { Peer } from 'protoo-client';

const params = new URLSearchParams(location.search);
const matchUrl = params.get('match') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/match`;
const p2pTimeoutMs = Number(params.get('p2pTimeout')) || 5000;
const p2pPolicy = params.get('p2pPolicy') === 'relay' ? 'relay' : 'all';

/** Two simulcast layers, so the server's bandwidth estimation can pick one per receiver. */
const SIMULCAST = [
  { rid: 'r0', scaleResolutionDownBy: 2, maxBitrate: 200_000 },
  { rid: 'r1', scaleResolutionDownBy: 1, maxBitrate: 700_000 },
];

const $ = (id) => document.getElementById(id);

const state = {
  /** idle, waiting, calling (paired, media not up yet), connected, left */
  phase: 'idle',
  name: params.get('name') || '',
  clientId: null,
  resume: null,
  /** The current call (see startCall), or null. */
  call: null,
  /** Every call: {pairId, partnerId, partnerName, mode, endReason}. */
  history: [],
  errors: [],
  reconnects: { match: 0, signalingResumed: 0, signalingRejoined: 0 },
  stream: null,
};

function log(message, level = 'info') {
  const line = `${new Date().toISOString().slice(11, 23)} ${message}`;
  (level === 'error' ? console.error : console.log)(line);
  const el = $('log');
  el.textContent = `${line}\n${el.textContent}`.slice(0, 8000);
}

function setPhase(phase, text) {
  state.phase = phase;
  $('status').textContent = text ?? phase;
  const inCall = phase === 'calling' || phase === 'connected';
  $('next').disabled = !inCall;
  $('report').disabled = !inCall;
  $('leave').disabled = phase === 'idle' || phase === 'left';
}

// ---------------------------------------------------------------------------------------
// The roulette's queue

let matchSocket = null;

function sendMatch(message) {
  if (matchSocket?.readyState === WebSocket.OPEN) matchSocket.send(JSON.stringify(message));
}

function openMatch() {
  const url = new URL(matchUrl);
  if (state.resume) url.searchParams.set('resume', state.resume);
  const ws = new WebSocket(url.href);
  matchSocket = ws;
  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    onMatch(msg).catch((error) => log(`${msg.type}: ${error.message}`, 'error'));
  };
  ws.onclose = () => {
    if (matchSocket !== ws || state.phase === 'left') return;
    // Back within the roulette's grace: same place in the queue, same call.
    state.reconnects.match += 1;
    log('roulette connection lost; reconnecting');
    setTimeout(openMatch, 1000);
  };
}

async function onMatch(msg) {
  switch (msg.type) {
    case 'welcome':
      if (state.clientId && state.clientId !== msg.clientId) {
        // The roulette forgot us (grace over, or restarted): a new client, a fresh start.
        endCall('roulette restarted');
      }
      if (state.clientId !== msg.clientId) {
        state.clientId = msg.clientId;
        sendMatch({ type: 'join', name: state.name });
        setPhase('waiting', 'waiting for someone');
      }
      state.resume = `${msg.clientId}:${msg.resumeKey}`;
      break;
    case 'waiting':
      if (!state.call) setPhase('waiting', msg.ahead ? `waiting (${msg.ahead} ahead)` : 'waiting for someone');
      break;
    case 'paired':
      if (state.call?.pairId === msg.pairId) break; // restored after a reconnect
      endCall('new pair');
      await startCall(msg);
      break;
    case 'partnerLeft':
      endCall(`partner: ${msg.reason}`);
      setPhase('waiting', `partner gone (${msg.reason}); waiting`);
      break;
    case 'timeout':
      endCall('timeout');
      setPhase('waiting', 'nobody around; still waiting');
      sendMatch({ type: 'join', name: state.name });
      break;
    case 'error':
      log(`roulette: ${msg.message}`, 'error');
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------
// A call

async function localStream() {
  if (!state.stream) {
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: 640, height: 480, frameRate: 15 },
    });
    $('local').srcObject = state.stream;
  }
  return state.stream;
}

/** The ferrosoup server's /api/ice-servers for a signaling URL (its token goes along). */
async function fetchIceServers(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/ws\/?$/, '/api/ice-servers');
  url.searchParams.delete('resume');
  try {
    const res = await fetch(url.href, { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return (await res.json()).iceServers ?? [];
  } catch (error) {
    state.errors.push(`ICE servers: ${error.message}`);
    log(`ICE servers: ${error.message}; none used`, 'error');
    return [];
  }
}

/** A protoo connection on a plain WebSocket that reports its close code. */
function openSignaling(url) {
  const listeners = new Map();
  const ws = new WebSocket(url, 'protoo');
  const transport = {
    closed: false,
    closeCode: null,
    on(event, fn) {
      if (!listeners.has(event)) listeners.set(event, []);
      listeners.get(event).push(fn);
    },
    emit(event, ...args) {
      for (const fn of listeners.get(event) ?? []) fn(...args);
    },
    async send(message) {
      if (transport.closed) throw new Error('signaling closed');
      ws.send(JSON.stringify(message));
    },
    close() {
      if (transport.closed) return;
      transport.closed = true;
      transport.emit('close');
      ws.close(1000);
    },
  };
  ws.onopen = () => transport.emit('open');
  ws.onclose = (event) => {
    if (transport.closed) return;
    transport.closed = true;
    transport.closeCode = event.code;
    transport.emit('disconnected');
  };
  ws.onmessage = (event) => {
    try {
      transport.emit('message', JSON.parse(event.data));
    } catch {
      // not JSON: ignored
    }
  };
  return { protoo: new Peer(transport), transport, ws };
}

async function startCall(info) {
  const call = {
    pairId: info.pairId,
    partnerId: info.partnerId,
    partnerName: info.partnerName,
    initiator: info.initiator,
    ws: info.ws,
    mode: 'connecting',
    closed: false,
    protoo: null,
    sessionToken: null,
    device: null,
    pc: null,
    pendingCandidates: [],
    /** Payloads that came before the direct connection was set up (replayed then). */
    earlySignals: [],
    seq: 0,
    partnerPresent: null,
    sfu: null,
    p2pTimer: null,
    startedAt: Date.now(),
  };
  let present;
  call.partnerPresent = new Promise((resolve) => {
    present = resolve;
  });
  call.markPresent = present;
  state.call = call;
  state.history.push({ pairId: call.pairId, partnerId: call.partnerId, partnerName: call.partnerName, mode: null, endReason: null });
  setPhase('calling', `calling ${call.partnerName || 'a stranger'}`);
  $('partner').textContent = call.partnerName || 'stranger';
  log(`paired with ${call.partnerName} (${call.partnerId}) in ${call.pairId}${call.initiator ? ', offering' : ''}`);
  const stream = await localStream();
  if (call.closed) return;
  call.iceServers = await fetchIceServers(call.ws);
  if (call.closed) return;
  await joinRoom(call);
  if (call.closed) return;
  await call.partnerPresent;
  if (call.closed) return;
  startP2p(call, stream);
}

/** Connects to ferrosoup and joins the call's room (the first of the pair creates it). */
async function joinRoom(call, resumeToken = null) {
  const url = new URL(call.ws);
  if (resumeToken) url.searchParams.set('resume', resumeToken);
  const { protoo, transport, ws } = openSignaling(url.href);
  call.protoo = protoo;
  call.socket = ws;
  await new Promise((resolve, reject) => {
    protoo.on('open', resolve);
    protoo.on('disconnected', () => reject(new Error(`signaling closed (${transport.closeCode})`)));
  });
  protoo.on('notification', (n) => onNotification(call, n));
  protoo.on('disconnected', () => onSignalingLost(call, protoo, transport));
  if (resumeToken) {
    await protoo.request('ping');
    return;
  }
  const { rtpCapabilities } = await protoo.request('createRoom', { roomId: call.pairId });
  call.device = new Device();
  await call.device.load({ routerRtpCapabilities: rtpCapabilities });
  const joined = await protoo.request('joinRoom', {
    roomId: call.pairId,
    peerId: state.clientId,
    displayName: state.name,
    rtpCapabilities: call.device.rtpCapabilities,
  });
  call.sessionToken = joined.sessionToken;
  if (joined.peers.some((p) => p.peerId === call.partnerId)) call.markPresent();
}

/** The ferrosoup WebSocket dropped: resume the session, or join the room afresh. */
async function onSignalingLost(call, protoo, transport) {
  protoo.close();
  if (call.closed || call.protoo !== protoo) return;
  log(`signaling lost (${transport.closeCode}); resuming`);
  for (let attempt = 0; attempt < 5 && !call.closed; attempt += 1) {
    await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
    if (call.closed) return;
    try {
      await joinRoom(call, call.sessionToken);
      state.reconnects.signalingResumed += 1;
      log('signaling resumed');
      return;
    } catch (error) {
      log(`resume: ${error.message}`);
      if (/4404|4000/.test(error.message)) break;
    }
  }
  if (call.closed) return;
  // The session is gone: join again as a new peer and set the call up again.
  const info = { pairId: call.pairId, partnerId: call.partnerId, partnerName: call.partnerName, initiator: call.initiator, ws: call.ws };
  endCall('signaling lost');
  state.reconnects.signalingRejoined += 1;
  await startCall(info);
}

function onNotification(call, { method, data }) {
  if (call.closed) return;
  switch (method) {
    case 'peerJoined':
      if (data.peerId === call.partnerId) call.markPresent();
      break;
    case 'p2pSignal':
      if (data.fromPeerId === call.partnerId) onP2pSignal(call, data.payload).catch((e) => log(`p2p: ${e.message}`, 'error'));
      break;
    case 'newProducer':
      if (data.peerId === call.partnerId && call.sfu) consume(call, data.producerId).catch((e) => log(`consume: ${e.message}`, 'error'));
      break;
    case 'peerLeft':
      if (data.peerId === call.partnerId) log('partner left the room');
      break;
    default:
      break;
  }
}

// ----- direct connection --------------------------------------------------------------

function signal(call, payload) {
  call.seq += 1;
  return call.protoo
    .request('p2pSignal', { toPeerId: call.partnerId, seq: call.seq, payload })
    .catch((error) => log(`p2pSignal: ${error.message}`, 'error'));
}

function startP2p(call, stream) {
  const pc = new RTCPeerConnection({ iceServers: call.iceServers, iceTransportPolicy: p2pPolicy });
  call.pc = pc;
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.ontrack = (event) => {
    if (call.mode !== 'sfu') $('remote').srcObject = event.streams[0] ?? new MediaStream([event.track]);
  };
  pc.onicecandidate = (event) => {
    if (event.candidate) signal(call, { candidate: event.candidate.toJSON() });
  };
  pc.onconnectionstatechange = () => {
    log(`direct connection ${pc.connectionState}`);
    if (pc.connectionState === 'connected' && call.mode === 'connecting') {
      clearTimeout(call.p2pTimer);
      connected(call, 'p2p');
    } else if (pc.connectionState === 'failed' && call.mode === 'connecting') {
      fallBack(call, 'ICE failed');
    }
  };
  call.p2pTimer = setTimeout(() => {
    if (call.mode === 'connecting') fallBack(call, `not connected after ${p2pTimeoutMs} ms`);
  }, p2pTimeoutMs);
  const early = call.earlySignals.splice(0);
  (async () => {
    for (const payload of early) await onP2pSignal(call, payload);
  })().catch((e) => log(`p2p: ${e.message}`, 'error'));
  if (call.initiator) {
    (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      await signal(call, { description: pc.localDescription.toJSON() });
    })().catch((e) => log(`offer: ${e.message}`, 'error'));
  }
}

async function onP2pSignal(call, payload) {
  if (!call.pc && !call.sfu) {
    // The partner's offer (or fallback) can overtake our own joinRoom answer.
    call.earlySignals.push(payload);
    return;
  }
  if (payload.fallback) {
    fallBack(call, 'partner fell back');
    return;
  }
  const pc = call.pc;
  if (!pc || call.mode === 'sfu') return;
  if (payload.description) {
    await pc.setRemoteDescription(payload.description);
    if (payload.description.type === 'offer') {
      await pc.setLocalDescription(await pc.createAnswer());
      await signal(call, { description: pc.localDescription.toJSON() });
    }
    for (const c of call.pendingCandidates.splice(0)) await pc.addIceCandidate(c);
  } else if (payload.candidate) {
    if (pc.remoteDescription) await pc.addIceCandidate(payload.candidate);
    else call.pendingCandidates.push(payload.candidate);
  }
}

function connected(call, mode) {
  call.mode = mode;
  state.history[state.history.length - 1].mode = mode;
  setPhase('connected', `with ${call.partnerName || 'a stranger'} (${mode === 'p2p' ? 'direct' : 'through the server'})`);
  log(`call up: ${mode} after ${Date.now() - call.startedAt} ms`);
  sendMatch({ type: 'connected', mode });
}

// ----- through the SFU ------------------------------------------------------------------

/** Both sides fall back together: the first to give up tells the other. */
function fallBack(call, why) {
  if (call.closed || call.sfu) return;
  log(`direct connection given up (${why}): through the SFU`);
  clearTimeout(call.p2pTimer);
  call.mode = 'sfu-connecting';
  if (!why.startsWith('partner')) signal(call, { fallback: true });
  call.pc?.close();
  call.pc = null;
  call.sfu = { send: null, recv: null, producers: [], consumers: new Map() };
  startSfu(call).catch((e) => log(`SFU: ${e.message}`, 'error'));
}

function transportOptions(call, t) {
  return { id: t.id, iceParameters: t.iceParameters, iceCandidates: t.iceCandidates, dtlsParameters: t.dtlsParameters, iceServers: call.iceServers };
}

async function startSfu(call) {
  const protoo = call.protoo;
  const sendInfo = await protoo.request('createTransport', { direction: 'send' });
  const send = call.device.createSendTransport(transportOptions(call, sendInfo));
  call.sfu.send = send;
  send.on('connect', ({ dtlsParameters }, ok, fail) =>
    call.protoo.request('connectTransport', { transportId: send.id, dtlsParameters }).then(ok, fail));
  send.on('produce', ({ kind, rtpParameters, appData }, ok, fail) =>
    call.protoo.request('produce', { transportId: send.id, kind, rtpParameters, appData }).then(({ id }) => ok({ id }), fail));
  const recvInfo = await protoo.request('createTransport', { direction: 'recv' });
  const recv = call.device.createRecvTransport(transportOptions(call, recvInfo));
  call.sfu.recv = recv;
  recv.on('connect', ({ dtlsParameters }, ok, fail) =>
    call.protoo.request('connectTransport', { transportId: recv.id, dtlsParameters }).then(ok, fail));
  const stream = await localStream();
  if (call.closed) return;
  for (const track of stream.getTracks()) {
    const options = { track, appData: { source: track.kind } };
    if (track.kind === 'video') options.encodings = SIMULCAST.map((e) => ({ ...e }));
    call.sfu.producers.push(await send.produce(options));
  }
  const { producers } = await call.protoo.request('getProducers');
  for (const p of producers) if (p.peerId === call.partnerId) await consume(call, p.producerId);
}

async function consume(call, producerId) {
  const sfu = call.sfu;
  if (!sfu?.recv || sfu.consumers.has(producerId) || call.closed) return;
  sfu.consumers.set(producerId, null);
  const data = await call.protoo.request('consume', { transportId: sfu.recv.id, producerId });
  const consumer = await sfu.recv.consume({ id: data.id, producerId, kind: data.kind, rtpParameters: data.rtpParameters });
  sfu.consumers.set(producerId, consumer);
  const remote = $('remote');
  if (!(remote.srcObject instanceof MediaStream) || call.mode !== 'sfu') remote.srcObject = new MediaStream();
  remote.srcObject.addTrack(consumer.track);
  await call.protoo.request('resumeConsumer', { consumerId: consumer.id });
  if (call.mode === 'sfu-connecting' && consumer.kind === 'video') connected(call, 'sfu');
}

// ----- the end of a call --------------------------------------------------------------

function endCall(reason) {
  const call = state.call;
  if (!call) return;
  call.closed = true;
  state.call = null;
  clearTimeout(call.p2pTimer);
  const entry = state.history.find((h) => h.pairId === call.pairId && !h.endReason);
  if (entry) entry.endReason = reason;
  call.pc?.close();
  call.sfu?.send?.close();
  call.sfu?.recv?.close();
  if (call.protoo?.connected) {
    call.protoo.request('leaveRoom').catch(() => {}).finally(() => call.protoo.close());
  } else {
    call.protoo?.close();
  }
  $('remote').srcObject = null;
  $('partner').textContent = 'nobody yet';
  log(`call ended: ${reason}`);
}

// ---------------------------------------------------------------------------------------
// Stats for tests and the curious

/** What the current call receives and how: mode, ICE path, decoded video frames. */
async function callStats() {
  const call = state.call;
  if (!call) return null;
  const out = { pairId: call.pairId, partnerId: call.partnerId, mode: call.mode, p2p: null, sfu: null };
  if (call.pc) {
    const report = await call.pc.getStats();
    const byId = new Map([...report.values()].map((s) => [s.id, s]));
    const transport = [...report.values()].find((s) => s.type === 'transport');
    const pair = byId.get(transport?.selectedCandidatePairId);
    const local = byId.get(pair?.localCandidateId);
    const remote = byId.get(pair?.remoteCandidateId);
    const video = [...report.values()].find((s) => s.type === 'inbound-rtp' && s.kind === 'video');
    out.p2p = {
      connectionState: call.pc.connectionState,
      pair: pair ? { state: pair.state, local: local && { type: local.candidateType, address: local.address, protocol: local.protocol }, remote: remote && { type: remote.candidateType, address: remote.address } } : null,
      framesDecoded: video?.framesDecoded ?? 0,
      frameWidth: video?.frameWidth ?? 0,
    };
  }
  if (call.sfu?.recv) {
    let framesDecoded = 0;
    let frameWidth = 0;
    for (const consumer of call.sfu.consumers.values()) {
      if (consumer?.kind !== 'video') continue;
      for (const s of (await consumer.getStats()).values()) {
        if (s.type === 'inbound-rtp') {
          framesDecoded = s.framesDecoded ?? 0;
          frameWidth = s.frameWidth ?? 0;
        }
      }
    }
    out.sfu = {
      recvState: call.sfu.recv.connectionState,
      sendState: call.sfu.send?.connectionState,
      producers: call.sfu.producers.length,
      consumers: [...call.sfu.consumers.values()].filter(Boolean).length,
      framesDecoded,
      frameWidth,
    };
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Buttons

function start() {
  state.name = $('name').value.trim() || state.name || `guest-${Math.random().toString(36).slice(2, 6)}`;
  $('name').value = state.name;
  $('start').disabled = true;
  setPhase('waiting', 'connecting');
  localStream()
    .then(openMatch)
    .catch((error) => {
      state.errors.push(`camera: ${error.message}`);
      log(`camera: ${error.message}`, 'error');
    });
}

function next() {
  endCall('next');
  sendMatch({ type: 'next' });
  setPhase('waiting', 'waiting for someone new');
}

function report(reason = 'reported from the page') {
  endCall('report');
  sendMatch({ type: 'report', reason });
  setPhase('waiting', 'reported; waiting for someone new');
}

function leave() {
  endCall('leave');
  sendMatch({ type: 'leave' });
  setPhase('left', 'left');
  matchSocket?.close();
  $('start').disabled = false;
}

$('start').onclick = start;
$('next').onclick = next;
$('report').onclick = () => report();
$('leave').onclick = leave;
$('name').value = state.name;

window.roulette = {
  state,
  callStats,
  next,
  report,
  leave,
  /** Closes the sockets as a network drop would (for tests): the page must resume both. */
  dropSockets: () => {
    matchSocket?.close(3000);
    state.call?.socket?.close(3000);
  },
};

if (params.get('name')) start();
