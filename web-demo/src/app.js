// ferrosoup web demo: a video call on unmodified mediasoup-client + protoo-client.
//
// URL parameters:
//   room=ID        room to join (a random one is chosen and put in the URL otherwise)
//   name=NAME      display name; when given, the page joins at once
//   ws=URL         signaling WebSocket (default: ws(s)://<this host>/ws)
//   simulcast=0    send one video encoding instead of three simulcast layers
//   codec=vp8|vp9|h264   video codec to send (default vp8). VP8 and H264 send three
//                  simulcast layers (unless simulcast=0); VP9 sends one stream, L1T3, or
//                  with svc=1 one SVC stream of 3 spatial x 3 temporal layers (L3T3_KEY)
//   produce=0      join as a viewer: no camera or microphone (receives media, chats)
//   relay=1        send and receive only through the TURN servers of /api/ice-servers
//                  (iceTransportPolicy "relay"), to try a TURN setup
//
// Signaling runs over protoo-client's Peer on a small WebSocket transport of our own
// (SignalingSocket below), so the page sees close codes and runs its own reconnection:
// with backoff, resuming the session (`?resume=<sessionToken>`) when the server still
// holds it, joining afresh otherwise.
//
// The page exposes `window.ferrosoupDemo` so tests (web-demo/tests/e2e.mjs) can read its
// state and the WebRTC stats of every consumer.

import { Device } from 'mediasoup-client';
import { Peer } from 'protoo-client';

const params = new URLSearchParams(location.search);
const roomId = params.get('room') || randomId();
if (!params.get('room')) {
  params.set('room', roomId);
  history.replaceState(null, '', `${location.pathname}?${params}`);
}
const wsUrl = params.get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
/** `?relay=1`: media only through TURN (the transports' iceTransportPolicy). */
const relayOnly = params.get('relay') === '1';

/** Three simulcast layers: quarter, half and full capture resolution. */
const SIMULCAST_ENCODINGS = [
  { rid: 'r0', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'r1', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'r2', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];
/** Send codecs the page offers (`?codec=`): how to find each in the device's capabilities. */
const VIDEO_CODECS = {
  vp8: { mimeType: 'video/VP8', simulcast: true },
  vp9: { mimeType: 'video/VP9', simulcast: false },
  // Packetization mode 1 (non-interleaved), as the router offers (profile-level-id 42e01f).
  h264: { mimeType: 'video/H264', simulcast: true, parameters: { 'packetization-mode': 1 } },
};
/** VP9 with `?svc=1`: one stream, 3 spatial layers (keyframes only on layer switches) x 3 temporal. */
const VP9_SVC_MODE = 'L3T3_KEY';
/**
 * Per-tile quality choice -> spatial layer asked for. Auto asks for the top layer, so that
 * the server's bandwidth allocation alone picks the layer that fits the link to this page.
 */
const QUALITY_LAYER = { low: 0, medium: 1, high: 2 };
const CAMERA_CONSTRAINTS = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
/** Reconnection backoff: first retry, doubling up to the maximum, with ±25 % jitter. */
const BACKOFF = { firstMs: 500, maxMs: 15_000 };
/** Close codes the server uses: session taken over by another connection; resume refused. */
const CLOSE_TAKEN_OVER = 4000;
const CLOSE_RESUME_REFUSED = 4404;
const STATS_INTERVAL_MS = 1000;
/** How often the overlays ask the server for its view (estimate toward us, allocated layers). */
const SERVER_STATS_INTERVAL_MS = 3000;

const $ = (id) => document.getElementById(id);

/** Everything the page knows about the call; also read by the end-to-end test. */
const state = {
  roomId,
  wsUrl,
  phase: 'idle', // idle | connecting | joined | reconnecting | left | error
  peerId: null,
  displayName: null,
  simulcast: true,
  /** Key of VIDEO_CODECS chosen with `?codec=` or the form. */
  codec: 'vp8',
  /** VP9 only: send one SVC stream (`?svc=1`). */
  svc: false,
  sessionToken: null,
  joinStartedAt: null, // performance.now() when the user pressed Join
  joinedAt: null,
  /** Failures that stop the call (the end-to-end test fails on any). */
  errors: [],
  /** Problems the call survives (camera denied, server unreachable for a while). */
  warnings: [],
  /** How the page got back after signaling losses. */
  reconnects: { resumed: 0, rejoined: 0, failedAttempts: 0 },
  /** Peers that left (a consume still in flight for them is dropped). */
  leftPeers: new Set(),
  /** The other peers as the last `joinRoom` answer listed them (with their producers). */
  joinedPeers: [],
  /** peerId -> remote peer (tile, stream, quality choice). */
  peers: new Map(),
  /** consumerId -> {consumer, peerId, kind, type, firstFrameAt, spatialLayer, paused} */
  consumers: new Map(),
  /** kind ('audio' | 'video') -> Producer */
  producers: new Map(),
  /** Local tracks: microphone, camera and screen (kept across reconnections). */
  tracks: { audio: null, video: null, screen: null },
  micMuted: false,
  cameraOff: false,
  activeSpeaker: null,
  device: null,
  /** STUN/TURN servers from the server's /api/ice-servers, fetched at each join. */
  iceServers: [],
  protoo: null,
  socket: null,
  sendTransport: null,
  recvTransport: null,
  /** Resolves to the recv transport once it exists (consumes wait for it). */
  recvReady: null,
  reconnectTimer: null,
  reconnectAttempt: 0,
  /** Test hook: no reconnection attempt before this performance.now() time. */
  holdReconnectUntil: 0,
  /**
   * The server's view of what it sends us, refreshed every SERVER_STATS_INTERVAL_MS:
   * its bandwidth estimate toward this page (bit/s, null when it has none) and, per video
   * consumer, what its allocation gives (see refreshServerView()).
   */
  server: { estimate: null, consumers: new Map(), nextAt: 0 },
  /**
   * Data channels: our data producers (dataProducerId -> DataProducer; the chat's is
   * `chatProducer`) and the data consumers of the others' (dataConsumerId -> {dataConsumer,
   * peerId, dataProducerId, label, messages: [{data, at}], closed}).
   */
  data: { producers: new Map(), chatProducer: null, consumers: new Map() },
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

/** Shows a message above the call (`null` hides it). */
function notice(text, level = 'warning') {
  const el = $('notice');
  el.hidden = !text;
  el.textContent = text ?? '';
  el.dataset.level = level;
  if (text) state.warnings.push(text);
}

function fail(step, error) {
  const message = `${step}: ${error?.message ?? error}`;
  state.errors.push(message);
  log(message, 'error');
  setStatus('error', message);
  notice(message, 'error');
}

// ---------------------------------------------------------------------------
// Signaling

/**
 * A protoo transport over one browser WebSocket, without retries: when it closes, the
 * close code and whether it ever opened are kept in `closeInfo` for the reconnection logic.
 */
class SignalingSocket {
  constructor(url) {
    this.closed = false;
    this.opened = false;
    this.closeInfo = null;
    this.listeners = new Map();
    this.ws = new WebSocket(url, 'protoo');
    this.ws.onopen = () => {
      this.opened = true;
      this.emit('open');
    };
    this.ws.onclose = (event) => {
      if (this.closed) return;
      this.closed = true;
      this.closeInfo = { code: event.code, reason: event.reason, opened: this.opened };
      // The Peer's owner closes the Peer on these (which fails its pending requests at
      // once) and then decides how to reconnect.
      this.emit(this.opened ? 'disconnected' : 'failed', 1);
    };
    this.ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message === 'object') this.emit('message', message);
    };
  }

  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(listener);
  }

  emit(event, ...args) {
    for (const listener of this.listeners.get(event) ?? []) {
      try {
        listener(...args);
      } catch (error) {
        console.error(error);
      }
    }
  }

  async send(message) {
    if (this.closed) throw new Error('signaling connection closed');
    this.ws.send(JSON.stringify(message));
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.closeInfo = { code: 1000, reason: 'closed by the page', opened: this.opened };
    this.emit('close');
    this.ws.close(1000);
  }
}

