// Load generator: many echo calls from one page, each a peer connection the
// way the demo page makes one (fake microphone track, `oai-events` data
// channel, its own offer POSTed to /v1/realtime/calls). Chromium encodes
// each call's Opus natively, so one page carries far more calls than Python
// clients would. The echoed audio is received but not rendered.
"use strict";

(() => {
  const load = {
    base: null,
    key: null,
    calls: [], // {pc, dc, url, state}
    connected: 0,
    failed: 0,
    errors: [], // first few error messages
  };
  window.load = load;

  const MAX_ERRORS = 20;
  let mic = null;

  function error(message) {
    if (load.errors.length < MAX_ERRORS) load.errors.push(message);
  }

  async function microphone() {
    if (!mic) {
      mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    }
    return mic;
  }

  async function openOne() {
    const stream = await microphone();
    const pc = new RTCPeerConnection({ iceServers: [] });
    const entry = { pc, dc: null, url: null, state: "connecting", counted: false, refused: false };
    load.calls.push(entry);
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === "connected" && !entry.counted) {
        entry.counted = true;
        load.connected += 1;
      } else if ((s === "failed" || s === "closed") && entry.counted) {
        entry.counted = false;
        load.connected -= 1;
      }
      if (s === "failed") {
        load.failed += 1;
        error("connection failed");
      }
      entry.state = s;
    };
    pc.addTrack(stream.getAudioTracks()[0], stream);
    entry.dc = pc.createDataChannel("oai-events");
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const response = await fetch(`${load.base}/v1/realtime/calls`, {
      method: "POST",
      body: offer.sdp,
      headers: { Authorization: `Bearer ${load.key}`, "Content-Type": "application/sdp" },
    });
    const answer = await response.text();
    if (response.status !== 201) {
      load.failed += 1;
      error(`POST /v1/realtime/calls: ${response.status} ${answer.slice(0, 200)}`);
      entry.state = "rejected";
      entry.refused = response.status === 503; // admission: no transceiver has room
      pc.close();
      return;
    }
    entry.url = new URL(response.headers.get("Location"), load.base).href;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  }

  // Opens calls until `total` exist, at most `parallel` offers in flight.
  load.openUntil = async (base, key, total, parallel = 4) => {
    load.base = base;
    load.key = key;
    const wanted = total - load.calls.length;
    let next = 0;
    async function worker() {
      while (next < wanted) {
        next += 1;
        try {
          await openOne();
        } catch (err) {
          load.failed += 1;
          error(String(err && err.message ? err.message : err));
        }
      }
    }
    await Promise.all(Array.from({ length: Math.max(0, Math.min(parallel, wanted)) }, worker));
    return load.calls.length;
  };

  // Calls still coming up (neither connected nor given up).
  load.pending = () =>
    load.calls.filter((e) => !["connected", "failed", "closed", "rejected"].includes(e.state)).length;

  // Per live call (keyed by its call URL): [packets sent, packets received, packets lost].
  load.rtpByCall = async () => {
    const out = {};
    for (const { pc, url } of load.calls) {
      if (pc.connectionState !== "connected" || !url) continue;
      const row = [0, 0, 0];
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === "outbound-rtp" && s.kind === "audio") row[0] += s.packetsSent || 0;
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          row[1] += s.packetsReceived || 0;
          row[2] += s.packetsLost || 0;
        }
      });
      out[url] = row;
    }
    return out;
  };

  // Hangs up the newest calls until `total` are left: the server's hangup first,
  // then the peer connection. Resolves with how many it hung up.
  load.closeDownTo = async (total) => {
    // Calls the server ended (or that never came up) go first, then the newest.
    const dead = (e) => e.state === "failed" || e.state === "closed" || e.state === "rejected";
    const live = load.calls.filter((e) => !dead(e));
    const calls = [...load.calls.filter(dead), ...live.splice(Math.max(0, total))];
    load.calls = live;
    await Promise.all(
      calls.map(async (entry) => {
        if (entry.url) {
          try {
            await fetch(`${entry.url}/hangup`, { method: "POST", headers: { Authorization: `Bearer ${load.key}` } });
          } catch (err) {
            error(`hangup: ${err}`);
          }
        }
        if (entry.counted) load.connected -= 1;
        entry.counted = false;
        entry.pc.close(); // close() fires no connectionstatechange: counted above
      }),
    );
    return calls.length;
  };
})();
