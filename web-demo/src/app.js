// ferrosoup web demo: a video call on unmodified mediasoup-client + protoo-client.
//
// URL parameters:
//   room=ID        room to join (a random one is chosen and put in the URL otherwise)
//   name=NAME      display name; when given, the page joins at once
//   ws=URL         signaling WebSocket (default: ws(s)://<this host>/ws)
//   simulcast=1    send video with three simulcast encodings (r0, r1, r2)
//   workaround=mid give each consumer a unique MID and drop the MID header extension
//                  from its RTP parameters, for servers whose `consume` answer has no
//                  `mid` and that forward the producer's MID value (see README.md)
//   workaround=cname  give consumers a CNAME when the server's is empty (simulcast
//                  producers): without one mediasoup-client writes no `a=ssrc` lines and
//                  an invalid `a=msid`
//   (several: workaround=mid,cname)
//
// The page exposes `window.ferrosoupDemo` so tests (web-demo/tests/e2e.mjs) can read its
// state and the WebRTC stats of every consumer.

import * as mediasoupClient from 'mediasoup-client';
import * as protooClient from 'protoo-client';

const params = new URLSearchParams(location.search);
const roomId = params.get('room') || randomId();
if (!params.get('room')) {
  params.set('room', roomId);
  history.replaceState(null, '', `${location.pathname}?${params}`);
}
const wsUrl = params.get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

const workarounds = new Set((params.get('workaround') || '').split(',').filter(Boolean));
const MID_URI = 'urn:ietf:params:rtp-hdrext:sdes:mid';

const $ = (id) => document.getElementById(id);

/** Everything the page knows about the call; also read by the end-to-end test. */
const state = {
  roomId,
  wsUrl,
  phase: 'idle', // idle | connecting | joined | left | error
  peerId: null,
  displayName: null,
  simulcast: false,
  joinStartedAt: null, // performance.now() when joining started
  joinedAt: null,
  errors: [],
  /** Peers that left (a consume still in flight for them is dropped). */
  leftPeers: new Set(),
  /** peerId -> {peerId, displayName, tile, video, stream} */
  peers: new Map(),
  /** consumerId -> {consumer, peerId, kind, firstFrameAt} */
  consumers: new Map(),
  /** kind -> Producer */
  producers: new Map(),
  device: null,
  protoo: null,
  sendTransport: null,
  recvTransport: null,
  /** Resolves to the recv transport once it exists (consumes wait for it). */
  recvReady: null,
  localStream: null,
  nextLocalMid: 0, // for workaround=mid
};

function randomId() {
  return Math.random().toString(36).slice(2, 10);
}

function log(message, level = 'info') {
  const line = `${new Date().toISOString().slice(11, 23)} ${message}`;
  const el = $('log');
  el.textContent = `${line}\n${el.textContent}`.slice(0, 20000);
  (level === 'error' ? console.error : console.log)(`[ferrosoup-demo] ${message}`);
}

function setStatus(phase, text) {
  state.phase = phase;
  const el = $('status');
  el.dataset.state = phase;
  el.textContent = text;
}

function fail(step, error) {
  const message = `${step}: ${error?.message ?? error}`;
  state.errors.push(message);
  log(message, 'error');
  setStatus('error', message);
}

// ---------------------------------------------------------------------------
// Tiles

function remotePeer(peerId, displayName) {
  let peer = state.peers.get(peerId);
  if (peer) {
    if (displayName) {
      peer.displayName = displayName;
      peer.caption.textContent = displayName;
    }
    return peer;
  }
  const tile = document.createElement('figure');
  tile.className = 'tile remote';
  tile.dataset.peerId = peerId;
  tile.dataset.video = 'waiting';
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  const caption = document.createElement('figcaption');
  caption.textContent = displayName || peerId;
  tile.append(video, caption);
  $('tiles').append(tile);
  const stream = new MediaStream();
  video.srcObject = stream;
  peer = { peerId, displayName: displayName || '', tile, video, caption, stream };
  state.peers.set(peerId, peer);
  return peer;
}

function removePeer(peerId) {
  const peer = state.peers.get(peerId);
  if (!peer) return;
  for (const [consumerId, entry] of state.consumers) {
    if (entry.peerId === peerId) closeConsumer(consumerId);
  }
  peer.video.srcObject = null;
  peer.tile.remove();
  state.peers.delete(peerId);
}