/** Sends a request on the current signaling connection. */
function request(method, data = {}) {
  if (!state.protoo || !state.protoo.connected) return Promise.reject(new Error(`${method}: not connected`));
  return state.protoo.request(method, data);
}

/** Opens a signaling connection; with a session token it asks to resume that session. */
function connect(resumeToken) {
  const url = new URL(wsUrl);
  if (resumeToken) url.searchParams.set('resume', resumeToken);
  const socket = new SignalingSocket(url.href);
  const protoo = new Peer(socket);
  state.protoo = protoo;
  state.socket = socket;
  protoo.on('open', () => onSignalingOpen(protoo, Boolean(resumeToken)));
  protoo.on('notification', onNotification);
  protoo.on('request', (req, accept, reject) => reject(400, `unexpected request ${req.method}`));
  protoo.on('disconnected', () => protoo.close());
  protoo.on('failed', () => protoo.close());
  protoo.on('close', () => onSignalingClosed(protoo, socket.closeInfo ?? { code: 1006, reason: '', opened: false }));
}

function onSignalingOpen(protoo, resuming) {
  if (protoo !== state.protoo) return;
  if (!resuming) {
    join(protoo).catch((error) => {
      if (protoo === state.protoo && protoo.connected) fail('join', error);
    });
    return;
  }
  // The server refuses an unknown session by closing right after the handshake; an
  // answered request means the session is ours again.
  protoo
    .request('ping')
    .then(() => {
      state.reconnects.resumed += 1;
      state.reconnectAttempt = 0;
      notice(null);
      setStatus('joined', `in room ${roomId}`);
      log('signaling back: session resumed');
    })
    .catch(() => {});
}

function onSignalingClosed(protoo, info) {
  if (protoo !== state.protoo) return;
  state.protoo = null;
  if (state.phase === 'left' || state.phase === 'error') return;
  if (info.code === CLOSE_TAKEN_OVER) {
    endCall('this call continues in another window');
    return;
  }
  if (info.code === CLOSE_RESUME_REFUSED) {
    log('the server no longer holds this session: joining again');
    state.sessionToken = null;
    closeMedia();
    state.reconnects.rejoined += 1;
    scheduleReconnect(0);
    return;
  }
  const delay = backoffDelay(state.reconnectAttempt++);
  const seconds = Math.max(1, Math.round(delay / 1000));
  if (!info.opened) {
    state.reconnects.failedAttempts += 1;
    notice(`Cannot reach the server at ${wsUrl}. Retrying in ${seconds} s (attempt ${state.reconnectAttempt}).`);
  } else {
    notice(`Connection to the server lost. Reconnecting in ${seconds} s…`);
  }
  setStatus(state.peerId ? 'reconnecting' : 'connecting', 'reconnecting…');
  log(`signaling closed (code ${info.code}${info.reason ? `, ${info.reason}` : ''}); retry in ${delay} ms`);
  scheduleReconnect(delay);
}

