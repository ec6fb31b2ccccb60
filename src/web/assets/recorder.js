// Recording: MediaRecorder with a chunk every second written straight to
// IndexedDB, a timer, and a live level meter.

import * as store from './store.js';

const CHUNK_MS = 1000;

/** The best container this browser records (Chrome/Firefox: WebM/Opus; Safari: MP4). */
function pickMimeType() {
  const candidates = ['audio/webm;codecs=opus', 'audio/webm', 'audio/mp4', 'audio/ogg;codecs=opus'];
  for (const type of candidates) {
    if (window.MediaRecorder && MediaRecorder.isTypeSupported(type)) return type;
  }
  return '';
}

/** One dictation being recorded. */
export class Recorder {
  constructor({ patientId, onTick, onLevel, onError }) {
    this.patientId = patientId;
    this.onTick = onTick || (() => {});
    this.onLevel = onLevel || (() => {});
    this.onError = onError || (() => {});
    this.key = crypto.randomUUID();
    this.seq = 0;
    this.elapsedMs = 0;
    this.startedAt = 0;
    this.writes = Promise.resolve();
  }

  /** Asks for the microphone and starts recording. */
  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const mimeType = pickMimeType();
    this.recorder = new MediaRecorder(this.stream, mimeType ? { mimeType } : undefined);
    this.mimeType = this.recorder.mimeType || mimeType || 'audio/webm';
    await store.createDictation({
      key: this.key,
      patient_id: this.patientId,
      created_at: new Date().toISOString(),
      state: store.State.RECORDING,
      mime_type: this.mimeType,
      bytes: 0,
      chunks: 0,
      duration_seconds: 0,
      heartbeat_at: Date.now(),
    });
    this.recorder.ondataavailable = (event) => {
      if (!event.data || event.data.size === 0) return;
      const seq = this.seq++;
      // Writes are chained so chunks land in order, each with a heartbeat.
      this.writes = this.writes
        .then(() => store.appendChunk(this.key, seq, event.data, Date.now()))
        .catch((e) => this.onError(e));
    };
    this.recorder.start(CHUNK_MS);
    this.startedAt = performance.now();
    this.ticker = setInterval(() => this.tick(), 250);
    this.meter();
  }

  get state() {
    return this.recorder ? this.recorder.state : 'inactive';
  }

  elapsed() {
    return this.elapsedMs + (this.recorder && this.recorder.state === 'recording' ? performance.now() - this.startedAt : 0);
  }

  tick() {
    this.onTick(this.elapsed());
    // A heartbeat even when paused (no chunks arrive): the dictation is not abandoned.
    if (this.recorder && this.recorder.state === 'paused') {
      store.updateDictation(this.key, { heartbeat_at: Date.now() }).catch(() => {});
    }
  }

  pause() {
    if (this.recorder.state !== 'recording') return;
    this.recorder.pause();
    this.elapsedMs += performance.now() - this.startedAt;
  }

  resume() {
    if (this.recorder.state !== 'paused') return;
    this.recorder.resume();
    this.startedAt = performance.now();
  }

  /** Stops; resolves once every chunk is stored. The dictation goes to review. */
  async stop() {
    const stopped = new Promise((resolve) => {
      this.recorder.onstop = resolve;
    });
    if (this.recorder.state === 'recording') this.elapsedMs += performance.now() - this.startedAt;
    this.recorder.stop();
    await stopped;
    await this.writes;
    clearInterval(this.ticker);
    this.release();
    return store.updateDictation(this.key, {
      state: store.State.REVIEW,
      duration_seconds: Math.max(1, Math.round(this.elapsedMs / 1000)),
      heartbeat_at: Date.now(),
    });
  }

  /** Releases the microphone and the meter. */
  release() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.audioContext) this.audioContext.close().catch(() => {});
    cancelAnimationFrame(this.frame);
  }

  meter() {
    try {
      this.audioContext = new AudioContext();
      const source = this.audioContext.createMediaStreamSource(this.stream);
      const analyser = this.audioContext.createAnalyser();
      analyser.fftSize = 512;
      source.connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      const draw = () => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const s of samples) sum += s * s;
        this.onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4));
        this.frame = requestAnimationFrame(draw);
      };
      draw();
    } catch {
      // No meter is no reason not to record.
    }
  }
}