function playTile(peer) {
  // Autoplay with sound needs a user gesture in real browsers; the Join click counts.
  peer.video.play().catch((error) => {
    log(`autoplay of ${peer.displayName || peer.peerId} blocked (${error.name}); muting it`);
    peer.video.muted = true;
    peer.video.play().catch(() => {});
  });
}

/** Notes when the first frame of a video consumer is decoded (polls its stats briefly). */
function watchFirstFrame(entry, peer) {
  const deadline = performance.now() + 60_000;
  const poll = async () => {
    if (!state.consumers.has(entry.consumer.id) || performance.now() > deadline) return;
    let decoded = 0;
    const report = await entry.consumer.getStats().catch(() => null);
    report?.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') decoded = Math.max(decoded, s.framesDecoded ?? 0);
    });
    if (decoded === 0) {
      setTimeout(poll, 50);
      return;
    }
    entry.firstFrameAt = performance.now();
    peer.tile.dataset.video = 'playing';
    log(`first video frame from ${peer.displayName || peer.peerId} after ${Math.round(entry.firstFrameAt - state.joinStartedAt)} ms`);
  };
  poll();
}

// ---------------------------------------------------------------------------
// Consuming

async function consume(producerId, peerId) {
  // newProducer can arrive while the recv transport is still being created.
  const recvTransport = await state.recvReady;
  const { protoo } = state;
  const data = await protoo.request('consume', { transportId: recvTransport.id, producerId });
  const rtpParameters = data.rtpParameters;
  if (workarounds.has('mid') && rtpParameters.mid === undefined) {
    // Without a server-assigned mid, mediasoup-client numbers m-sections by how many it
    // has, which collides when several consumes are batched; and the MID value the
    // server writes into each packet is the producer's, which would misroute it.
    rtpParameters.mid = `c${state.nextLocalMid++}`;
    rtpParameters.headerExtensions = rtpParameters.headerExtensions.filter((e) => e.uri !== MID_URI);
  }
  if (workarounds.has('cname') && !rtpParameters.rtcp?.cname) {
    // mediasoup-client writes `a=ssrc` lines only with a CNAME and takes the CNAME as the
    // stream id: an empty one leaves the stream unsignalled and breaks `a=msid`.
    rtpParameters.rtcp = { ...rtpParameters.rtcp, cname: `peer-${peerId}` };
  }
  let consumer;
  try {
    consumer = await recvTransport.consume({
      id: data.id,
      producerId: data.producerId,
      kind: data.kind,
      rtpParameters,
      appData: { peerId },
    });
  } catch (error) {
    // Keep the server's answer next to the browser's complaint.
    console.error(`[ferrosoup-demo] consume answer rejected: ${JSON.stringify(data)}`);
    throw error;
  }
  if (state.leftPeers.has(peerId)) {
    // The peer left while this consume was in flight.
    consumer.close();
    return;
  }
  const peer = remotePeer(peerId);
  const entry = { consumer, peerId, kind: consumer.kind, type: data.type, firstFrameAt: null };
  state.consumers.set(consumer.id, entry);
  peer.stream.addTrack(consumer.track);
  consumer.on('transportclose', () => closeConsumer(consumer.id));
  if (consumer.kind === 'video') watchFirstFrame(entry, peer);
  // The server creates consumers paused; resume now that the client side can receive.
  try {
    await protoo.request('resumeConsumer', { consumerId: consumer.id });
  } catch (error) {
    // 404: the producer closed meanwhile (its consumerClosed came before we knew the id).
    closeConsumer(consumer.id);
    if (error.code === 404) return;
    throw error;
  }
  playTile(peer);
  log(`consuming ${consumer.kind} of ${peer.displayName || peerId} (${data.type})`);
}

function consumeSafely(producerId, peerId, kind) {
  consume(producerId, peerId).catch((error) => fail(`consume ${kind} of ${peerId}`, error));
}

function closeConsumer(consumerId) {
  const entry = state.consumers.get(consumerId);
  if (!entry) return;
  state.consumers.delete(consumerId);
  const peer = state.peers.get(entry.peerId);
  if (peer) {
    peer.stream.removeTrack(entry.consumer.track);
    if (entry.kind === 'video') peer.tile.dataset.video = 'waiting';
  }
  entry.consumer.close();
}