function backoffDelay(attempt) {
  const base = Math.min(BACKOFF.maxMs, BACKOFF.firstMs * 2 ** attempt);
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

function scheduleReconnect(delay) {
  clearTimeout(state.reconnectTimer);
  const wait = Math.max(delay, state.holdReconnectUntil - performance.now());
  state.reconnectTimer = setTimeout(() => {
    if (state.phase === 'left' || state.phase === 'error') return;
    connect(state.sessionToken);
  }, wait);
}

// ---------------------------------------------------------------------------
// Remote tiles

function remotePeer(peerId, displayName) {
  let peer = state.peers.get(peerId);
  if (peer) {
    if (displayName) {
      peer.displayName = displayName;
      peer.name.textContent = displayName;
    }
    return peer;
  }
  const tile = document.createElement('figure');
  tile.className = 'tile remote';
  tile.dataset.peerId = peerId;
  tile.dataset.video = 'none';
  tile.innerHTML =
    '<video autoplay playsinline></video><pre class="stats"></pre>' +
    '<select class="quality" aria-label="Video quality" hidden>' +
    '<option value="auto" title="The server picks the layer that fits your bandwidth">Auto</option><option value="high">High</option>' +
    '<option value="medium">Medium</option><option value="low">Low</option></select>' +
    '<figcaption><span class="name"></span><span class="muted-mark" hidden>muted</span></figcaption>' +
    '<button class="sound" type="button" hidden>Enable sound</button>';
  const q = (selector) => tile.querySelector(selector);
  peer = {
    peerId,
    displayName: displayName || '',
    tile,
    video: q('video'),
    name: q('.name'),
    mutedMark: q('.muted-mark'),
    statsBox: q('.stats'),
    qualitySelect: q('.quality'),
    soundButton: q('.sound'),
    stream: new MediaStream(),
    quality: 'auto',
    lastStats: null,
  };
  peer.name.textContent = peer.displayName || peerId;
  peer.video.srcObject = peer.stream;
  peer.qualitySelect.addEventListener('change', () => setQuality(peer, peer.qualitySelect.value));
  peer.soundButton.addEventListener('click', () => {
    peer.video.muted = false;
    peer.soundButton.hidden = true;
    peer.video.play().catch(() => {});
  });
  $('tiles').append(tile);
  state.peers.set(peerId, peer);
  if (state.activeSpeaker === peerId) tile.classList.add('speaking');
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
  // Autoplay with sound needs a user gesture; the Join click counts, a ?name= link does not.
  peer.video.play().catch((error) => {
    log(`autoplay of ${peer.displayName || peer.peerId} blocked (${error.name}); muted until clicked`);
    peer.video.muted = true;
    peer.soundButton.hidden = false;
    peer.video.play().catch(() => {});
  });
}

function videoEntryOf(peerId) {
  for (const entry of state.consumers.values()) {
    if (entry.peerId === peerId && entry.kind === 'video') return entry;
  }
  return null;
}

/** Applies a tile's quality choice to its simulcast video consumer. */
async function setQuality(peer, quality) {
  peer.quality = quality;
  peer.qualitySelect.value = quality;
  const entry = videoEntryOf(peer.peerId);
  if (!entry || entry.type !== 'simulcast') return;
  const spatialLayer = quality === 'auto' ? entry.spatialLayers - 1 : Math.min(QUALITY_LAYER[quality], entry.spatialLayers - 1);
  try {
    await request('setConsumerPreferredLayers', { consumerId: entry.consumer.id, spatialLayer });
    log(`${peer.displayName}: quality ${quality} (${quality === 'auto' ? 'the server picks, up to ' : ''}spatial layer ${spatialLayer})`);
    state.server.nextAt = 0; // show the server's new allocation at the next refresh
  } catch (error) {
    log(`setConsumerPreferredLayers for ${peer.displayName}: ${error.message}`, 'error');
  }
}

function setSpeaker(peerId) {
  state.activeSpeaker = peerId;
  for (const tile of document.querySelectorAll('.tile')) {
    tile.classList.toggle('speaking', peerId !== null && tile.dataset.peerId === peerId);
  }
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
    if (!entry.paused) peer.tile.dataset.video = 'playing';
    log(`first video frame from ${peer.displayName || peer.peerId} after ${Math.round(entry.firstFrameAt - state.joinStartedAt)} ms`);
  };
  poll();
}

// ---------------------------------------------------------------------------
// Consuming

async function consume(protoo, producerId, peerId) {
  // newProducer can arrive while the recv transport is still being created.
  const recvTransport = await state.recvReady;
  const data = await protoo.request('consume', { transportId: recvTransport.id, producerId });
  if (protoo !== state.protoo || recvTransport.closed) return;
  const consumer = await recvTransport.consume({
    id: data.id,
    producerId: data.producerId,
    kind: data.kind,
    rtpParameters: data.rtpParameters,
    appData: { peerId },
  });
  if (state.leftPeers.has(peerId) || recvTransport.closed) {
    // The peer left (or we rejoined) while this consume was in flight.
    consumer.close();
    return;
  }
  const peer = remotePeer(peerId);
  const scalability = /^[LS](\d+)/.exec(data.rtpParameters.encodings?.[0]?.scalabilityMode ?? '');
  const entry = {
    consumer,
    peerId,
    kind: consumer.kind,
    type: data.type,
    // Simulcast consumers name their layers in scalabilityMode (`S3T1`); the demo sends 3.
    spatialLayers: scalability ? Number(scalability[1]) : data.type === 'simulcast' ? SIMULCAST_ENCODINGS.length : 1,
    spatialLayer: null,
    paused: Boolean(data.producerPaused),
    firstFrameAt: null,
  };
  state.consumers.set(consumer.id, entry);
  peer.stream.addTrack(consumer.track);
  consumer.on('transportclose', () => closeConsumer(consumer.id));
  if (consumer.kind === 'video') {
    peer.tile.dataset.video = entry.paused ? 'off' : 'waiting';
    peer.qualitySelect.hidden = entry.type !== 'simulcast';
    watchFirstFrame(entry, peer);
  } else {
    peer.mutedMark.hidden = !entry.paused;
  }
  // The server creates consumers paused; resume now that the client side can receive.
  try {
    await protoo.request('resumeConsumer', { consumerId: consumer.id });
  } catch (error) {
    // 404: the producer closed meanwhile (its consumerClosed came before we knew the id).
    closeConsumer(consumer.id);
    if (error.code === 404 || protoo !== state.protoo) return;
    throw error;
  }
  if (consumer.kind === 'video' && peer.quality !== 'auto') setQuality(peer, peer.quality);
  playTile(peer);
  log(`consuming ${consumer.kind} of ${peer.displayName || peerId} (${data.type})`);
}

function consumeSafely(protoo, producerId, peerId, kind) {
  consume(protoo, producerId, peerId).catch((error) => {
    // A connection lost meanwhile is not this consume's failure: reconnection handles it.
    if (protoo === state.protoo && protoo.connected) fail(`consume ${kind} of ${peerId}`, error);
    else log(`consume ${kind} of ${peerId} interrupted: ${error.message}`);
  });
}

function closeConsumer(consumerId) {
  const entry = state.consumers.get(consumerId);
  if (!entry) return;
  state.consumers.delete(consumerId);
  const peer = state.peers.get(entry.peerId);
  if (peer) {
    peer.stream.removeTrack(entry.consumer.track);
    if (entry.kind === 'video') {
      peer.tile.dataset.video = 'none';
      peer.qualitySelect.hidden = true;
    }
  }
  entry.consumer.close();
}

function setConsumerPaused(consumerId, paused) {
  const entry = state.consumers.get(consumerId);
  if (!entry) return;
  entry.paused = paused;
  if (paused) entry.consumer.pause();
  else entry.consumer.resume();
  const peer = state.peers.get(entry.peerId);
  if (!peer) return;
  if (entry.kind === 'video') peer.tile.dataset.video = paused ? 'off' : entry.firstFrameAt ? 'playing' : 'waiting';
  else {
    peer.mutedMark.hidden = !paused;
    if (paused && state.activeSpeaker === entry.peerId) setSpeaker(null);
  }
}

// ---------------------------------------------------------------------------
// Local media and producing

