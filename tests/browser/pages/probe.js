// Test instrumentation for quickstart.html: records what the unmodified
// quick-start does (its peer connection, its data channel's events, the
// HTTP answers it reads) and measures the audio it receives with WebAudio.
"use strict";

(() => {
  const probe = {
    events: [],
    eventCounts: {},
    responses: [], // {url, status, location}: what the page could read
    errors: [],
    pc: null,
    analyser: null,
    ctx: null,
  };
  window.probe = probe;

  window.addEventListener("error", (e) => probe.errors.push(String(e.message)));
  window.addEventListener("unhandledrejection", (e) => probe.errors.push(String(e.reason)));

  const nativeFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const response = await nativeFetch(input, init);
    probe.responses.push({
      url: String(input),
      status: response.status,
      // Readable cross-origin only if the server exposes it (CORS).
      location: response.headers.get("Location"),
    });
    return response;
  };

  const NativePC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePC {
    constructor(...args) {
      super(...args);
      probe.pc = this;
      this.addEventListener("track", (e) => attach(e.streams[0] || new MediaStream([e.track])));
    }

    createDataChannel(...args) {
      const dc = super.createDataChannel(...args);
      dc.addEventListener("message", (e) => {
        const event = JSON.parse(e.data);
        probe.events.push(event);
        probe.eventCounts[event.type] = (probe.eventCounts[event.type] || 0) + 1;
      });
      return dc;
    }
  };

  function attach(stream) {
    if (probe.analyser) return;
    probe.ctx = new AudioContext();
    probe.analyser = probe.ctx.createAnalyser();
    probe.analyser.fftSize = 8192;
    probe.analyser.smoothingTimeConstant = 0;
    probe.ctx.createMediaStreamSource(stream).connect(probe.analyser);
  }

  // Same shape as the demo page's talkwire.spectrum().
  probe.spectrum = () => {
    const a = probe.analyser;
    if (!a) return { peakHz: null, peakDb: null, rms: 0 };
    const bins = new Float32Array(a.frequencyBinCount);
    a.getFloatFrequencyData(bins);
    let best = 2;
    for (let i = 3; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    const wave = new Float32Array(a.fftSize);
    a.getFloatTimeDomainData(wave);
    let sum = 0;
    for (const x of wave) sum += x * x;
    return {
      peakHz: (best * probe.ctx.sampleRate) / a.fftSize,
      peakDb: bins[best],
      rms: Math.sqrt(sum / wave.length),
    };
  };
})();