// ---------------------------------------------------------------------------
// Producing

function wireConnect(transport) {
  transport.on('connect', ({ dtlsParameters }, callback, errback) => {
    state.protoo
      .request('connectTransport', { transportId: transport.id, dtlsParameters })
      .then(callback)
      .catch(errback);
  });
  transport.on('connectionstatechange', (connectionState) => {
    log(`${transport.direction} transport ${connectionState}`);
  });
}

async function startProducing() {
  const { device, protoo } = state;
  if (!device.canProduce('video') && !device.canProduce('audio')) {
    log('this browser cannot send to this router; receiving only');
    return;
  }
  const info = await protoo.request('createTransport', { direction: 'send' });
  const transport = device.createSendTransport(info);
  state.sendTransport = transport;
  wireConnect(transport);
  transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
    protoo
      .request('produce', { transportId: transport.id, kind, rtpParameters, appData })
      .then(({ id }) => callback({ id }))
      .catch(errback);
  });

  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
  });
  state.localStream = stream;
  $('local-video').srcObject = stream;

  const [videoTrack] = stream.getVideoTracks();
  const [audioTrack] = stream.getAudioTracks();
  if (videoTrack && device.canProduce('video')) {
    const options = { track: videoTrack, appData: { source: 'webcam' } };
    if (state.simulcast) {
      options.encodings = [
        { rid: 'r0', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
        { rid: 'r1', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
        { rid: 'r2', scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
      ];
    }
    state.producers.set('video', await transport.produce(options));
  }
  if (audioTrack && device.canProduce('audio')) {
    state.producers.set('audio', await transport.produce({ track: audioTrack, appData: { source: 'mic' } }));
  }
  log(`producing ${[...state.producers.keys()].join(' + ') || 'nothing'}${state.simulcast ? ' (simulcast)' : ''}`);
}

// ---------------------------------------------------------------------------
// Joining and leaving

function onNotification({ method, data }) {
  switch (method) {
    case 'peerJoined':
      remotePeer(data.peerId, data.displayName);
      log(`${data.displayName || data.peerId} joined`);
      break;
    case 'peerLeft': {
      state.leftPeers.add(data.peerId);
      const name = state.peers.get(data.peerId)?.displayName || data.peerId;
      removePeer(data.peerId);
      log(`${name} left`);
      break;
    }
    case 'newProducer':
      consumeSafely(data.producerId, data.peerId, data.kind);
      break;
    case 'consumerClosed':
      closeConsumer(data.consumerId);
      break;
    case 'consumerPaused':
      state.consumers.get(data.consumerId)?.consumer.pause();
      break;
    case 'consumerResumed':
      state.consumers.get(data.consumerId)?.consumer.resume();
      break;
    case 'iceRestartRequired': {
      const transport = [state.sendTransport, state.recvTransport].find((t) => t?.id === data.transportId);
      if (!transport) break;
      state.protoo
        .request('restartIce', { transportId: transport.id })
        .then(({ iceParameters }) => transport.restartIce({ iceParameters }))
        .catch((error) => fail('restartIce', error));
      break;
    }
    case 'roomClosed':
      leave(`room closed (${data.reason})`);
      break;
    default:
      // producerClosed (followed by consumerClosed), producerPaused/Resumed,
      // consumerLayersChanged, scores, transportStateChanged: nothing to do here.
      break;
  }
}

async function join() {
  const { protoo } = state;
  setStatus('connecting', 'joining…');
  const device = state.device ?? new mediasoupClient.Device();
  if (!device.loaded) {
    const { rtpCapabilities } = await protoo.request('createRoom', { roomId });
    await device.load({ routerRtpCapabilities: rtpCapabilities });
  }
  state.device = device;

  // Consumes (also those started by notifications during the join) wait for this.
  let recvReady;
  state.recvReady = new Promise((resolve, reject) => {
    recvReady = { resolve, reject };
  });
  let joined;
  try {
    joined = await protoo.request('joinRoom', {
      roomId,
      displayName: state.displayName,
      rtpCapabilities: device.rtpCapabilities,
    });
    state.peerId = joined.peerId;
    state.joinedAt = performance.now();
    log(`joined room ${roomId} as ${state.displayName} (${joined.peerId}); ${joined.peers.length} other peer(s)`);
    setStatus('joined', `in room ${roomId}`);

    const info = await protoo.request('createTransport', { direction: 'recv' });
    state.recvTransport = device.createRecvTransport(info);
    wireConnect(state.recvTransport);
    recvReady.resolve(state.recvTransport);
  } catch (error) {
    recvReady.reject(new Error('no recv transport'));
    throw error;
  }

  for (const peer of joined.peers) {
    remotePeer(peer.peerId, peer.displayName);
    for (const producer of peer.producers) consumeSafely(producer.producerId, peer.peerId, producer.kind);
  }
  await startProducing();
}

function closeMedia() {
  for (const consumerId of [...state.consumers.keys()]) closeConsumer(consumerId);
  for (const peerId of [...state.peers.keys()]) removePeer(peerId);
  for (const producer of state.producers.values()) producer.close();
  state.producers.clear();
  state.sendTransport?.close();
  state.recvTransport?.close();
  state.sendTransport = null;
  state.recvTransport = null;
}

function leave(reason) {
  state.phase = 'left'; // before closing, so the 'close' event is not taken for a failure
  closeMedia();
  state.localStream?.getTracks().forEach((track) => track.stop());
  state.localStream = null;
  state.protoo?.close();
  state.protoo = null;
  setStatus('left', reason);
  log(reason);
  $('call').hidden = true;
  $('join-form').hidden = false;
}

function start(displayName, simulcast) {
  state.displayName = displayName;
  state.simulcast = simulcast;
  state.joinStartedAt = performance.now();
  $('join-form').hidden = true;
  $('call').hidden = false;
  $('local-name').textContent = `${displayName} (me)`;
  setStatus('connecting', 'connecting…');

  const protoo = new protooClient.Peer(new protooClient.WebSocketTransport(wsUrl));
  state.protoo = protoo;
  let everOpened = false;
  protoo.on('open', () => {
    if (everOpened) {
      // protoo-client reconnected: the server removed our old peer, so start over.
      log('signaling reconnected; joining again');
      closeMedia();
      state.localStream?.getTracks().forEach((track) => track.stop());
    }
    everOpened = true;
    join().catch((error) => fail('join', error));
  });
  protoo.on('notification', onNotification);
  protoo.on('request', (request, accept, reject) => reject(400, `unexpected request ${request.method}`));
  protoo.on('disconnected', () => {
    setStatus('connecting', 'signaling lost; reconnecting…');
    log('signaling disconnected');
  });
  protoo.on('failed', () => log('signaling connection attempt failed', 'error'));
  protoo.on('close', () => {
    if (state.phase !== 'left') fail('signaling', new Error('connection closed'));
  });
}

// ---------------------------------------------------------------------------
// Stats for people and tests

/** Inbound RTP stats of every consumer: what the end-to-end test checks. */
async function consumerStats() {
  const out = [];
  for (const [consumerId, entry] of state.consumers) {
    const report = await entry.consumer.getStats();
    const ssrc = entry.consumer.rtpParameters.encodings?.[0]?.ssrc;
    const all = [];
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') all.push(s);
    });
    // The stream the server signalled; anything else the receiver reports is listed apart.
    const inbound = all.find((s) => s.ssrc === ssrc) ?? null;
    out.push({
      consumerId,
      peerId: entry.peerId,
      displayName: state.peers.get(entry.peerId)?.displayName ?? '',
      kind: entry.kind,
      type: entry.type,
      firstFrameMs: entry.firstFrameAt === null ? null : Math.round(entry.firstFrameAt - state.joinStartedAt),
      firstFrameEpochMs: entry.firstFrameAt === null ? null : Math.round(performance.timeOrigin + entry.firstFrameAt),
      packetsReceived: inbound?.packetsReceived ?? 0,
      packetsLost: inbound?.packetsLost ?? 0,
      framesDecoded: inbound?.framesDecoded ?? 0,
      keyFramesDecoded: inbound?.keyFramesDecoded ?? 0,
      frameWidth: inbound?.frameWidth ?? 0,
      frameHeight: inbound?.frameHeight ?? 0,
      nackCount: inbound?.nackCount ?? 0,
      pliCount: inbound?.pliCount ?? 0,
      firCount: inbound?.firCount ?? 0,
      codec: inbound?.codecId ? report.get(inbound.codecId)?.mimeType ?? null : null,
      ssrc,
      otherInbound: all
        .filter((s) => s !== inbound)
        .map((s) => ({ ssrc: s.ssrc, kind: s.kind, packetsReceived: s.packetsReceived, framesDecoded: s.framesDecoded })),
    });
  }
  return out;
}

