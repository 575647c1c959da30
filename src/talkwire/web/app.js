// talkwire demo page: one call to an agent over WebRTC, the way an app would
// make it (ephemeral key from its backend, SDP offer POSTed to
// /v1/realtime/calls), plus measurements of that call. Everything a test
// needs is on window.talkwire, as numbers, so nothing scrapes the DOM.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  // RMS that counts as "sound": well above decoded Opus silence, well below
  // the tones and speech this page measures (-34 dBFS).
  const THRESHOLD = 0.02;
  // The agent's audio is "quiet" again after this long below the threshold;
  // bridges the gaps between syllables and Opus packet-loss concealment.
  const QUIET_MS = 120;
  const BURST_HZ = 1000;
  const BURST_MS = 40;
  const BURST_GAIN = 0.5;
  const BURST_TIMEOUT_MS = 1500;
  const MAX_EVENTS = 2000;
  const MAX_LOG_ROWS = 300;
  const METER_MS = 50;
  const STATS_MS = 1000;

  // Runs on the audio thread: per 128-frame block of the agent's audio, it
  // reports when sound starts and stops, and the exact frame at which a
  // sound first follows an armed time (the return of a latency burst).
  const DETECTOR = `
    class TalkwireOnset extends AudioWorkletProcessor {
      constructor(options) {
        super();
        this.threshold = options.processorOptions.threshold;
        this.quietFrames = options.processorOptions.quietFrames;
        this.loud = false;
        this.quiet = 0;
        this.armAt = Infinity;
        this.port.onmessage = (e) => { this.armAt = e.data.armAt; };
      }
      process(inputs) {
        const ch = inputs[0] && inputs[0][0];
        if (!ch) return true;
        let sum = 0;
        for (let i = 0; i < ch.length; i++) sum += ch[i] * ch[i];
        const rms = Math.sqrt(sum / ch.length);
        const t = currentFrame / sampleRate;
        if (rms >= this.threshold) {
          this.quiet = 0;
          if (!this.loud) {
            this.loud = true;
            this.port.postMessage({ kind: "loud", t, rms });
          }
          if (t + ch.length / sampleRate >= this.armAt) {
            let i = 0;
            while (i < ch.length - 1 && Math.abs(ch[i]) < this.threshold) i++;
            this.port.postMessage({ kind: "hit", t: t + i / sampleRate });
            this.armAt = Infinity;
          }
        } else if (this.loud) {
          this.quiet += ch.length;
          if (this.quiet >= this.quietFrames) {
            this.loud = false;
            this.port.postMessage({ kind: "quiet", t });
          }
        }
        return true;
      }
    }
    registerProcessor("talkwire-onset", TalkwireOnset);
  `;

  const tw = {
    state: "idle", // idle | connecting | connected | closed | failed
    error: null,
    model: params.get("model") || "", // empty: the server's default (see loadConfig)
    models: [],
    defaultModel: null,
    aec: params.get("aec") !== "0",
    callUrl: null,
    hangupStatus: null,
    timings: {}, // ms after the offer POST started: answer, ice, dtls, channel, firstAudio
    iceStates: [],
    connectionStates: [],
    events: [], // {t, type, event}, oldest first, at most MAX_EVENTS
    eventCounts: {},
    offerSdp: null,
    answerSdp: null,
    ufrags: { local: null, remote: null }, // as negotiated; see currentUfrags()
    path: { answer: [], selected: null, local: null },
    levels: { mic: 0, remote: 0 }, // RMS, 0..1
    remote: { loud: false, onsets: 0, silences: 0 },
    transcript: [], // conversation lines; see tw.conversation()
    latency: null, // {n, samples, lost, p50, p95, min, max}
    measuring: false,
    pc: null,
    dc: null,
  };
  window.talkwire = tw;

  let ctx = null; // one AudioContext for the page's lifetime
  let workletReady = null;
  let call = null; // everything one call owns, released by teardown()

  const now = () => performance.now();
  const since = () => (call && call.t0 !== null ? now() - call.t0 : null);

  function setState(state, message = "") {
    tw.state = state;
    const pill = $("status");
    pill.dataset.state = state;
    pill.textContent = state;
    $("connect").disabled = state === "connecting" || state === "connected";
    $("hangup").disabled = !(state === "connecting" || state === "connected");
    $("measure").disabled = state !== "connected" || tw.measuring;
    $("model").disabled = $("aec").disabled = state === "connecting" || state === "connected";
    say(message, state === "failed");
  }

  function say(text, isError = false) {
    const el = $("message");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  function mark(key) {
    const t = since();
    if (t === null || key in tw.timings) return;
    tw.timings[key] = Math.round(t * 10) / 10;
    renderTimings();
  }

  function renderTimings() {
    // Scaled to the connection steps: first audio waits for the user to
    // speak, so its bar may run off the end.
    const steps = ["answer", "ice", "dtls", "channel"].map((k) => tw.timings[k] || 0);
    const scale = Math.max(100, ...steps);
    for (const row of document.querySelectorAll(".timings tr")) {
      const v = tw.timings[row.dataset.key];
      const bar = row.querySelector("i");
      row.querySelector(".ms").textContent = v === undefined ? "–" : v.toFixed(1);
      bar.style.width = v === undefined ? "0" : `${Math.min(100, (100 * v) / scale)}%`;
      bar.classList.toggle("over", v !== undefined && v > scale);
    }
  }

  // -- events -------------------------------------------------------------

  function record(type, event, local = false) {
    const t = since();
    tw.events.push({ t, type, event });
    if (tw.events.length > MAX_EVENTS) tw.events.splice(0, tw.events.length - MAX_EVENTS);
    tw.eventCounts[type] = (tw.eventCounts[type] || 0) + 1;
    $("event-count").textContent = String(Object.values(tw.eventCounts).reduce((a, b) => a + b, 0));

    const li = document.createElement("li");
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    const time = document.createElement("time");
    time.textContent = t === null ? "" : `${t.toFixed(0)} ms`;
    const name = document.createElement("span");
    name.className = "type" + (type === "error" ? " error" : "") + (local ? " local" : "");
    name.textContent = type;
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(event, null, 2);
    summary.append(time, name);
    details.append(summary, pre);
    li.append(details);
    const log = $("log");
    log.prepend(li);
    while (log.children.length > MAX_LOG_ROWS) log.lastElementChild.remove();
  }

  function onMessage(e) {
    let event;
    try {
      event = JSON.parse(e.data);
    } catch {
      record("(unparsable message)", { data: String(e.data).slice(0, 200) }, true);
      return;
    }
    record(typeof event.type === "string" ? event.type : "(no type)", event);
    if (event && typeof event.type === "string") onTranscriptEvent(event);
  }

  // -- transcript -----------------------------------------------------------

  // One line per conversation item, filled by deltas, fixed by the final text.
  function transcriptLine(itemId, role) {
    let line = tw.transcript.find((l) => l.itemId === itemId);
    if (!line) {
      line = { itemId, role, text: "", final: false, truncated: false, el: null };
      tw.transcript.push(line);
      const li = document.createElement("li");
      li.className = role;
      $("transcript").append(li);
      line.el = li;
    }
    return line;
  }

  function renderLine(line) {
    line.el.textContent = line.text || "…";
    line.el.classList.toggle("pending", !line.final);
    line.el.classList.toggle("truncated", line.truncated);
    const box = $("transcript");
    box.scrollTop = box.scrollHeight;
  }

  function onTranscriptEvent(e) {
    switch (e.type) {
      case "input_audio_buffer.speech_started":
        renderLine(transcriptLine(e.item_id, "user"));
        break;
      case "conversation.item.input_audio_transcription.delta": {
        const line = transcriptLine(e.item_id, "user");
        if (!line.final) line.text += e.delta || "";
        renderLine(line);
        break;
      }
      case "conversation.item.input_audio_transcription.completed": {
        const line = transcriptLine(e.item_id, "user");
        Object.assign(line, { text: e.transcript || "", final: true });
        renderLine(line);
        break;
      }
      case "input_audio_buffer.cleared": {
        // Noise or a cough: the line that speech started goes away.
        for (const line of tw.transcript.filter((l) => l.role === "user" && !l.final)) {
          line.el.remove();
          tw.transcript.splice(tw.transcript.indexOf(line), 1);
        }
        break;
      }
      case "response.output_audio_transcript.delta": {
        const line = transcriptLine(e.item_id, "assistant");
        line.text += e.delta || "";
        renderLine(line);
        break;
      }
      case "response.output_audio_transcript.done": {
        const line = transcriptLine(e.item_id, "assistant");
        Object.assign(line, { text: (e.transcript || "").trim(), final: true });
        renderLine(line);
        break;
      }
      case "conversation.item.truncated": {
        const line = tw.transcript.find((l) => l.itemId === e.item_id);
        if (line) {
          line.truncated = true;
          renderLine(line);
        }
        break;
      }
      default:
        break;
    }
  }

  // Plain lines for tests: [{role, text, final, truncated}], oldest first.
  tw.conversation = () =>
    tw.transcript.map(({ role, text, final, truncated }) => ({ role, text: text.trim(), final, truncated }));

  tw.sendEvent = (event) => {
    if (!tw.dc || tw.dc.readyState !== "open") throw new Error("data channel is not open");
    tw.dc.send(JSON.stringify(event));
    record(`→ ${event.type}`, event, true);
  };

  // -- audio --------------------------------------------------------------

  async function audioContext() {
    if (!ctx) {
      ctx = new AudioContext({ latencyHint: "interactive" });
      const url = URL.createObjectURL(new Blob([DETECTOR], { type: "text/javascript" }));
      workletReady = ctx.audioWorklet.addModule(url).finally(() => URL.revokeObjectURL(url));
    }
    await workletReady;
    if (ctx.state !== "running") await ctx.resume();
    return ctx;
  }

  // The outgoing track is a mix of the microphone and a tone generator, so
  // latency bursts travel exactly the path speech does.
  function buildSendGraph(ac, mic) {
    const micSource = ac.createMediaStreamSource(mic);
    const micGain = ac.createGain();
    const micAnalyser = ac.createAnalyser();
    micAnalyser.fftSize = 2048;
    const osc = ac.createOscillator();
    osc.frequency.value = BURST_HZ;
    const burstGain = ac.createGain();
    burstGain.gain.value = 0;
    const out = ac.createMediaStreamDestination();
    micSource.connect(micGain).connect(out);
    micGain.connect(micAnalyser);
    osc.connect(burstGain).connect(out);
    osc.start();
    const nodes = [micSource, micGain, micAnalyser, osc, burstGain, out];
    return { micGain, micAnalyser, osc, burstGain, out, nodes };
  }

  function buildReceiveGraph(ac, stream) {
    const source = ac.createMediaStreamSource(stream);
    const analyser = ac.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    const detector = new AudioWorkletNode(ac, "talkwire-onset", {
      processorOptions: { threshold: THRESHOLD, quietFrames: Math.round((QUIET_MS / 1000) * ac.sampleRate) },
    });
    // A worklet only runs while something pulls it; its output is silence.
    const sink = ac.createGain();
    sink.gain.value = 0;
    source.connect(analyser);
    source.connect(detector).connect(sink).connect(ac.destination);
    detector.port.onmessage = (e) => onDetector(e.data);
    return { analyser, detector, nodes: [source, analyser, detector, sink] };
  }

  function onDetector(msg) {
    if (!call) return;
    if (msg.kind === "loud") {
      tw.remote.loud = true;
      tw.remote.onsets += 1;
      mark("firstAudio");
    } else if (msg.kind === "quiet") {
      tw.remote.loud = false;
      tw.remote.silences += 1;
      $("peak").textContent = "agent audio peak: –";
    }
    for (const waiter of call.waiters.splice(0)) waiter(msg);
  }

  // Resolves with the next detector message of `kind`, or null after timeoutMs.
  function nextDetector(kind, timeoutMs) {
    return new Promise((resolve) => {
      const owner = call;
      let finished = false;
      const timer = setTimeout(() => done(null), timeoutMs);
      function done(value) {
        finished = true;
        clearTimeout(timer);
        resolve(value);
      }
      function waiter(msg) {
        if (finished) return;
        if (msg.kind === kind) done(msg);
        else if (msg.kind === "closed") done(null);
        else owner.waiters.push(waiter);
      }
      owner.waiters.push(waiter);
    });
  }

  function rms(analyser) {
    const buf = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    return Math.sqrt(sum / buf.length);
  }

  // The loudest frequency in the agent's audio right now (bin-centre Hz).
  tw.spectrum = () => {
    if (!call || !call.recv) return { peakHz: null, peakDb: null, rms: 0 };
    const a = call.recv.analyser;
    const bins = new Float32Array(a.frequencyBinCount);
    a.getFloatFrequencyData(bins);
    let best = 2; // skip DC
    for (let i = 3; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    return { peakHz: (best * ctx.sampleRate) / a.fftSize, peakDb: bins[best], rms: rms(a) };
  };

  const dbfs = (x) => (x > 0 ? 20 * Math.log10(x) : -Infinity);
  function meter(id, level) {
    const db = dbfs(level);
    const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
    $(`meter-${id}`).style.width = `${pct}%`;
    $(`db-${id}`).textContent = Number.isFinite(db) && db > -90 ? `${db.toFixed(0)} dB` : "–";
  }

  function tick() {
    if (!call) return;
    tw.levels.mic = call.send ? rms(call.send.micAnalyser) : 0;
    tw.levels.remote = call.recv ? rms(call.recv.analyser) : 0;
    meter("mic", tw.levels.mic);
    meter("remote", tw.levels.remote);
    if (call.recv && tw.remote.loud) {
      $("peak").textContent = `agent audio peak: ${tw.spectrum().peakHz.toFixed(0)} Hz`;
    }
  }

  // -- path ---------------------------------------------------------------

  function candidatesOf(sdp) {
    const out = [];
    for (const line of sdp.split(/\r?\n/)) {
      const m = /^a=candidate:\S+ (\d+) (\S+) \d+ (\S+) (\d+) typ (\S+)/.exec(line);
      if (m) out.push({ component: +m[1], protocol: m[2].toLowerCase(), address: m[3], port: +m[4], type: m[5] });
    }
    return out;
  }

  const ufragOf = (sdp) => (sdp ? (/^a=ice-ufrag:(\S+)/m.exec(sdp) || [])[1] || null : null);
  const hostPort = (c) => (c.address.includes(":") ? `[${c.address}]:${c.port}` : `${c.address}:${c.port}`);

  tw.currentUfrags = () => ({
    local: ufragOf(tw.pc && tw.pc.localDescription && tw.pc.localDescription.sdp),
    remote: ufragOf(tw.pc && tw.pc.remoteDescription && tw.pc.remoteDescription.sdp),
  });

  async function readSelectedPair() {
    if (!tw.pc) return;
    const stats = await tw.pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return;
    const remote = stats.get(pair.remoteCandidateId);
    const local = stats.get(pair.localCandidateId);
    if (remote && remote.address) {
      tw.path.selected = { address: remote.address, port: remote.port, protocol: remote.protocol, type: remote.candidateType };
      $("path-selected").textContent = `${hostPort(tw.path.selected)} ${remote.protocol} (${remote.candidateType})`;
    }
    if (local && local.address) {
      tw.path.local = { address: local.address, port: local.port, protocol: local.protocol, type: local.candidateType };
      $("path-local").textContent = `${hostPort(tw.path.local)} ${local.protocol} (${local.candidateType})`;
    }
  }

  // -- the call -----------------------------------------------------------

  function errorText(status, body) {
    try {
      const parsed = JSON.parse(body);
      if (parsed.error && parsed.error.message) return `${status}: ${parsed.error.message}`;
    } catch {
      // not JSON: fall through to the raw text
    }
    return `${status}: ${body.slice(0, 200)}`;
  }

  function resetCallState() {
    Object.assign(tw, {
      error: null, callUrl: null, hangupStatus: null, timings: {}, iceStates: [], connectionStates: [],
      events: [], eventCounts: {}, offerSdp: null, answerSdp: null, ufrags: { local: null, remote: null },
      path: { answer: [], selected: null, local: null }, levels: { mic: 0, remote: 0 },
      remote: { loud: false, onsets: 0, silences: 0 }, latency: null, measuring: false, pc: null, dc: null,
      transcript: [],
    });
    $("log").replaceChildren();
    $("transcript").replaceChildren();
    $("event-count").textContent = "0";
    for (const id of ["path-answer", "path-selected", "path-local", "path-call", "rtt"]) $(id).textContent = "–";
    $("peak").textContent = "agent audio peak: –";
    renderTimings();
  }

  tw.connect = async () => {
    if (tw.state === "connecting" || tw.state === "connected") return;
    resetCallState();
    tw.model = $("model").value.trim() || tw.defaultModel || "echo";
    tw.aec = $("aec").checked;
    setState("connecting", "getting a key…");
    call = { t0: null, key: null, mic: null, send: null, recv: null, timers: [], waiters: [] };
    const mine = call;
    try {
      const ac = await audioContext();
      const secret = await fetch("/demo/client_secret", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ session: { type: "realtime", model: tw.model } }),
      });
      const secretBody = await secret.text();
      if (!secret.ok) throw new Error(`client secret: ${errorText(secret.status, secretBody)}`);
      mine.key = JSON.parse(secretBody).value;

      say("opening the microphone…");
      // With speakers, the browser's echo canceller keeps the agent from
      // hearing itself; measurements want the raw signal.
      mine.mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: tw.aec, noiseSuppression: tw.aec, autoGainControl: tw.aec },
      });
      if (call !== mine) throw new Error("hung up");
      mine.send = buildSendGraph(ac, mine.mic);

      const pc = new RTCPeerConnection({ iceServers: [] });
      tw.pc = pc;
      pc.ontrack = (e) => {
        const stream = e.streams[0] || new MediaStream([e.track]);
        // Chrome feeds a remote track to WebAudio only while a media element plays it.
        $("remote").srcObject = stream;
        if (call === mine && !mine.recv) mine.recv = buildReceiveGraph(ac, stream);
      };
      pc.oniceconnectionstatechange = () => {
        tw.iceStates.push(pc.iceConnectionState);
        if (pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed") mark("ice");
      };
      pc.onconnectionstatechange = () => {
        const s = pc.connectionState;
        tw.connectionStates.push(s);
        if (call !== mine) return;
        if (s === "connected") {
          mark("dtls");
          setState("connected", "connected: say something");
          readSelectedPair();
        } else if (s === "failed") {
          fail(new Error("the connection failed"));
        }
      };
      pc.addTrack(mine.send.out.stream.getAudioTracks()[0], mine.send.out.stream);
      const dc = pc.createDataChannel("oai-events");
      tw.dc = dc;
      dc.onopen = () => mark("channel");
      dc.onmessage = onMessage;
      dc.onclose = () => {
        // The channel outlives relay restarts; it closes when the server ends the call.
        if (call === mine && tw.state === "connected") {
          record("(data channel closed)", {}, true);
          teardown();
          setState("closed", "the server ended the call");
        }
      };

      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      tw.offerSdp = offer.sdp;
      say("calling…");
      mine.t0 = now();
      const response = await fetch("/v1/realtime/calls", {
        method: "POST",
        body: offer.sdp,
        headers: { Authorization: `Bearer ${mine.key}`, "Content-Type": "application/sdp" },
      });
      const answer = await response.text();
      if (response.status !== 201) throw new Error(`call: ${errorText(response.status, answer)}`);
      mark("answer");
      tw.answerSdp = answer;
      tw.callUrl = new URL(response.headers.get("Location"), location.href).href;
      tw.path.answer = candidatesOf(answer);
      const shown = [...new Set(tw.path.answer.map((c) => `${hostPort(c)} ${c.protocol}`))];
      $("path-answer").textContent = shown.join(", ") || "none";
      $("path-call").textContent = tw.callUrl.split("/").pop();
      if (call !== mine) throw new Error("hung up");
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      // Both transports are one (BUNDLE); its DTLS state is the precise signal.
      const dtls = pc.getSenders()[0] && pc.getSenders()[0].transport;
      if (dtls) {
        dtls.onstatechange = () => dtls.state === "connected" && mark("dtls");
      }
      tw.ufrags = tw.currentUfrags();
      mine.timers.push(setInterval(tick, METER_MS), setInterval(readSelectedPair, STATS_MS));
    } catch (err) {
      if (call === mine) fail(err);
    }
  };

  function fail(err) {
    tw.error = String(err && err.message ? err.message : err);
    const url = tw.callUrl;
    const key = call && call.key;
    teardown();
    setState("failed", tw.error);
    if (url) postHangup(url, key);
  }

  async function postHangup(url, key) {
    try {
      const r = await fetch(`${url}/hangup`, {
        method: "POST",
        headers: { Authorization: `Bearer ${key}` },
        keepalive: true, // still sent when the page is going away
      });
      tw.hangupStatus = r.status;
    } catch (err) {
      tw.hangupStatus = 0;
    }
  }

  function teardown() {
    const mine = call;
    call = null;
    if (!mine) return;
    for (const t of mine.timers) clearInterval(t);
    for (const waiter of mine.waiters.splice(0)) waiter({ kind: "closed" });
    if (tw.pc) tw.pc.close();
    if (mine.mic) for (const track of mine.mic.getTracks()) track.stop();
    for (const graph of [mine.send, mine.recv]) {
      if (!graph) continue;
      for (const node of graph.nodes) node.disconnect();
      if (graph.osc) graph.osc.stop();
    }
    $("remote").srcObject = null;
    tw.levels = { mic: 0, remote: 0 };
    meter("mic", 0);
    meter("remote", 0);
  }

  // Ends the call on the server first (that is what the hangup is for), then locally.
  tw.hangup = async () => {
    if (!call) return;
    const url = tw.callUrl;
    const key = call.key;
    if (url) await postHangup(url, key);
    teardown();
    setState("closed", tw.hangupStatus ? `hung up (${tw.hangupStatus})` : "hung up");
  };

  // -- latency ------------------------------------------------------------

  const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

  // Plays n short bursts into the outgoing track and times each one's return
  // on the audio clock (both ends are frames of the same AudioContext).
  tw.measureLatency = async (n = 10) => {
    if (tw.state !== "connected" || tw.measuring) return tw.latency;
    const mine = call;
    tw.measuring = true;
    $("measure").disabled = true;
    say("measuring: the microphone is muted for a moment…");
    const { micGain, burstGain } = mine.send;
    const samples = [];
    let lost = 0;
    micGain.gain.value = 0;
    try {
      for (let i = 0; i < n && call === mine; i++) {
        if (tw.remote.loud && !(await nextDetector("quiet", BURST_TIMEOUT_MS))) {
          lost += 1;
          continue;
        }
        const at = ctx.currentTime + 0.03;
        mine.recv.detector.port.postMessage({ armAt: at });
        burstGain.gain.setValueAtTime(BURST_GAIN, at);
        burstGain.gain.setValueAtTime(0, at + BURST_MS / 1000);
        const hit = await nextDetector("hit", BURST_TIMEOUT_MS);
        if (hit) {
          samples.push(Math.round((hit.t - at) * 10000) / 10);
          $("rtt").textContent = samples[samples.length - 1].toFixed(0);
        } else {
          lost += 1;
        }
      }
      // Let the last burst's echo finish before the microphone is live again.
      if (call === mine && tw.remote.loud) await nextDetector("quiet", BURST_TIMEOUT_MS);
    } finally {
      if (call === mine) micGain.gain.value = 1;
      tw.measuring = false;
    }
    const sorted = [...samples].sort((a, b) => a - b);
    tw.latency = {
      n, samples, lost,
      p50: sorted.length ? percentile(sorted, 50) : null,
      p95: sorted.length ? percentile(sorted, 95) : null,
      min: sorted.length ? sorted[0] : null,
      max: sorted.length ? sorted[sorted.length - 1] : null,
    };
    if (call === mine) {
      $("rtt").textContent = tw.latency.p50 === null ? "–" : tw.latency.p50.toFixed(0);
      $("rtt-detail").textContent = tw.latency.p50 === null
        ? `no burst came back (${lost} lost)`
        : `${samples.length} bursts, min ${tw.latency.min.toFixed(0)} · p95 ${tw.latency.p95.toFixed(0)} · max ${tw.latency.max.toFixed(0)} ms` +
          (lost ? ` · ${lost} lost` : "");
      setState("connected", "");
    }
    return tw.latency;
  };

  // -- wiring -------------------------------------------------------------

  // The server's models, its default preselected (the voice agent when it runs).
  async function loadConfig() {
    try {
      const r = await fetch("/demo/config");
      if (!r.ok) return;
      const config = await r.json();
      tw.models = config.models || [];
      tw.defaultModel = config.default_model || null;
      $("models").replaceChildren(...tw.models.map((m) => Object.assign(document.createElement("option"), { value: m })));
      if (!tw.model && tw.defaultModel) $("model").value = tw.model = tw.defaultModel;
    } catch {
      // an older server: the field stays as it is
    }
  }
  tw.configLoaded = loadConfig();

  $("model").value = tw.model;
  $("aec").checked = tw.aec;
  $("connect").onclick = () => tw.connect();
  $("hangup").onclick = () => tw.hangup();
  $("measure").onclick = () => tw.measureLatency();
  window.addEventListener("pagehide", () => {
    if (tw.callUrl && call) postHangup(tw.callUrl, call.key);
  });
  setState("idle", "Press Connect and speak: the agent answers over WebRTC, through the relay.");
})();