function mediaErrorText(error, what) {
  switch (error?.name) {
    case 'NotAllowedError':
      return `Access to the ${what} was denied. Allow it for this site (the icon in the address bar), then press "Retry camera and microphone". You can still see and hear the others.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} found. You can still see and hear the others.`;
    case 'NotReadableError':
      return `The ${what} is in use by another application or cannot be started.`;
    default:
      return `Cannot use the ${what}: ${error?.message ?? error}`;
  }
}

/** Gets the microphone and camera not held yet; failures become a notice, not an error. */
async function acquireMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    notice('This page needs HTTPS (or http://localhost) to use the camera and microphone. You can still see and hear the others.');
    return;
  }
  const want = { audio: !state.tracks.audio, video: !state.tracks.video };
  if (!want.audio && !want.video) return;
  const constraints = (kind) => (kind === 'video' ? { ...CAMERA_CONSTRAINTS } : true);
  const problems = [];
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: want.audio && constraints('audio'),
      video: want.video && constraints('video'),
    });
    for (const track of stream.getTracks()) state.tracks[track.kind] = track;
  } catch (error) {
    // One device may work without the other: ask for each alone.
    for (const kind of ['audio', 'video']) {
      if (!want[kind]) continue;
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraints(kind) });
        state.tracks[kind] = stream.getTracks()[0];
      } catch (single) {
        problems.push(mediaErrorText(single, kind === 'video' ? 'camera' : 'microphone'));
      }
    }
    if (!problems.length) log(`camera and microphone together failed (${error.name}), separately fine`);
  }
  $('retry-media').hidden = problems.length === 0;
  if (problems.length) {
    notice(problems.join(' '));
    log(problems.join(' '), 'error');
  } else {
    notice(null);
  }
  updateLocalPreview();
  refreshDeviceLists();
}

function updateLocalPreview() {
  const track = state.tracks.screen ?? state.tracks.video;
  const video = $('local-video');
  const current = video.srcObject?.getVideoTracks()[0] ?? null;
  if (current !== track) video.srcObject = track ? new MediaStream([track]) : null;
  const tile = $('local-tile');
  tile.classList.toggle('mirrored', !state.tracks.screen);
  tile.dataset.video = !track ? 'none' : state.cameraOff && !state.tracks.screen ? 'off' : 'playing';
  tile.querySelector('.muted-mark').hidden = !state.micMuted;
}

async function produceTrack(kind) {
  const track = kind === 'audio' ? state.tracks.audio : state.tracks.screen ?? state.tracks.video;
  const transport = state.sendTransport;
  if (!track || !transport || state.producers.has(kind) || !state.device.canProduce(kind)) return;
  const options = { track, stopTracks: false, appData: { source: kind === 'audio' ? 'mic' : 'webcam' } };
  if (kind === 'video') Object.assign(options, videoSendOptions());
  const producer = await transport.produce(options);
  if (transport !== state.sendTransport) {
    producer.close();
    return;
  }
  state.producers.set(kind, producer);
  producer.on('transportclose', () => state.producers.delete(kind));
  const paused = kind === 'audio' ? state.micMuted : state.cameraOff && !state.tracks.screen;
  if (paused) {
    producer.pause();
    await request('pauseProducer', { producerId: producer.id });
  }
}

/** The device's send codec for `state.codec` (the router's and the browser's in common). */
function videoSendCodec() {
  const wanted = VIDEO_CODECS[state.codec];
  const codec = state.device.rtpCapabilities.codecs.find(
    (c) =>
      c.mimeType.toLowerCase() === wanted.mimeType.toLowerCase() &&
      Object.entries(wanted.parameters ?? {}).every(([key, value]) => c.parameters?.[key] === value),
  );
  if (!codec) throw new Error(`${wanted.mimeType} is not supported by both this browser and the server`);
  return codec;
}

/** `produce()` options for the camera: codec and encodings. */
function videoSendOptions() {
  const options = { codec: videoSendCodec(), codecOptions: { videoGoogleStartBitrate: 1000 } };
  if (state.codec === 'vp9') {
    options.encodings = [{ scalabilityMode: state.svc ? VP9_SVC_MODE : 'L1T3', maxBitrate: 1_500_000 }];
  } else if (state.simulcast && VIDEO_CODECS[state.codec].simulcast) {
    options.encodings = SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
  }
  return options;
}

/** How the camera is sent, for the log. */
function videoSendDescription() {
  if (state.codec === 'vp9') return `VP9 ${state.svc ? VP9_SVC_MODE : 'L1T3'}`;
  return `${VIDEO_CODECS[state.codec].mimeType.slice(6)}${state.simulcast ? ' simulcast' : ''}`;
}

async function startProducing(protoo) {
  const { device } = state;
  const info = await protoo.request('createTransport', {
    direction: 'send',
    sctpCapabilities: device.sctpCapabilities,
  });
  const transport = device.createSendTransport({ ...info, ...iceOptions() });
  state.sendTransport = transport;
  wireTransport(transport);
  transport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
    request('produce', { transportId: transport.id, kind, rtpParameters, appData })
      .then(({ id }) => callback({ id }))
      .catch(errback);
  });
  transport.on('producedata', ({ sctpStreamParameters, label, protocol, appData }, callback, errback) => {
    request('produceData', { transportId: transport.id, sctpStreamParameters, label, protocol, appData })
      .then(({ id }) => callback({ id }))
      .catch(errback);
  });
  await startChat();
  if (params.get('produce') === '0') {
    log('viewer (produce=0): receiving media, chat only');
    return;
  }
  if (!device.canProduce('video') && !device.canProduce('audio')) {
    log('this browser cannot send media to this router; receiving only');
    return;
  }
  await acquireMedia();
  await produceTrack('video');
  await produceTrack('audio');
  log(`producing ${[...state.producers.keys()].join(' + ') || 'nothing'}${state.producers.has('video') ? ` (${videoSendDescription()})` : ''}`);
}

/**
 * The `/api/ice-servers` URL of the signaling server: same host, `/ws` replaced (so a proxy
 * prefix is kept), the access token of `?token=` passed on.
 */
function iceServersUrl() {
  const ws = new URL(wsUrl);
  const url = new URL(ws.href.replace(/^ws/, 'http'));
  url.pathname = /\/ws\/?$/.test(ws.pathname) ? ws.pathname.replace(/\/ws\/?$/, '/api/ice-servers') : '/api/ice-servers';
  url.search = '';
  if (ws.searchParams.get('token')) url.searchParams.set('token', ws.searchParams.get('token'));
  return url.href;
}

/**
 * The server's STUN/TURN servers (TURN credentials are time-limited, so asked for at each
 * join). Without them the call still works where UDP reaches the server directly.
 */
