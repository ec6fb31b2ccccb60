// The upload manager: sends every saved dictation to the server, exactly once,
// whenever the app is open and online.
//
// - Chunked and resumable (POST /api/v1/uploads, then PUT with Content-Range
//   from where the server stands), idempotent by local_storage_key: a retry
//   after any failure cannot create a second recording.
// - Network errors and 5xx: retried with exponential backoff and jitter.
// - 4xx: the server refuses the dictation; the error is shown, and it is not
//   retried until the clinician asks (no retry storm).
// - The local audio is deleted only after a response with "durable": true.
// - Only the signed-in user's dictations go, under their session (with its
//   CSRF token); a 401 means this device is signed out: the pass stops and
//   the dictations wait, untouched, for their user to sign in.

import * as session from './session.js';
import * as store from './store.js';

const CHUNK_BYTES = 512 * 1024;
const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 60000;

/** A refusal by the server: not worth retrying as is. */
class Refused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function detail(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === 'string') return body.detail;
    if (Array.isArray(body.detail)) {
      return body.detail.map((d) => `${(d.loc || []).slice(1).join('.')}: ${d.msg}`).join('; ');
    }
  } catch {
    // not JSON
  }
  return `HTTP ${response.status}`;
}

/** The session ended: stop, and wait for a sign-in. */
class SignedOut extends Error {}

/** Throws Refused for a 4xx, SignedOut for a 401, a plain Error for anything retryable. */
async function check(response, allowed) {
  if (allowed.includes(response.status)) return response;
  if (response.status === 401) {
    await session.signedOut();
    throw new SignedOut('signed out');
  }
  const message = await detail(response);
  // A 4xx is final unless the server says to come back (Retry-After: busy, in flight).
  const transient = response.status === 408 || response.status === 429 || response.headers.has('retry-after');
  if (response.status >= 400 && response.status < 500 && !transient) {
    throw new Refused(response.status, message);
  }
  throw new Error(message);
}

export class UploadManager {
  constructor() {
    this.running = false;
    this.failures = 0;
    this.timer = null;
    this.progress = new Map(); // key -> fraction uploaded, for the queue page
    this.listeners = new Set();
    addEventListener('online', () => this.kick());
  }

  onProgress(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  report(key, fraction) {
    this.progress.set(key, fraction);
    for (const fn of this.listeners) fn(key, fraction);
  }

  /** Starts a pass now (no-op if one runs, or offline). */
  kick() {
    clearTimeout(this.timer);
    this.timer = null;
    this.failures = 0;
    this.run();
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), ms);
  }

  async run() {
    if (this.running) return;
    if (!navigator.onLine) return; // the 'online' event kicks us
    this.running = true;
    try {
      // One uploading tab per device: the others wait for the lock.
      if (navigator.locks) {
        await navigator.locks.request('clinscribe-uploads', { ifAvailable: true }, async (lock) => {
          if (lock) await this.pass();
        });
      } else {
        await this.pass();
      }
      this.failures = 0;
    } catch (e) {
      if (e instanceof SignedOut) return; // the next sign-in kicks us
      // Retryable: back off, with jitter so a fleet of devices does not stampede.
      this.failures += 1;
      const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** (this.failures - 1));
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      this.lastError = e.message;
      this.schedule(delay);
    } finally {
      this.running = false;
    }
  }

  /** Uploads every saved dictation of the signed-in user, oldest first. */
  async pass() {
    const user = await session.current();
    if (!user) return; // signed out: they wait
    const pending = (await store.listDictations())
      .filter((d) => d.state === store.State.RECORDED || d.state === store.State.UPLOADING)
      .filter((d) => session.owns(user, d))
      .reverse(); // oldest first
    for (const d of pending) {
      if (!navigator.onLine) break;
      await this.upload(d);
    }
  }

  /** Uploads one dictation to the end (throws on a retryable failure). */
  async upload(d) {
    // One trace per attempt: the server's spans for these requests, and the
    // transcription job the last one queues, join it (W3C Trace Context).
    const trace = randomHex(16);
    try {
      await store.updateDictation(d.key, { state: store.State.UPLOADING, error: null });
      const blob = await store.audioBlob(d.key, d.mime_type);
      if (blob.size === 0) throw new Refused(422, 'The dictation holds no audio');
      const start = await fetch('/api/v1/uploads', {
        method: 'POST',
        headers: await session.withCsrf({ 'content-type': 'application/json', traceparent: traceparent(trace) }),
        body: JSON.stringify({
          local_storage_key: d.key,
          patient_id: d.patient_id,
          duration_seconds: d.duration_seconds || 0,
          total_bytes: blob.size,
          draft_transcript: d.draft_transcript || null,
        }),
      });
      await check(start, [200, 201]);
      let state = await start.json();
      if (state.complete) return this.finish(d, state.recording);
      let offset = state.received_bytes;
      while (offset < blob.size) {
        this.report(d.key, offset / blob.size);
        const end = Math.min(offset + CHUNK_BYTES, blob.size) - 1;
        const response = await fetch(`/api/v1/uploads/${d.key}`, {
          method: 'PUT',
          headers: await session.withCsrf({
            'content-type': 'application/octet-stream',
            'content-range': `bytes ${offset}-${end}/${blob.size}`,
            traceparent: traceparent(trace),
          }),
          body: blob.slice(offset, end + 1),
        });
        if (response.status === 409 && response.headers.has('upload-offset')) {
          // The server holds a different amount (an earlier attempt): resume there.
          offset = Number(response.headers.get('upload-offset'));
          continue;
        }
        await check(response, [200, 201, 202]);
        const body = await response.json();
        if (response.status === 202) {
          offset = body.received_bytes;
        } else {
          return this.finish(d, body);
        }
      }
      throw new Error('upload ended without an acknowledgement');
    } catch (e) {
      if (e instanceof SignedOut) {
        await store.updateDictation(d.key, { state: store.State.RECORDED });
        throw e;
      }
      if (e instanceof Refused) {
        await store.updateDictation(d.key, { state: store.State.ERROR, error: e.message, error_status: e.status });
        this.progress.delete(d.key);
        return undefined;
      }
      await store.updateDictation(d.key, { state: store.State.RECORDED, last_attempt_error: e.message });
      throw e;
    }
  }

  /** The server holds it durably: forget the local audio, keep the record. */
  async finish(d, recording) {
    if (!recording || recording.durable !== true) {
      throw new Error('the server did not confirm a durable upload');
    }
    await store.updateDictation(d.key, {
      state: store.State.UPLOADED,
      recording_id: recording.id,
      server_sha256: recording.audio_sha256,
      uploaded_at: recording.uploaded_at,
      error: null,
    });
    await store.deleteAudio(d.key);
    this.report(d.key, 1);
    return recording;
  }

  /**
   * The clinician asks to send a refused dictation again, possibly with a
   * corrected patient id.
   */
  async retry(key, changes = {}) {
    await store.updateDictation(key, { ...changes, state: store.State.RECORDED, error: null, error_status: null });
    this.kick();
  }
}

/** `bytes` random bytes as lowercase hex. */
function randomHex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A W3C `traceparent` header in trace `trace` (a new span id each request; sampled). */
function traceparent(trace) {
  return `00-${trace}-${randomHex(8)}-01`;
}