/** Outbound RTP stats of the send transport (one entry per encoding), plus its BWE. */
async function producerStats() {
  const out = [];
  if (state.sendTransport) {
    const report = await state.sendTransport.getStats();
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated) {
        out.push({ kind: 'transport', availableOutgoingBitrate: s.availableOutgoingBitrate ?? null });
      }
    });
  }
  for (const [kind, producer] of state.producers) {
    const report = await producer.getStats();
    report.forEach((s) => {
      if (s.type === 'outbound-rtp') {
        out.push({
          kind,
          rid: s.rid ?? null,
          packetsSent: s.packetsSent ?? 0,
          framesEncoded: s.framesEncoded ?? 0,
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          targetBitrate: s.targetBitrate ?? null,
          qualityLimitationReason: s.qualityLimitationReason ?? null,
          active: s.active ?? null,
        });
      }
    });
  }
  return out;
}

/** The server's view (`getConsumerStats` / `getProducerStats`), for diagnosing. */
async function serverStats() {
  const { protoo } = state;
  if (!protoo) return null;
  const ask = (method, data) => protoo.request(method, data).then((r) => r.stats, (e) => `error: ${e.message}`);
  const out = { consumers: {}, producers: {}, transports: {} };
  for (const [id, entry] of state.consumers) out.consumers[`${entry.kind} ${id}`] = await ask('getConsumerStats', { consumerId: id });
  for (const [kind, producer] of state.producers) out.producers[kind] = await ask('getProducerStats', { producerId: producer.id });
  for (const t of [state.sendTransport, state.recvTransport]) {
    if (t) out.transports[t.direction] = await ask('getTransportStats', { transportId: t.id });
  }
  return out;
}