async function fetchIceServers() {
  try {
    const res = await fetch(iceServersUrl(), { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
    const { iceServers } = await res.json();
    const turn = iceServers.filter((s) => [s.urls].flat().some((u) => u.startsWith('turn')));
    log(`ICE servers: ${iceServers.length ? iceServers.flatMap((s) => [s.urls].flat()).join(', ') : 'none'}${relayOnly ? ' (relay only)' : ''}`);
    if (relayOnly && !turn.length) notice('relay=1 but the server names no TURN server (TURN_URLS): media cannot flow.');
    return iceServers;
  } catch (error) {
    log(`ICE servers: ${error.message}; going on without STUN/TURN`, 'error');
    return [];
  }
}

/** Options of createSendTransport / createRecvTransport beyond the server's parameters. */
function iceOptions() {
  return { iceServers: state.iceServers, iceTransportPolicy: relayOnly ? 'relay' : 'all' };
}

function wireTransport(transport) {
  transport.on('connect', ({ dtlsParameters }, callback, errback) => {
    request('connectTransport', { transportId: transport.id, dtlsParameters })
      .then(callback)
      .catch(errback);
  });
  transport.on('connectionstatechange', (connectionState) => {
    log(`${transport.direction} transport ${connectionState}`);
    if (connectionState === 'failed') restartIce(transport);
  });
}

function restartIce(transport) {
  if (transport.closed) return;
  request('restartIce', { transportId: transport.id })
    .then(({ iceParameters }) => transport.restartIce({ iceParameters }))
    .catch((error) => log(`restartIce: ${error.message}`, 'error'));
}

async function togglePause(kind) {
  if (kind === 'audio') state.micMuted = !state.micMuted;
  else state.cameraOff = !state.cameraOff;
  const pause = kind === 'audio' ? state.micMuted : state.cameraOff;
  const button = $(kind === 'audio' ? 'toggle-mic' : 'toggle-cam');
  button.setAttribute('aria-pressed', String(pause));
  button.textContent = kind === 'audio' ? (pause ? 'Unmute' : 'Mute') : pause ? 'Camera on' : 'Camera off';
  updateLocalPreview();
  const producer = state.producers.get(kind);
  // While the screen is shared the video producer carries it: camera off does not pause it.
  if (!producer || (kind === 'video' && state.tracks.screen)) return;
  if (pause) producer.pause();
  else producer.resume();
  await request(pause ? 'pauseProducer' : 'resumeProducer', { producerId: producer.id }).catch((error) =>
    log(`${pause ? 'pause' : 'resume'} ${kind}: ${error.message}`, 'error'),
  );
}

/** Puts `track` on the video producer (or creates it), resuming it when it carries the screen. */
async function setVideoTrack(track) {
  const producer = state.producers.get('video');
  if (!producer) {
    await produceTrack('video');
    return;
  }
  await producer.replaceTrack({ track });
  const pause = state.cameraOff && !state.tracks.screen;
  if (pause !== producer.paused) {
    if (pause) producer.pause();
    else producer.resume();
    await request(pause ? 'pauseProducer' : 'resumeProducer', { producerId: producer.id });
  }
}

async function toggleScreen() {
  if (state.tracks.screen) {
    await stopScreen();
    return;
  }
  let track;
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    [track] = stream.getVideoTracks();
  } catch (error) {
    if (error.name !== 'NotAllowedError') notice(`Cannot share the screen: ${error.message}`);
    return;
  }
  // The browser's own "Stop sharing" ends the track.
  track.addEventListener('ended', () => stopScreen());
  state.tracks.screen = track;
  $('toggle-screen').setAttribute('aria-pressed', 'true');
  $('toggle-screen').textContent = 'Stop sharing';
  updateLocalPreview();
  await setVideoTrack(track).catch((error) => log(`screen share: ${error.message}`, 'error'));
  log('sharing the screen');
}

async function stopScreen() {
  const screen = state.tracks.screen;
  if (!screen) return;
  state.tracks.screen = null;
  $('toggle-screen').setAttribute('aria-pressed', 'false');
  $('toggle-screen').textContent = 'Share screen';
  updateLocalPreview();
  if (state.producers.has('video')) {
    await setVideoTrack(state.tracks.video).catch((error) => log(`back to camera: ${error.message}`, 'error'));
  }
  screen.stop();
  log('screen sharing stopped');
}

async function refreshDeviceLists() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  const fill = (select, kind, track) => {
    const current = track?.getSettings().deviceId ?? '';
    select.replaceChildren(
      ...devices
        .filter((d) => d.kind === kind && d.deviceId)
        .map((d, i) => new Option(d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`, d.deviceId, false, d.deviceId === current)),
    );
    select.disabled = select.options.length === 0;
  };
  fill($('camera-select'), 'videoinput', state.tracks.video);
  fill($('mic-select'), 'audioinput', state.tracks.audio);
}

/** Switches the camera or microphone to `deviceId`, replacing the track being sent. */
async function switchDevice(kind, deviceId) {
  let track;
  try {
    const base = kind === 'video' ? CAMERA_CONSTRAINTS : {};
    const stream = await navigator.mediaDevices.getUserMedia({ [kind]: { ...base, deviceId: { exact: deviceId } } });
    [track] = stream.getTracks();
  } catch (error) {
    notice(mediaErrorText(error, kind === 'video' ? 'camera' : 'microphone'));
    refreshDeviceLists();
    return;
  }
  const old = state.tracks[kind];
  state.tracks[kind] = track;
  const producer = state.producers.get(kind);
  try {
    if (kind === 'audio') {
      if (producer) await producer.replaceTrack({ track });
      else await produceTrack('audio');
    } else if (!state.tracks.screen) {
      await setVideoTrack(track);
    }
  } catch (error) {
    log(`switching ${kind}: ${error.message}`, 'error');
  }
  old?.stop();
  updateLocalPreview();
  log(`${kind === 'video' ? 'camera' : 'microphone'}: ${track.label}`);
}

// ---------------------------------------------------------------------------
// Stats overlay

function formatBitrate(bps) {
  return bps >= 1_000_000 ? `${(bps / 1_000_000).toFixed(1)} Mb/s` : `${Math.round(bps / 1000)} kb/s`;
}

/**
 * Asks the server for its view of what it sends us: the recv transport's bandwidth
 * estimate (`getTransportStats`) and each video consumer's allocation (`getConsumerStats`).
 */
async function refreshServerView() {
  state.server.nextAt = performance.now() + SERVER_STATS_INTERVAL_MS;
  const transport = state.recvTransport;
  if (!transport || transport.closed || !state.protoo?.connected) return;
  const [transportStats] = (await request('getTransportStats', { transportId: transport.id })).stats;
  state.server.estimate = transportStats?.availableOutgoingBitrate ?? null;
  const consumers = new Map();
  for (const [id, entry] of state.consumers) {
    if (entry.kind !== 'video') continue;
    // A consumer closed meanwhile (404) just has no line.
    const stats = await request('getConsumerStats', { consumerId: id }).then((r) => r.stats, () => []);
    const outbound = stats.find((s) => s.type === 'outbound-rtp');
    if (outbound) {
      consumers.set(id, {
        allocation: outbound.allocation ?? null,
        allocatedSpatialLayer: outbound.allocatedSpatialLayer ?? null,
        preferredSpatialLayer: outbound.preferredSpatialLayer ?? null,
      });
    }
  }
  state.server.consumers = consumers;
}

/**
 * The overlay line with the server's view of a tile's video: its estimate toward this
 * page, then the tile's quality choice and the layer the server's allocation gives
 * (`auto → layer 2/3`), or `paused (bandwidth)` when not even the lowest layer fits.
 */
function serverLine(peer, entry) {
  const estimate = state.server.estimate === null ? '–' : formatBitrate(state.server.estimate);
  const view = entry && state.server.consumers.get(entry.consumer.id);
  if (!view) return `server est ${estimate}`;
  if (view.allocation === 'paused') return `server est ${estimate}  paused (bandwidth)`;
  if (entry.type !== 'simulcast') return `server est ${estimate}`;
  // Not steered (no estimate yet, or none): the preferred layer; steered: the allocated one.
  const layer = view.allocation === 'layer' ? view.allocatedSpatialLayer : (view.preferredSpatialLayer ?? entry.spatialLayers - 1);
  return `server est ${estimate}  ${peer.quality} → layer ${Math.min(layer, entry.spatialLayers - 1) + 1}/${entry.spatialLayers}`;
}

/** Refreshes every remote tile's overlay: bitrate, RTT, loss, resolution and layer, the server's view. */
async function updateStatsOverlays() {
  if (performance.now() >= state.server.nextAt) {
    await refreshServerView().catch((error) => log(`server stats: ${error.message}`));
  }
  let rtt = null;
  const transportReport = await state.recvTransport?.getStats().catch(() => null);
  transportReport?.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
  });
  for (const peer of state.peers.values()) {
    let bytes = 0;
    let received = 0;
    let lost = 0;
    let video = null;
    let entryVideo = null;
    for (const entry of state.consumers.values()) {
      if (entry.peerId !== peer.peerId) continue;
      const report = await entry.consumer.getStats().catch(() => null);
      report?.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        bytes += s.bytesReceived ?? 0;
        received += s.packetsReceived ?? 0;
        lost += Math.max(0, s.packetsLost ?? 0);
        if (s.kind === 'video') {
          video = s;
          entryVideo = entry;
        }
      });
    }
    const now = performance.now();
    const prev = peer.lastStats;
    peer.lastStats = { at: now, bytes, received, lost };
    if (!prev) continue;
    const seconds = (now - prev.at) / 1000;
    const bitrate = seconds > 0 ? ((bytes - prev.bytes) * 8) / seconds : 0;
    const newPackets = received - prev.received + (lost - prev.lost);
    const loss = newPackets > 0 ? ((lost - prev.lost) / newPackets) * 100 : 0;
    const lines = [`${formatBitrate(Math.max(0, bitrate))}  RTT ${rtt === null ? '–' : `${Math.round(rtt * 1000)} ms`}  loss ${loss.toFixed(1)} %`];
    if (video?.frameWidth) {
      const layer =
        entryVideo.type === 'simulcast' && entryVideo.spatialLayer !== null
          ? `  layer ${entryVideo.spatialLayer + 1}/${entryVideo.spatialLayers}`
          : '';
      lines.push(`${video.frameWidth}x${video.frameHeight} ${Math.round(video.framesPerSecond ?? 0)} fps${layer}`);
    }
    lines.push(serverLine(peer, entryVideo ?? videoEntryOf(peer.peerId)));
    peer.statsBox.textContent = lines.join('\n');
  }
}

function startStatsLoop() {
  const tick = async () => {
    if (state.phase === 'left') return;
    await updateStatsOverlays().catch((error) => log(`stats: ${error.message}`, 'error'));
    setTimeout(tick, STATS_INTERVAL_MS);
  };
  setTimeout(tick, STATS_INTERVAL_MS);
}

// ---------------------------------------------------------------------------
// Data channels: the chat, and what the end-to-end test drives

/** Opens a data producer on the send transport (mediasoup-client `produceData`). */
async function produceData(options) {
  if (!state.sendTransport) throw new Error('no send transport');
  const dataProducer = await state.sendTransport.produceData(options);
  state.data.producers.set(dataProducer.id, dataProducer);
  dataProducer.on('transportclose', () => state.data.producers.delete(dataProducer.id));
  return dataProducer;
}

async function startChat() {
  try {
    const chat = await produceData({ label: 'chat', ordered: true });
    state.data.chatProducer = chat;
    $('chat').hidden = false;
    log('chat open');
  } catch (error) {
    notice(`Chat unavailable: ${error.message}`);
    state.warnings.push(`chat: ${error.message}`);
  }
}

function sendChat(text) {
  const chat = state.data.chatProducer;
  if (!chat || chat.readyState !== 'open' || !text) return false;
  chat.send(text);
  addChatLine(state.displayName, text, true);
  return true;
}

function addChatLine(name, text, own = false) {
  const li = document.createElement('li');
  if (own) li.className = 'own';
  const who = document.createElement('b');
  who.textContent = `${name}: `;
  li.append(who, document.createTextNode(text));
  $('chat-log').append(li);
  $('chat-log').scrollTop = $('chat-log').scrollHeight;
}

/** Consumes a data producer of another peer on the recv transport. */
async function consumeData(protoo, dataProducerId, peerId) {
  const transport = await state.recvReady;
  const r = await protoo.request('consumeData', { transportId: transport.id, dataProducerId });
  if (state.leftPeers.has(peerId) || protoo !== state.protoo) {
    request('closeDataConsumer', { dataConsumerId: r.id }).catch(() => {});
    return;
  }
  const dataConsumer = await transport.consumeData({
    id: r.id,
    dataProducerId: r.dataProducerId,
    sctpStreamParameters: r.sctpStreamParameters,
    label: r.label,
    protocol: r.protocol,
    appData: { ...(r.appData ?? {}), peerId },
  });
  const entry = { dataConsumer, peerId, dataProducerId, label: r.label, messages: [], closed: false };
  state.data.consumers.set(dataConsumer.id, entry);
  dataConsumer.on('message', (data) => {
    entry.messages.push({ data, at: performance.now() });
    if (r.label === 'chat' && typeof data === 'string') {
      addChatLine(state.peers.get(peerId)?.displayName || peerId, data);
    }
  });
  dataConsumer.on('close', () => {
    entry.closed = true;
  });
}

function consumeDataSafely(protoo, dataProducerId, peerId) {
  consumeData(protoo, dataProducerId, peerId).catch((error) => {
    log(`consumeData ${dataProducerId} failed: ${error.message}`, 'warn');
  });
}

function closeDataConsumer(dataConsumerId) {
  const entry = state.data.consumers.get(dataConsumerId);
  if (!entry) return;
  entry.closed = true;
  entry.dataConsumer.close();
  state.data.consumers.delete(dataConsumerId);
  state.data.closedConsumers = (state.data.closedConsumers ?? 0) + 1;
  state.data.closedProducerIds = [...(state.data.closedProducerIds ?? []), entry.dataProducerId];
}

// ---------------------------------------------------------------------------
// Joining and leaving

function onNotification({ method, data }) {
  const protoo = state.protoo;
  switch (method) {
    case 'peerJoined':
      state.leftPeers.delete(data.peerId);
      remotePeer(data.peerId, data.displayName);
      log(`${data.displayName || data.peerId} joined`);
      break;
    case 'peerLeft': {
      state.leftPeers.add(data.peerId);
      const name = state.peers.get(data.peerId)?.displayName || data.peerId;
      removePeer(data.peerId);
      if (state.activeSpeaker === data.peerId) setSpeaker(null);
      log(`${name} left`);
      break;
    }
    case 'newProducer':
      consumeSafely(protoo, data.producerId, data.peerId, data.kind);
      break;
    case 'consumerClosed':
      closeConsumer(data.consumerId);
      break;
    case 'consumerPaused':
      setConsumerPaused(data.consumerId, true);
      break;
    case 'consumerResumed':
      setConsumerPaused(data.consumerId, false);
      break;
    case 'consumerLayersChanged': {
      const entry = state.consumers.get(data.consumerId);
      if (!entry) break;
      entry.spatialLayer = data.spatialLayer ?? null;
      const name = state.peers.get(entry.peerId)?.displayName || entry.peerId;
      log(`${name}: receiving ${entry.spatialLayer === null ? 'no layer' : `layer ${entry.spatialLayer + 1}/${entry.spatialLayers}`}`);
      break;
    }
    case 'activeSpeaker':
      setSpeaker(data.peerId);
      break;
    case 'iceRestartRequired': {
      const transport = [state.sendTransport, state.recvTransport].find((t) => t?.id === data.transportId);
      if (transport) restartIce(transport);
      break;
    }
    case 'newDataProducer':
      consumeDataSafely(protoo, data.dataProducerId, data.peerId);
      break;
    case 'dataConsumerClosed':
      closeDataConsumer(data.dataConsumerId);
      break;
    case 'roomClosed':
      endCall(`The room was closed (${data.reason}).`);
      break;
    default:
      // producerClosed (followed by consumerClosed), producerPaused/Resumed (followed by
      // consumerPaused/Resumed), scores, transportStateChanged: nothing to show.
      break;
  }
}

async function join(protoo) {
  setStatus('connecting', 'joining…');
  // Asked for alongside the join's requests, so it adds no round trip.
  const iceServers = fetchIceServers();
  const device = state.device ?? new Device();
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
  state.recvReady.catch(() => {});
  let joined;
  try {
    joined = await protoo.request('joinRoom', {
      roomId,
      displayName: state.displayName,
      rtpCapabilities: device.rtpCapabilities,
    });
    state.peerId = joined.peerId;
    state.joinedPeers = joined.peers;
    state.sessionToken = joined.sessionToken ?? null;
    state.joinedAt = performance.now();
    $('local-tile').dataset.peerId = joined.peerId;
    log(`joined room ${roomId} as ${state.displayName} (${joined.peerId}); ${joined.peers.length} other peer(s)`);

    state.iceServers = await iceServers;
    const info = await protoo.request('createTransport', {
      direction: 'recv',
      sctpCapabilities: device.sctpCapabilities,
    });
    state.recvTransport = device.createRecvTransport({ ...info, ...iceOptions() });
    wireTransport(state.recvTransport);
    recvReady.resolve(state.recvTransport);
  } catch (error) {
    recvReady.reject(new Error('no recv transport'));
    throw error;
  }
  setStatus('joined', `in room ${roomId}`);
  state.reconnectAttempt = 0;
  notice(null);

  for (const peer of joined.peers) {
    remotePeer(peer.peerId, peer.displayName);
    for (const producer of peer.producers) consumeSafely(protoo, producer.producerId, peer.peerId, producer.kind);
    for (const dataProducer of peer.dataProducers ?? []) consumeDataSafely(protoo, dataProducer.dataProducerId, peer.peerId);
  }
  await startProducing(protoo);
}

/** Closes transports, producers, consumers and remote tiles; local tracks stay. */
function closeMedia() {
  for (const consumerId of [...state.consumers.keys()]) closeConsumer(consumerId);
  for (const peerId of [...state.peers.keys()]) removePeer(peerId);
  for (const producer of state.producers.values()) producer.close();
  state.producers.clear();
  for (const dataConsumerId of [...state.data.consumers.keys()]) closeDataConsumer(dataConsumerId);
  for (const dataProducer of state.data.producers.values()) dataProducer.close();
  state.data.producers.clear();
  state.data.chatProducer = null;
  state.sendTransport?.close();
  state.recvTransport?.close();
  state.sendTransport = null;
  state.recvTransport = null;
  state.leftPeers.clear();
  setSpeaker(null);
}

/** Leaves the room (telling the server, so the others see it at once) and ends the call. */
function leave(reason) {
  if (state.phase === 'left') return;
  if (state.protoo?.connected) {
    // Fire and forget: the WebSocket sends it before its close frame.
    state.protoo.request('leaveRoom').catch(() => {});
  }
  endCall(reason);
}

function endCall(reason) {
  state.phase = 'left'; // first, so the signaling close is not taken for a loss
  clearTimeout(state.reconnectTimer);
  closeMedia();
  for (const kind of ['audio', 'video', 'screen']) {
    state.tracks[kind]?.stop();
    state.tracks[kind] = null;
  }
  $('local-video').srcObject = null;
  const protoo = state.protoo;
  state.protoo = null;
  protoo?.close();
  state.sessionToken = null;
  setStatus('left', reason);
  log(reason);
  $('call').hidden = true;
  $('join-form').hidden = false;
}

function start(displayName, simulcast, codec) {
  state.displayName = displayName;
  state.simulcast = simulcast;
  state.codec = codec;
  state.svc = codec === 'vp9' && params.get('svc') === '1';
  state.joinStartedAt = performance.now();
  state.errors = [];
  state.phase = 'connecting';
  $('join-form').hidden = true;
  $('call').hidden = false;
  $('local-name').textContent = `${displayName} (me)`;
  setStatus('connecting', 'connecting…');
  connect(null);
  startStatsLoop();
}

// ---------------------------------------------------------------------------
// Stats for tests and diagnosis

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
      spatialLayer: entry.spatialLayer,
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
          codec: s.codecId ? report.get(s.codecId)?.mimeType ?? null : null,
          scalabilityMode: s.scalabilityMode ?? null,
          encoderImplementation: s.encoderImplementation ?? null,
        });
      }
    });
  }
  return out;
}

/** The server's view (`getConsumerStats` / `getProducerStats` / `getTransportStats`). */
async function serverStats() {
  if (!state.protoo) return null;
  const ask = (method, data) => request(method, data).then((r) => r.stats, (e) => `error: ${e.message}`);
  const out = { consumers: {}, producers: {}, transports: {} };
  for (const [id, entry] of state.consumers) out.consumers[`${entry.kind} ${id}`] = await ask('getConsumerStats', { consumerId: id });
  for (const [kind, producer] of state.producers) out.producers[kind] = await ask('getProducerStats', { producerId: producer.id });
  for (const t of [state.sendTransport, state.recvTransport]) {
    if (t) out.transports[t.direction] = await ask('getTransportStats', { transportId: t.id });
  }
  return out;
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
  sendChat,
  /** Opens a data producer (options of mediasoup-client's produceData); resolves its id once open. */
  produceData: async (options) => {
    const dataProducer = await produceData(options);
    if (dataProducer.readyState !== 'open') {
      await new Promise((resolve, reject) => {
        dataProducer.on('open', resolve);
        dataProducer.on('error', reject);
      });
    }
    return dataProducer.id;
  },
  /** Sends each of `messages` on data producer `id` at once; returns the bytes still buffered. */
  sendData: (id, messages) => {
    const dataProducer = state.data.producers.get(id);
    for (const m of messages) dataProducer.send(m);
    return dataProducer.bufferedAmount;
  },
  closeDataProducer: (id) => {
    state.data.producers.get(id)?.close();
    state.data.producers.delete(id);
    return request('closeDataProducer', { dataProducerId: id });
  },
  /** What our data consumers of data producer `dataProducerId` received, and whether they closed. */
  dataReceived: (dataProducerId) => {
    const entries = [...state.data.consumers.values()].filter((e) => e.dataProducerId === dataProducerId);
    return {
      consumers: entries.length,
      open: entries.filter((e) => e.dataConsumer.readyState === 'open').length,
      messages: entries.flatMap((e) => e.messages.map((m) => (typeof m.data === 'string' ? m.data : `binary:${m.data.byteLength}`))),
      closed: (state.data.closedProducerIds ?? []).includes(dataProducerId),
    };
  },
  /** Drops the signaling WebSocket as a network loss would; no reconnection for `holdMs`. */
  dropSignaling: ({ holdMs = 0 } = {}) => {
    state.holdReconnectUntil = performance.now() + holdMs;
    state.socket?.ws.close(4001, 'dropped by test');
  },
};

// ---------------------------------------------------------------------------
// UI

function shareLink() {
  const url = new URL(location.href);
  url.searchParams.delete('name');
  url.searchParams.delete('ws');
  if (params.get('ws')) url.searchParams.set('ws', params.get('ws'));
  return url.href;
}

$('room-label').textContent = `room ${roomId}`;
$('share-link').value = shareLink();
$('copy-link').addEventListener('click', async () => {
  const input = $('share-link');
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand('copy');
  }
  $('copy-link').textContent = 'Copied';
  setTimeout(() => {
    $('copy-link').textContent = 'Copy link';
  }, 1500);
});
$('simulcast').checked = params.get('simulcast') !== '0';
const urlCodec = (params.get('codec') ?? 'vp8').toLowerCase();
if (!VIDEO_CODECS[urlCodec]) notice(`Unknown codec "${params.get('codec')}" in the URL: use vp8, vp9 or h264. Sending VP8.`);
$('codec').value = VIDEO_CODECS[urlCodec] ? urlCodec : 'vp8';
$('display-name').value = params.get('name') || localStorage.getItem('ferrosoup.displayName') || '';

$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = $('display-name').value.trim() || `guest-${randomId().slice(0, 4)}`;
  localStorage.setItem('ferrosoup.displayName', name);
  start(name, $('simulcast').checked, $('codec').value);
});

$('leave').addEventListener('click', () => leave('You left the room.'));
$('chat-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (sendChat($('chat-input').value.trim())) $('chat-input').value = '';
});
$('toggle-mic').addEventListener('click', () => togglePause('audio'));
$('toggle-cam').addEventListener('click', () => togglePause('video'));
$('toggle-screen').addEventListener('click', () => toggleScreen());
$('toggle-screen').hidden = !navigator.mediaDevices?.getDisplayMedia;
$('camera-select').addEventListener('change', (event) => switchDevice('video', event.target.value));
$('mic-select').addEventListener('change', (event) => switchDevice('audio', event.target.value));
$('retry-media').addEventListener('click', async () => {
  await acquireMedia();
  await produceTrack('video').catch((error) => log(`camera: ${error.message}`, 'error'));
  await produceTrack('audio').catch((error) => log(`microphone: ${error.message}`, 'error'));
});
navigator.mediaDevices?.addEventListener?.('devicechange', () => refreshDeviceLists());

// Closing the tab: leave now, so the others do not wait for the session grace period.
window.addEventListener('pagehide', () => leave('page closed'));

if (params.get('name')) start(params.get('name'), params.get('simulcast') !== '0', $('codec').value);
