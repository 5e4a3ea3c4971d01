// A join's timeline as the page sees it, the same for any server speaking PROTOCOL.md:
// `installTimeline(context)` records, in every page whose URL has `timeline=1`, each
// signaling message (requests and their answers, notifications), each peer connection's
// state changes and, polled every 20 ms, when each inbound RTP stream got its first packet,
// first decoded frame and each keyframe request (PLI/FIR) it sent; `readTimeline(page)`
// turns them into lines relative to the page's join, one block per remote peer.

/** Runs in the page before its scripts. */
function recorder() {
  if (!new URLSearchParams(location.search).has('timeline')) return;
  const events = [];
  const now = () => Math.round((performance.timeOrigin + performance.now()) * 10) / 10;
  const rec = (type, data) => events.push({ t: now(), type, ...data });
  window.__timeline = events;

  const NativeWebSocket = window.WebSocket;
  const methods = new Map(); // request id -> method
  const summarize = (m) => {
    if (m.request) {
      methods.set(m.id, m.method);
      const d = m.data ?? {};
      return { msg: 'request', method: m.method, id: m.id, consumerId: d.consumerId, producerId: d.producerId };
    }
    if (m.response) {
      const d = m.data ?? {};
      return {
        msg: 'response',
        method: methods.get(m.id),
        id: m.id,
        ok: m.ok,
        consumerId: d.id,
        producerId: d.producerId,
        kind: d.kind,
        ssrc: d.rtpParameters?.encodings?.[0]?.ssrc,
        peers: d.peers?.map((p) => ({ peerId: p.peerId, name: p.displayName, producers: p.producers?.map((x) => x.producerId) })),
      };
    }
    if (m.notification) {
      const d = m.data ?? {};
      return { msg: 'notification', method: m.method, consumerId: d.consumerId, spatialLayer: d.spatialLayer };
    }
    return { msg: 'other' };
  };
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      rec('ws', { msg: 'open-start' });
      this.addEventListener('open', () => rec('ws', { msg: 'open' }));
      this.addEventListener('message', (e) => {
        try {
          rec('in', summarize(JSON.parse(e.data)));
        } catch {
          // not JSON
        }
      });
    }
    send(data) {
      try {
        rec('out', summarize(JSON.parse(data)));
      } catch {
        // not JSON
      }
      return super.send(data);
    }
  };

  const NativePC = window.RTCPeerConnection;
  let pcs = 0;
  window.RTCPeerConnection = class extends NativePC {
    constructor(...args) {
      super(...args);
      const pc = this;
      const id = pcs++;
      rec('pc', { pc: id, state: 'created' });
      for (const ev of ['iceconnectionstatechange', 'connectionstatechange']) {
        pc.addEventListener(ev, () => rec('pc', { pc: id, ev, state: ev === 'connectionstatechange' ? pc.connectionState : pc.iceConnectionState }));
      }
      const seen = new Map(); // ssrc -> {packets, frames, pli}
      const poll = async () => {
        if (pc.connectionState === 'closed') return;
        const report = await pc.getStats().catch(() => null);
        report?.forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          const prev = seen.get(s.ssrc) ?? { packets: 0, frames: 0, pli: 0, fir: 0 };
          const cur = { packets: s.packetsReceived ?? 0, frames: s.framesDecoded ?? 0, pli: s.pliCount ?? 0, fir: s.firCount ?? 0 };
          if (prev.packets === 0 && cur.packets > 0) rec('rtp', { pc: id, ssrc: s.ssrc, kind: s.kind, what: 'first packet' });
          if (prev.frames === 0 && cur.frames > 0) rec('rtp', { pc: id, ssrc: s.ssrc, kind: s.kind, what: `first frame (${s.frameWidth}x${s.frameHeight})` });
          if (cur.pli > prev.pli) rec('rtp', { pc: id, ssrc: s.ssrc, kind: s.kind, what: `PLI sent (${cur.pli})` });
          if (cur.fir > prev.fir) rec('rtp', { pc: id, ssrc: s.ssrc, kind: s.kind, what: `FIR sent (${cur.fir})` });
          seen.set(s.ssrc, cur);
        });
        setTimeout(poll, 20);
      };
      setTimeout(poll, 20);
    }
  };
}

/** Records the timeline in every page of `context` opened with `timeline=1`. */
export async function installTimeline(context) {
  await context.addInitScript(recorder);
}

/** The page's timeline as text, times in ms from `joinStart` (epoch ms). */
export async function readTimeline(page, joinStart) {
  const events = await page.eval(() => window.__timeline ?? []);
  const names = new Map(); // producerId -> peer name
  const consumers = new Map(); // consumerId -> {name, kind}
  const bySsrc = new Map(); // ssrc -> {name, kind}
  for (const e of events) {
    if (e.msg === 'response' && e.method === 'joinRoom') {
      for (const p of e.peers ?? []) for (const id of p.producers ?? []) names.set(id, p.name);
    }
        if (e.msg === 'response' && e.method === 'consume' && e.ok) {
      const who = { name: names.get(e.producerId) ?? e.producerId?.slice(0, 8), kind: e.kind };
      consumers.set(e.consumerId, who);
      if (e.ssrc) bySsrc.set(e.ssrc, who);
    }
  }
  const rel = (t) => `${String(Math.round(t - joinStart)).padStart(6)} ms`;
  const label = (e) => {
    switch (e.type) {
      case 'ws':
        return `websocket ${e.msg}`;
      case 'out':
      case 'in': {
        if (e.msg === 'request' && e.type === 'out') {
          const c = consumers.get(e.consumerId);
          const what = c ? ` ${c.name} ${c.kind}` : e.method === 'consume' ? ` ${names.get(e.producerId) ?? ''}` : '';
          return `→ ${e.method}${what} (#${e.id})`;
        }
        if (e.msg === 'response') {
          const c = consumers.get(e.consumerId) ?? consumers.get(e.consumerIdOfRequest);
          return `← ${e.method} answered${c ? ` ${c.name} ${c.kind}` : ''} (#${e.id}${e.ok ? '' : ', error'})`;
        }
        if (e.msg === 'notification') {
          const c = consumers.get(e.consumerId);
          return `← ${e.method}${c ? ` ${c.name} ${c.kind}` : ''}${e.spatialLayer !== undefined ? ` layer ${e.spatialLayer}` : ''}`;
        }
        return `${e.type} ${e.msg} ${e.method ?? ''}`;
      }
      case 'pc':
        return `pc${e.pc} ${e.ev ?? ''} ${e.state}`;
      case 'rtp': {
        const who = bySsrc.get(e.ssrc);
        return `pc${e.pc} ${who ? `${who.name} ${who.kind}` : `ssrc ${e.ssrc} ${e.kind}`}: ${e.what}`;
      }
      default:
        return JSON.stringify(e);
    }
  };
  // Answers to resumeConsumer carry no id: name them after their request.
  const requestOf = new Map();
  for (const e of events) if (e.type === 'out' && e.msg === 'request') requestOf.set(e.id, e);
  for (const e of events) {
    if (e.msg === 'response' && !e.consumerId && requestOf.get(e.id)?.consumerId) e.consumerIdOfRequest = requestOf.get(e.id).consumerId;
  }
  return events
    .filter((e) => !(e.msg === 'notification' && ['activeSpeaker', 'consumerScore', 'producerScore', 'downlinkBwe'].includes(e.method)))
    .map((e) => `${rel(e.t)}  ${label(e)}`)
    .join('\n');
}