/** The recv transport's SDP (diagnostics only: reads the handler's private PeerConnection). */
function recvSdp() {
  const pc = state.recvTransport?.handler?._pc;
  return pc ? { remote: pc.remoteDescription?.sdp ?? null, local: pc.localDescription?.sdp ?? null } : null;
}

/** Transport-level state: ICE/DTLS as the browser sees it. */
function transportStates() {
  return {
    send: state.sendTransport?.connectionState ?? null,
    recv: state.recvTransport?.connectionState ?? null,
  };
}

window.ferrosoupDemo = {
  state,
  consumerStats,
  producerStats,
  transportStates,
  serverStats,
  recvSdp,
  leave: () => leave('left the room'),
};

// ---------------------------------------------------------------------------
// UI

$('room-label').textContent = `room ${roomId}`;
$('share-link').value = (() => {
  const url = new URL(location.href);
  url.searchParams.delete('name');
  return url.href;
})();
$('simulcast').checked = params.get('simulcast') === '1';
$('display-name').value = params.get('name') || localStorage.getItem('ferrosoup.displayName') || '';

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = $('display-name').value.trim() || `guest-${randomId().slice(0, 4)}`;
  localStorage.setItem('ferrosoup.displayName', name);
  start(name, $('simulcast').checked);
});

$('leave').addEventListener('click', () => leave('left the room'));

$('toggle-mic').addEventListener('click', async (event) => {
  const producer = state.producers.get('audio');
  if (!producer) return;
  const pause = !producer.paused;
  if (pause) producer.pause();
  else producer.resume();
  await state.protoo.request(pause ? 'pauseProducer' : 'resumeProducer', { producerId: producer.id });
  event.target.textContent = pause ? 'Unmute mic' : 'Mute mic';
});

$('toggle-cam').addEventListener('click', async (event) => {
  const producer = state.producers.get('video');
  if (!producer) return;
  const pause = !producer.paused;
  if (pause) producer.pause();
  else producer.resume();
  await state.protoo.request(pause ? 'pauseProducer' : 'resumeProducer', { producerId: producer.id });
  event.target.textContent = pause ? 'Start camera' : 'Stop camera';
});

window.addEventListener('beforeunload', () => state.protoo?.close());

if (params.get('name')) start(params.get('name'), params.get('simulcast') === '1');
