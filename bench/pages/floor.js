// The benchmark floor: the best a WebRTC echo can do on this machine.
// pc1 sends the fake microphone mixed with a burst oscillator (the demo
// page's send graph), pc2 in the same page sends its received track straight
// back, pc1 times each burst's return on the audio clock. The constants and
// the detector are the demo page's (src/talkwire/web/app.js), so the two
// figures differ only by what sits between the peers.
"use strict";

(() => {
  const THRESHOLD = 0.02;
  const QUIET_MS = 120;
  const BURST_HZ = 1000;
  const BURST_MS = 40;
  const BURST_GAIN = 0.5;
  const BURST_TIMEOUT_MS = 1500;

  const DETECTOR = `
    class FloorOnset extends AudioWorkletProcessor {
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
            this.port.postMessage({ kind: "loud", t });
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
    registerProcessor("floor-onset", FloorOnset);
  `;

  const floor = { state: "idle", error: null, timings: {}, latency: null, loud: false, pc1: null, pc2: null };
  window.floor = floor;

  let ctx = null;
  let workletReady = null;
  let call = null;

  const now = () => performance.now();

  function mark(key) {
    if (!call || call.t0 === null || key in floor.timings) return;
    floor.timings[key] = Math.round((now() - call.t0) * 10) / 10;
  }

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

  function onDetector(msg) {
    if (!call) return;
    if (msg.kind === "loud") {
      floor.loud = true;
      mark("firstAudio");
    } else if (msg.kind === "quiet") {
      floor.loud = false;
    }
    for (const waiter of call.waiters.splice(0)) waiter(msg);
  }

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

  // Candidates go straight across (trickle): the floor pays no gathering wait.
  function wire(from, to) {
    from.onicecandidate = (e) => {
      if (e.candidate) to.addIceCandidate(e.candidate).catch(() => {});
    };
  }

  floor.connect = async () => {
    if (call) return;
    floor.state = "connecting";
    floor.error = null;
    floor.timings = {};
    floor.latency = null;
    floor.loud = false;
    call = { t0: null, mic: null, nodes: [], waiters: [], pc1: null, pc2: null, osc: null };
    const mine = call;
    try {
      const ac = await audioContext();
      mine.mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      const micSource = ac.createMediaStreamSource(mine.mic);
      const micGain = ac.createGain();
      const osc = ac.createOscillator();
      osc.frequency.value = BURST_HZ;
      const burstGain = ac.createGain();
      burstGain.gain.value = 0;
      const out = ac.createMediaStreamDestination();
      micSource.connect(micGain).connect(out);
      osc.connect(burstGain).connect(out);
      osc.start();
      Object.assign(mine, { micGain, burstGain, osc });
      mine.nodes.push(micSource, micGain, osc, burstGain, out);

      const pc1 = new RTCPeerConnection({ iceServers: [] });
      const pc2 = new RTCPeerConnection({ iceServers: [] });
      Object.assign(mine, { pc1, pc2 });
      Object.assign(floor, { pc1, pc2 });
      wire(pc1, pc2);
      wire(pc2, pc1);
      pc1.ontrack = (e) => {
        const stream = new MediaStream([e.track]);
        document.getElementById("remote").srcObject = stream;
        const source = ac.createMediaStreamSource(stream);
        const detector = new AudioWorkletNode(ac, "floor-onset", {
          processorOptions: { threshold: THRESHOLD, quietFrames: Math.round((QUIET_MS / 1000) * ac.sampleRate) },
        });
        const sink = ac.createGain();
        sink.gain.value = 0;
        source.connect(detector).connect(sink).connect(ac.destination);
        detector.port.onmessage = (m) => onDetector(m.data);
        mine.detector = detector;
        mine.nodes.push(source, detector, sink);
      };
      pc1.oniceconnectionstatechange = () => {
        const s = pc1.iceConnectionState;
        if (s === "connected" || s === "completed") mark("ice");
      };
      pc1.onconnectionstatechange = () => {
        if (pc1.connectionState === "connected") {
          mark("dtls");
          if (call === mine) floor.state = "connected";
        } else if (pc1.connectionState === "failed") {
          floor.error = "pc1 failed";
          floor.state = "failed";
        }
      };
      pc1.addTrack(out.stream.getAudioTracks()[0], out.stream);

      const offer = await pc1.createOffer();
      await pc1.setLocalDescription(offer);
      // Same instant as the demo page's t0: the offer exists, the "POST" starts.
      mine.t0 = now();
      await pc2.setRemoteDescription(offer);
      // pc2 echoes: its one transceiver sends back the track it receives.
      const echo = pc2.getTransceivers()[0];
      await echo.sender.replaceTrack(echo.receiver.track);
      echo.direction = "sendrecv";
      const answer = await pc2.createAnswer();
      await pc2.setLocalDescription(answer);
      mark("answer");
      await pc1.setRemoteDescription(answer);
    } catch (err) {
      floor.error = String(err && err.message ? err.message : err);
      floor.state = "failed";
    }
  };

  floor.hangup = () => {
    const mine = call;
    call = null;
    if (!mine) return;
    for (const waiter of mine.waiters.splice(0)) waiter({ kind: "closed" });
    for (const pc of [mine.pc1, mine.pc2]) if (pc) pc.close();
    if (mine.mic) for (const track of mine.mic.getTracks()) track.stop();
    for (const node of mine.nodes) node.disconnect();
    if (mine.osc) mine.osc.stop();
    document.getElementById("remote").srcObject = null;
    floor.state = "closed";
  };

  const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

  floor.measureLatency = async (n = 10) => {
    const mine = call;
    if (!mine || floor.state !== "connected" || !mine.detector) return null;
    const samples = [];
    let lost = 0;
    mine.micGain.gain.value = 0;
    try {
      for (let i = 0; i < n && call === mine; i++) {
        if (floor.loud && !(await nextDetector("quiet", BURST_TIMEOUT_MS))) {
          lost += 1;
          continue;
        }
        const at = ctx.currentTime + 0.03;
        mine.detector.port.postMessage({ armAt: at });
        mine.burstGain.gain.setValueAtTime(BURST_GAIN, at);
        mine.burstGain.gain.setValueAtTime(0, at + BURST_MS / 1000);
        const hit = await nextDetector("hit", BURST_TIMEOUT_MS);
        if (hit) samples.push(Math.round((hit.t - at) * 10000) / 10);
        else lost += 1;
      }
      if (call === mine && floor.loud) await nextDetector("quiet", BURST_TIMEOUT_MS);
    } finally {
      if (call === mine) mine.micGain.gain.value = 1;
    }
    const sorted = [...samples].sort((a, b) => a - b);
    floor.latency = {
      n, samples, lost,
      p50: sorted.length ? percentile(sorted, 50) : null,
      p95: sorted.length ? percentile(sorted, 95) : null,
    };
    return floor.latency;
  };
})();
