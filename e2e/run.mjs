// End-to-end tests of the web app: the real server binary on a temp database,
// driven by Debian's Chromium through playwright-core, with Chromium's fake
// microphone. Run by scripts/test (which installs Chromium and this folder's
// npm packages when missing); alone: `node e2e/run.mjs` after `cargo build`.
//
// Each scenario fails on any console error except those it names as expected
// (a refused request shows up in the console by design).

import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const ROOT = resolve(new URL('..', import.meta.url).pathname);
const BIN = process.env.CLINSCRIBE_BIN || join(ROOT, 'target/debug/clinscribe');
const OUT = process.env.E2E_OUT || join(ROOT, 'target/e2e');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = join(OUT, 'screenshots');
mkdirSync(SHOTS, { recursive: true });
// The Whisper model the server transcribes with (tiny.en, as the Rust tests
// obtain it); fetched here when missing.
const MODEL_DIR = join(ROOT, 'target/test-models');
const MODEL = process.env.E2E_WHISPER_MODEL || join(MODEL_DIR, 'ggml-tiny.en.bin');
// What the fake microphone says (espeak-ng, 16 kHz mono WAV, looped by Chromium).
const SPOKEN_TEXT = 'The patient takes metformin five hundred milligrams twice daily.';

function prepareSpeech() {
  if (!process.env.E2E_WHISPER_MODEL) {
    execFileSync(BIN, ['model', 'fetch', 'tiny.en', '--model-dir', MODEL_DIR], { stdio: 'inherit' });
  }
  const raw = join(OUT, 'spoken-raw.wav');
  const wav = join(OUT, 'spoken.wav');
  execFileSync('espeak-ng', ['-s', '140', '-w', raw, SPOKEN_TEXT]);
  // A second of silence after the words, so the looped file has a pause.
  execFileSync('sox', [raw, '-r', '16000', '-c', '1', '-b', '16', wav, 'pad', '0', '1']);
  return wav;
}

// ---------------------------------------------------------------- helpers

function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** The real server binary on a temp database and audio directory. */
class Server {
  constructor(dir, env = {}) {
    this.dir = dir;
    this.port = 0;
    this.env = env;
    this.lines = [];
  }

  async start() {
    this.child = spawn(BIN, ['serve', '--bind', `127.0.0.1:${this.port}`], {
      env: {
        ...process.env,
        PWA_DATABASE_URL: `sqlite://${join(this.dir, 'clinical.db')}`,
        PWA_AUDIO_DIR: join(this.dir, 'audio'),
        PWA_LOG: 'warn',
        PWA_AUTH: 'off',
        PWA_TRANSCRIBE_ENGINE: 'embedded',
        PWA_WHISPER_MODEL: MODEL,
        ...this.env,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: this.child.stdout });
    const first = await new Promise((resolveLine, reject) => {
      lines.once('line', resolveLine);
      this.child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    });
    lines.on('line', (line) => this.lines.push(line));
    this.url = first.replace('clinscribe listening on ', '').trim();
    this.port = Number(new URL(this.url).port); // restarts reuse the port
  }

  async stop() {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }

  async json(path) {
    const response = await fetch(this.url + path);
    assert(response.ok, `GET ${path}: ${response.status}`);
    return response.json();
  }

  async recordingsWithKey(key) {
    const all = await this.json('/api/v1/recordings?limit=1000');
    return all.filter((r) => r.local_storage_key === key);
  }
}

async function newPage(context, allowedErrors = []) {
  const page = await context.newPage();
  page.consoleErrors = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !allowedErrors.some((re) => re.test(m.text()))) page.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => page.consoleErrors.push(`uncaught: ${e.message}`));
  return page;
}

function assertNoConsoleErrors(page) {
  assert(page.consoleErrors.length === 0, `console errors: ${page.consoleErrors.join(' | ')}`);
}

async function ready(page) {
  await page.waitForSelector('html[data-ready="true"]');
}

/** Records for `ms` on the record page, stops, returns {key, sha256, bytes}. */
async function recordOnce(page, ms) {
  await page.click('#record');
  await page.waitForFunction(() => document.getElementById('main').dataset.dictation);
  await sleep(ms);
  await page.click('#stop');
  const info = await page.waitForSelector('#recorded-audio');
  const data = {
    key: await info.getAttribute('data-key'),
    sha256: await info.getAttribute('data-sha256'),
    bytes: Number(await info.getAttribute('data-bytes')),
  };
  await page.click('#save');
  await page.waitForSelector('#save', { state: 'hidden' });
  return data;
}

async function controlledByServiceWorker(page) {
  await page.evaluate(() => navigator.serviceWorker.ready);
  if (!(await page.evaluate(() => !!navigator.serviceWorker.controller))) {
    await page.reload();
    await ready(page);
  }
  await waitFor('service worker control', () => page.evaluate(() => !!navigator.serviceWorker.controller));
}

// ---------------------------------------------------------------- scenarios

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario('record 5 s online: the server holds exactly the recorded bytes', async ({ browser, server, shared }) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await newPage(context);
  await page.goto(server.url + '/');
  await ready(page);
  // Security headers of the shell.
  const headers = (await page.request.get(server.url + '/')).headers();
  assert(headers['content-security-policy'].includes("script-src 'self'"), 'CSP on the shell');
  assert(!/<script(?![^>]*\bsrc=)/.test(await (await page.request.get(server.url + '/')).text()), 'no inline script');

  // Each upload request carries a W3C traceparent, one trace per attempt.
  const traceparents = [];
  context.on('request', (r) => {
    if (r.url().includes('/api/v1/uploads')) traceparents.push(r.headers().traceparent);
  });
  await page.fill('#patient-id', 'patient-e2e-1');
  await page.click('button[type=submit]');
  await page.waitForURL('**/record/patient-e2e-1');
  const recorded = await recordOnce(page, 5000);
  assert(recorded.bytes > 1000, `recorded ${recorded.bytes} bytes`);

  const [recording] = await waitFor('the upload on the server', async () => {
    const found = await server.recordingsWithKey(recorded.key);
    return found.length ? found : null;
  });
  assert(recording.audio_sha256 === recorded.sha256, 'server hash = the page’s recorded audio');
  assert(traceparents.length >= 2 && traceparents.every((t) => /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/.test(t || '')),
    `upload traceparents: ${traceparents}`);
  assert(new Set(traceparents.map((t) => t.split('-')[1])).size === 1, `one trace: ${traceparents}`);
  assert(new Set(traceparents.map((t) => t.split('-')[2])).size === traceparents.length, `a span each: ${traceparents}`);
  assert(recording.patient_id === 'patient-e2e-1', 'patient id');
  assert(recording.duration_seconds >= 4 && recording.duration_seconds <= 7, `duration ${recording.duration_seconds}`);
  const audio = Buffer.from(await (await fetch(`${server.url}/api/v1/recordings/${recording.id}/audio`)).arrayBuffer());
  assert(sha256(audio) === recorded.sha256 && audio.length === recorded.bytes, 'downloaded bytes are the recorded bytes');

  await page.goto(server.url + '/queue');
  await ready(page);
  await page.waitForSelector(`#local-list li[data-key="${recorded.key}"][data-state="uploaded"]`);
  await page.waitForSelector(`#server-list li[data-id="${recording.id}"]`);
  shared.recordingId = recording.id;
  assertNoConsoleErrors(page);
  await context.close();
});

scenario('dictate with the fake microphone speaking: the transcript appears on the recording page, and the queue follows it', async ({ browser, server }) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await newPage(context);
  await page.goto(server.url + '/record/patient-speech');
  await ready(page);
  // The file plays from its start when capture begins: one pass of the words.
  const recorded = await recordOnce(page, 6500);
  const [recording] = await waitFor('the upload on the server', async () => {
    const found = await server.recordingsWithKey(recorded.key);
    return found.length ? found : null;
  });
  assert(recording.audio_content_type === 'audio/webm', `Chromium records WebM: ${recording.audio_content_type}`);

  // The queue shows its progress and then its end, without a reload.
  await page.goto(server.url + '/queue');
  await ready(page);
  await page.waitForSelector(`#server-list li[data-id="${recording.id}"]`);
  await page.waitForSelector(`#server-list li[data-id="${recording.id}"].status-completed`, { timeout: 120000 });

  // The recording page, opened before it is done elsewhere, shows the transcript.
  await page.goto(`${server.url}/recordings/${recording.id}`);
  await ready(page);
  const text = (await (await page.waitForSelector('#transcript', { timeout: 60000 })).textContent()).toLowerCase();
  for (const word of ['patient', 'milligrams', 'twice daily']) {
    assert(text.includes(word), `"${word}" in the transcript: ${text}`);
  }
  assert(/metformin|500/.test(text), `the drug or its dose in the transcript: ${text}`);
  assert((await page.textContent('#recording-status')) === 'Transcribed', 'status label');
  await page.screenshot({ path: join(SHOTS, 'transcript.png'), fullPage: true });
  assertNoConsoleErrors(page);
  await context.close();
});

scenario('a recording whose transcription failed shows the reason and a Retry button that queues it again', async ({ browser, server }) => {
  // A WebM signature and nothing decodable after it: stored, then `error`.
  const bytes = Buffer.concat([Buffer.from([0x1a, 0x45, 0xdf, 0xa3]), Buffer.alloc(3000, 0x55)]);
  const form = new FormData();
  form.append('patient_id', 'patient-broken');
  form.append('duration_seconds', '3');
  form.append('audio', new Blob([bytes], { type: 'audio/webm' }), 'broken.webm');
  const created = await (await fetch(`${server.url}/api/v1/recordings/upload`, { method: 'POST', body: form })).json();
  const context = await browser.newContext();
  const page = await newPage(context);
  await page.goto(`${server.url}/recordings/${created.id}`);
  await ready(page);
  await page.waitForSelector('#recording-status:text("Error")', { timeout: 60000 });
  assert((await page.textContent('#recording-error')).includes('cannot be decoded'), 'the reason shows');
  await page.click('button.retry');
  // Queued again, then (still undecodable) error again, retry_count 1.
  await waitFor('the retry on the server', async () => {
    const r = await (await fetch(`${server.url}/api/v1/recordings/${created.id}`)).json();
    return r.retry_count === 1 && r.status === 'error' ? r : null;
  }, 60000);
  assertNoConsoleErrors(page);
  await context.close();
});

scenario('offline: two dictations, a reload from the service worker, then each reaches the server once', async ({ browser, server }) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await newPage(context);
  await page.goto(server.url + '/record/patient-offline');
  await ready(page);
  await controlledByServiceWorker(page);
  const worker = await page.evaluate(() => navigator.serviceWorker.controller.scriptURL);
  assert(worker.endsWith('/sw-module.js'), `Chromium runs the module worker (Background Sync): ${worker}`);

  await context.setOffline(true);
  await page.waitForSelector('#connectivity[data-online="false"]');
  const first = await recordOnce(page, 2000);
  const second = await recordOnce(page, 2000);
  await page.reload(); // from the service worker's cache
  await ready(page);
  await page.goto(server.url + '/queue');
  await ready(page);
  for (const d of [first, second]) {
    await page.waitForSelector(`#local-list li[data-key="${d.key}"][data-state="recorded"]`);
  }
  assert((await page.textContent('#server-note')).includes('Offline'), 'the server list says it is offline');
  assert((await server.recordingsWithKey(first.key)).length === 0, 'nothing reached the server while offline');

  await context.setOffline(false);
  for (const d of [first, second]) {
    const found = await waitFor(`dictation ${d.key} on the server`, async () => {
      const f = await server.recordingsWithKey(d.key);
      return f.length ? f : null;
    });
    assert(found.length === 1, 'exactly once');
    assert(found[0].audio_sha256 === d.sha256, 'same bytes');
    assert(found[0].upload_attempts === 1, 'one attempt');
    await page.waitForSelector(`#local-list li[data-key="${d.key}"][data-state="uploaded"]`);
  }
  assertNoConsoleErrors(page);
  await context.close();
});

scenario('Background Sync: a dictation saved offline uploads with no page open', async ({ browser, server }) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await newPage(context);
  await page.goto(server.url + '/record/patient-sync');
  await ready(page);
  await controlledByServiceWorker(page);
  await context.setOffline(true);
  await page.waitForSelector('#connectivity[data-online="false"]');
  const recorded = await recordOnce(page, 2000);
  assertNoConsoleErrors(page);
  await page.close();
  assert(context.pages().length === 0, 'no page open');
  await context.setOffline(false);
  const found = await waitFor('the service worker’s upload', async () => {
    const f = await server.recordingsWithKey(recorded.key);
    return f.length ? f : null;
  }, 30000);
  assert(found.length === 1 && found[0].audio_sha256 === recorded.sha256, 'uploaded once, same bytes');
  await context.close();
});

scenario('closing the page mid-recording: the partial dictation is recovered and uploads', async ({ browser, server }) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await newPage(context);
  await page.goto(server.url + '/record/patient-crash');
  await ready(page);
  await page.click('#record');
  await page.waitForFunction(() => document.getElementById('main').dataset.dictation);
  const key = await page.evaluate(() => document.getElementById('main').dataset.dictation);
  await sleep(3500);
  assertNoConsoleErrors(page);
  await page.close({ runBeforeUnload: false }); // the tab is gone, mid-sentence
  await sleep(5500); // its heartbeat goes stale

  const again = await newPage(context);
  await again.goto(server.url + '/queue');
  await ready(again);
  const [recording] = await waitFor('the recovered dictation on the server', async () => {
    const found = await server.recordingsWithKey(key);
    return found.length ? found : null;
  });
  assert(recording.audio_file_size > 1000, `recovered ${recording.audio_file_size} bytes`);
  assert((await server.recordingsWithKey(key)).length === 1, 'exactly once');
  await again.waitForSelector(`#local-list li[data-key="${key}"][data-state="uploaded"] .badge`);
  assertNoConsoleErrors(again);
  await context.close();
});

scenario('the server goes away during an upload: it resumes and completes once; a 4xx is shown, not retried', async ({ browser, server }) => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  // Expected while the server is down, and for the deliberate refusal.
  const page = await newPage(context, [/ERR_CONNECTION_REFUSED/, /status of 422/]);
  await page.goto(server.url + '/record/patient-flaky');
  await ready(page);
  await page.click('#record');
  await page.waitForFunction(() => document.getElementById('main').dataset.dictation);
  await sleep(2500);
  await page.click('#stop');
  const info = await page.waitForSelector('#recorded-audio');
  const key = await info.getAttribute('data-key');
  const hash = await info.getAttribute('data-sha256');
  await server.stop();
  await page.click('#save');
  await sleep(3000); // attempts fail; the manager backs off
  await server.start(); // same port
  const found = await waitFor('the upload after the restart', async () => {
    const f = await server.recordingsWithKey(key);
    return f.length ? f : null;
  }, 90000);
  assert(found.length === 1 && found[0].audio_sha256 === hash, 'completed once, same bytes');

  // A dictation the server refuses (a patient id longer than 128 characters).
  const longId = 'p'.repeat(140);
  // Answers, not requests: leaving the record page may abort a POST in
  // flight, which the next page rightly sends again.
  const refusals = [];
  page.on('response', (r) => {
    const q = r.request();
    if (q.url().endsWith('/api/v1/uploads') && q.method() === 'POST') refusals.push(r.status());
  });
  await page.goto(`${server.url}/record/${longId}`);
  await ready(page);
  await recordOnce(page, 1500);
  await page.goto(server.url + '/queue');
  await ready(page);
  const error = await page.waitForSelector('#local-list li[data-state="error"] .error-text');
  assert((await error.textContent()).includes('patient_id'), `the error names the field: ${await error.textContent()}`);
  await page.waitForSelector('#local-list li[data-state="error"] button');
  await sleep(6000);
  assert(refusals.length === 1 && refusals[0] === 422,
    `a refused upload is not retried by itself (answers: ${refusals.join(', ')})`);
  assertNoConsoleErrors(page);
  await context.close();
});

scenario('a page of another site cannot create recordings or upload audio; the same origin can', async ({ browser, server }) => {
  // http://localhost:PORT is another origin than http://127.0.0.1:PORT (the
  // server's own), served by the same server: the attacker's page. A JSON
  // page of the API, which has no Content-Security-Policy of ours to stop the
  // requests before they leave the browser.
  const before = (await server.json('/api/v1/recordings?limit=1000')).length;
  const other = server.url.replace('127.0.0.1', 'localhost');
  const context = await browser.newContext();
  const page = await newPage(context, [/403/, /Failed to load resource/]);
  await page.goto(`${other}/api/v1/health`);
  const target = server.url;
  const statuses = await page.evaluate(async (target) => {
    // no-cors: the browser sends it (with a Blob body, so no Content-Type)
    // and hides the answer; the server must refuse it all the same.
    await fetch(`${target}/api/v1/recordings`, {
      method: 'POST', mode: 'no-cors',
      body: new Blob([JSON.stringify({ patient_id: 'cross-site', duration_seconds: 1 })]),
    }).catch(() => {});
    const form = new FormData();
    form.append('patient_id', 'cross-site');
    form.append('duration_seconds', '1');
    form.append('audio', new Blob([new Uint8Array([0x1a, 0x45, 0xdf, 0xa3, 1, 2, 3, 4])]), 'a.webm');
    await fetch(`${target}/api/v1/recordings/upload`, { method: 'POST', mode: 'no-cors', body: form }).catch(() => {});
    return 'sent';
  }, target);
  assert(statuses === 'sent', 'requests sent');
  // A form posted across sites, as a page would, lands on the refusal.
  await page.evaluate((target) => {
    const form = document.createElement('form');
    form.method = 'POST';
    form.enctype = 'multipart/form-data';
    form.action = `${target}/api/v1/recordings/upload`;
    for (const [name, value] of [['patient_id', 'cross-site'], ['duration_seconds', '1']]) {
      const input = document.createElement('input');
      input.name = name;
      input.value = value;
      form.appendChild(input);
    }
    document.body.appendChild(form);
    form.submit();
  }, target);
  await page.waitForURL(`${target}/api/v1/recordings/upload`);
  const refusal = await page.textContent('body');
  assert(refusal.includes('Cross-origin request refused'), `the refusal is shown: ${refusal}`);
  const after = await server.json('/api/v1/recordings?limit=1000');
  assert(after.length === before, `nothing created from another site (${before} → ${after.length})`);
  assert(!after.some((r) => r.patient_id === 'cross-site'), 'no cross-site recording');
  // The server's own pages may.
  const own = await newPage(context);
  await own.goto(`${server.url}/api/v1/health`);
  const status = await own.evaluate(async () => (await fetch('/api/v1/recordings', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ patient_id: 'same-origin', duration_seconds: 1 }),
  })).status);
  assert(status === 201, `same-origin create: ${status}`);
  assertNoConsoleErrors(own);
  await context.close();
});

scenario('the API explorer at /docs renders under its Content-Security-Policy', async ({ browser, server }) => {
  const context = await browser.newContext();
  const page = await newPage(context);
  const response = await page.goto(`${server.url}/docs/`);
  assert(/frame-ancestors 'none'/.test(response.headers()['content-security-policy'] || ''), 'CSP on /docs');
  await page.waitForSelector('.swagger-ui .info .title', { timeout: 20000 });
  await page.waitForSelector('.opblock-tag', { timeout: 20000 });
  const title = await page.textContent('.swagger-ui .info .title');
  assert(title.includes('clinscribe'), `title: ${title}`);
  assertNoConsoleErrors(page);
  await context.close();
});

// ---------------------------------------------------------------- the previous version's leftovers

/**
 * The original service's web app as a device saw it, on the address clinscribe
 * takes over: a page with localForage (the library it stored dictations with)
 * and its service worker at /static/js/service-worker.js (scope /static/js/).
 */
function servePreviousVersion(port) {
  const localforage = readFileSync(join(ROOT, 'e2e/node_modules/localforage/dist/localforage.js'));
  const worker = `
    self.addEventListener('install', (e) => e.waitUntil(caches.open('clinical-pwa-v1').then((c) => c.addAll(['/static/js/app.js']))));
    self.addEventListener('fetch', (e) => e.respondWith(caches.match(e.request).then((r) => r || fetch(e.request))));`;
  const routes = {
    '/': ['text/html', '<!doctype html><title>Clinical Transcription</title><script src="/localforage.js"></script>'],
    '/localforage.js': ['text/javascript', localforage],
    '/static/js/app.js': ['text/javascript', '// the original app'],
    '/static/js/service-worker.js': ['text/javascript', worker],
  };
  const http = createServer((req, res) => {
    const route = routes[new URL(req.url, 'http://x').pathname];
    res.writeHead(route ? 200 : 404, { 'content-type': route ? route[0] : 'text/plain' });
    res.end(route ? route[1] : 'not found');
  });
  return new Promise((resolveServer) => http.listen(port, '127.0.0.1', () => resolveServer(http)));
}

/** What IndexedDB holds: the old store's keys (null: no such database) and ours. */
async function deviceStores(context, origin) {
  const page = await context.newPage();
  await page.goto(`${origin}/api/v1/health`);
  const stores = await page.evaluate(async () => {
    const names = (await indexedDB.databases()).map((d) => d.name);
    const keysOf = (name, storeName) => new Promise((resolveKeys, reject) => {
      const req = indexedDB.open(name);
      req.onsuccess = () => {
        const db = req.result;
        const get = db.transaction(storeName).objectStore(storeName).getAllKeys();
        get.onsuccess = () => { db.close(); resolveKeys(get.result.map(String)); };
        get.onerror = () => reject(get.error);
      };
      req.onerror = () => reject(req.error);
    });
    return {
      old: names.includes('ClinicalTranscription') ? await keysOf('ClinicalTranscription', 'recordings') : null,
      ours: names.includes('clinscribe') ? await keysOf('clinscribe', 'dictations') : [],
      oldWorkers: (await navigator.serviceWorker.getRegistrations())
        .filter((r) => new URL(r.scope).pathname.startsWith('/static/js/')).length,
    };
  });
  await page.close();
  return stores;
}

async function uploadDirect(server, key, patientId, bytes) {
  const form = new FormData();
  form.append('patient_id', patientId);
  form.append('duration_seconds', '2');
  form.append('local_storage_key', key);
  form.append('audio', new Blob([bytes], { type: 'audio/webm' }), 'a.webm');
  const response = await fetch(`${server.url}/api/v1/recordings/upload`, { method: 'POST', body: form });
  assert(response.status === 201, `direct upload: ${response.status}`);
}

/**
 * The clinic swaps the original service for clinscribe on the same address,
 * with dictations still waiting on a device: every one reaches clinscribe's
 * server exactly once. With `closedMidway`, the first clinscribe page is
 * opened offline and closed in the middle of the migration.
 */
async function upgradeInPlace({ browser, server }, closedMidway) {
  const tag = closedMidway ? 'midway' : 'straight';
  await server.stop();
  const previous = await servePreviousVersion(server.port);
  const context = await browser.newContext();
  const setup = await newPage(context);
  await setup.goto(server.url);
  const left = await setup.evaluate(async (tag) => {
    const registration = await navigator.serviceWorker.register('/static/js/service-worker.js', { scope: '/static/js/' });
    await new Promise((r) => {
      const sw = registration.installing || registration.waiting || registration.active;
      if (sw.state === 'activated') r();
      else sw.addEventListener('statechange', () => sw.state === 'activated' && r());
    });
    // A real dictation, as the original recorded it: Chromium's WebM/Opus.
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const recorder = new MediaRecorder(stream, { mimeType: 'audio/webm;codecs=opus' });
    const parts = [];
    recorder.ondataavailable = (e) => parts.push(e.data);
    recorder.start();
    await new Promise((r) => setTimeout(r, 1500));
    await new Promise((r) => { recorder.onstop = r; recorder.stop(); });
    stream.getTracks().forEach((t) => t.stop());
    const recordings = localforage.createInstance({ name: 'ClinicalTranscription', storeName: 'recordings' });
    const entries = {};
    const add = async (name, patientId, syncStatus, extra = {}) => {
      const id = crypto.randomUUID();
      // Each entry its own bytes: the recording plus a marker.
      const audio = new Blob([...parts, new TextEncoder().encode(`${tag}-${name}`)], { type: 'audio/webm;codecs=opus' });
      const now = new Date().toISOString();
      await recordings.setItem(id, {
        id, patient_id: patientId, clinician_id: 'current-clinician', audio_blob: audio,
        draft_transcript: name === 'pending' ? 'BP 140 over 90' : null, duration_seconds: 1.5,
        created_at: now, updated_at: now, sync_status: syncStatus, retry_count: syncStatus === 'failed' ? 3 : 0, ...extra,
      });
      const digest = await crypto.subtle.digest('SHA-256', await audio.arrayBuffer());
      entries[name] = {
        id, patientId,
        sha256: [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join(''),
        bytes: [...new Uint8Array(await audio.arrayBuffer())],
      };
    };
    await add('pending', `${tag}-pending`, 'pending_upload');
    await add('uploading', `${tag}-uploading`, 'uploading');
    await add('failed', `${tag}-failed`, 'failed');
    await add('held', `${tag}-held`, 'uploaded', { server_id: crypto.randomUUID() });
    await add('unconfirmed', `${tag}-unconfirmed`, 'uploaded', { server_id: crypto.randomUUID() });
    await add('long', `${tag}-${'x'.repeat(150 - tag.length - 1)}`, 'pending_upload');
    return entries;
  }, tag);
  await setup.close();
  await new Promise((r) => previous.close(r));
  await server.start(); // clinscribe, on the same address
  // One the original had uploaded is already on this server.
  await uploadDirect(server, left.held.id, left.held.patientId, new Uint8Array(left.held.bytes));
  const ids = Object.values(left).map((e) => e.id);

  if (closedMidway) {
    // The first page gets no answer from the API (a network that drops out
    // right after the page loads): the dictations are brought over but cannot
    // upload, and the page is closed then.
    const noApi = (route) => route.abort('internetdisconnected');
    await context.route('**/api/v1/**', noApi);
    const first = await newPage(context, [/Failed to load resource/, /ERR_INTERNET_DISCONNECTED/]);
    await first.goto(`${server.url}/queue`);
    await ready(first);
    await waitFor('dictations brought over', async () => (await first.$$('#local-list li[data-key]')).length === ids.length);
    await first.close();
    await context.unroute('**/api/v1/**', noApi);
    const stores = await deviceStores(context, server.url);
    for (const id of ids) {
      assert(stores.old.includes(id) || stores.ours.includes(id), `${id} is kept somewhere`);
    }
  }

  const page = await newPage(context, [/422/, /Failed to load resource/]);
  await page.goto(`${server.url}/queue`);
  await ready(page);
  const exactlyOnce = async (entry) => (await server.recordingsWithKey(entry.id)).length === 1;
  for (const name of ['pending', 'uploading', 'failed', 'held', 'unconfirmed']) {
    await waitFor(`${name} on the server`, () => exactlyOnce(left[name]), 30000);
  }
  for (const name of ['pending', 'uploading', 'failed', 'unconfirmed']) {
    const [recording] = await server.recordingsWithKey(left[name].id);
    assert(recording.audio_sha256 === left[name].sha256, `${name}: the server holds the device's bytes`);
    assert(recording.patient_id === left[name].patientId, `${name}: patient`);
  }
  const [pending] = await server.recordingsWithKey(left.pending.id);
  assert(pending.draft_transcript === 'BP 140 over 90', 'the draft transcript came along');
  const [held] = await server.recordingsWithKey(left.held.id);
  assert(held.upload_attempts === 1 && held.patient_id === left.held.patientId, 'held: the first upload stands, not stored twice');
  // Refused (patient id over 128 characters): shown with the reason, not retried, correctable.
  const refused = await page.waitForSelector(`li[data-key="${left.long.id}"][data-state="error"]`);
  const reason = await refused.textContent();
  assert(/128/.test(reason), `the reason is shown: ${reason}`);
  assert((await server.recordingsWithKey(left.long.id)).length === 0, 'the refused one is not stored');
  if (!closedMidway) {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: join(SHOTS, 'queue-after-upgrade-390x844.png'), fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > innerWidth + 1);
    assert(!overflow, 'a long patient id does not make the queue scroll sideways');
  }
  const note = await page.textContent('#adopted-note');
  const expected = closedMidway ? 6 : 5;
  assert(note.includes(`${expected} dictations were brought over`), `note: ${note}`);
  await page.fill(`#fix-${left.long.id}`, `${tag}-long-corrected`);
  await page.click(`li[data-key="${left.long.id}"] button[type="submit"]`);
  await waitFor('the corrected one on the server', () => exactlyOnce(left.long), 30000);
  const [corrected] = await server.recordingsWithKey(left.long.id);
  assert(corrected.patient_id === `${tag}-long-corrected`, 'stored under the corrected patient id');
  // The old store ends empty (deleted), the old worker is gone.
  const stores = await waitFor('the old store deleted', async () => {
    const s = await deviceStores(context, server.url);
    return s.old === null ? s : false;
  });
  assert(stores.oldWorkers === 0, 'the original service worker is unregistered');
  for (const entry of Object.values(left)) {
    assert((await server.recordingsWithKey(entry.id)).length === 1, `${entry.patientId}: exactly once`);
  }
  assertNoConsoleErrors(page);
  await context.close();
}

scenario('upgrading in place: the original web app\u2019s pending dictations reach the server exactly once', (ctx) => upgradeInPlace(ctx, false));
scenario('upgrading in place, the first page closed in the middle of the migration (API unreachable)', (ctx) => upgradeInPlace(ctx, true));

scenario('the original\u2019s service worker script now unregisters itself', async ({ browser, server }) => {
  const context = await browser.newContext();
  const page = await newPage(context);
  await page.goto(`${server.url}/api/v1/health`);
  const remaining = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.register('/static/js/service-worker.js', { scope: '/static/js/' });
    const sw = registration.installing || registration.waiting || registration.active;
    await new Promise((r) => {
      if (sw.state === 'redundant') r();
      else sw.addEventListener('statechange', () => sw.state === 'redundant' && r());
      setTimeout(r, 5000);
    });
    return (await navigator.serviceWorker.getRegistrations()).length;
  });
  assert(remaining === 0, `registrations left: ${remaining}`);
  assertNoConsoleErrors(page);
  await context.close();
});

/** Uploads the spoken dictation through the API and waits for its transcript. */
async function transcribedRecording(server, patientId) {
  const form = new FormData();
  form.append('patient_id', patientId);
  form.append('duration_seconds', '5');
  form.append('audio', new Blob([readFileSync(join(OUT, 'spoken.wav'))], { type: 'audio/wav' }), 'spoken.wav');
  const created = await (await fetch(`${server.url}/api/v1/recordings/upload`, { method: 'POST', body: form })).json();
  return waitFor(`the transcript of ${created.id}`, async () => {
    const r = await server.json(`/api/v1/recordings/${created.id}`);
    return r.status === 'completed' ? r : null;
  }, 120000);
}

scenario('two browsers edit one transcript: the second sees both versions, keeps its own, signs, and amends', async ({ browser, server }) => {
  const recording = await transcribedRecording(server, 'patient-review');
  const url = `${server.url}/recordings/${recording.id}`;
  const first = await browser.newContext();
  const second = await browser.newContext();
  const pageA = await newPage(first, [/412/]);
  const pageB = await newPage(second);
  for (const page of [pageA, pageB]) {
    await page.goto(url);
    await ready(page);
    await page.waitForSelector('#transcript');
  }
  assert((await pageA.inputValue('#transcript')) === recording.final_transcript, 'the editor holds the transcript');
  const mine = 'Metformin 500 mg twice daily. Review in three months.';
  const theirs = 'Metformin 850 mg once daily.';
  await pageA.fill('#transcript', mine);
  assert(await pageA.isDisabled('#sign'), 'no signing with unsaved changes');

  // The other browser saves first.
  await pageB.fill('#transcript', theirs);
  await pageB.click('#save-transcript');
  // Exactly "Saved." (a :text() selector would also match "Not saved.").
  await pageB.waitForFunction(() => document.getElementById('save-state')?.textContent === 'Saved.');
  assert((await server.json(`/api/v1/recordings/${recording.id}`)).final_transcript === theirs, 'theirs saved');

  // This one then sees both sides, and nothing was overwritten.
  await pageA.click('#save-transcript');
  await pageA.waitForSelector('#conflict');
  assert((await pageA.inputValue('#conflict-mine')) === mine, 'my version shown');
  assert((await pageA.inputValue('#conflict-theirs')) === theirs, 'their version shown');
  assert((await server.json(`/api/v1/recordings/${recording.id}`)).final_transcript === theirs, 'not overwritten');
  await pageA.screenshot({ path: join(SHOTS, 'conflict.png'), fullPage: true });
  await pageA.click('#keep-mine');
  await pageA.waitForSelector('#sign:not([disabled])');
  let stored = await server.json(`/api/v1/recordings/${recording.id}`);
  assert(stored.final_transcript === mine, 'kept mine');
  assert(stored.transcript === recording.transcript, 'the engine’s text is kept');

  await pageA.click('#sign');
  await pageA.waitForSelector('#signed');
  stored = await server.json(`/api/v1/recordings/${recording.id}`);
  assert(stored.signed_by === 'current-clinician', 'signed');
  assert(stored.signed_sha256 === sha256(Buffer.from(mine, 'utf8')), 'the signature is the hash of my text');
  assert((await pageA.textContent('#transcript')) === mine, 'the signed text shows');

  await pageA.fill('#amend-text', 'Dose confirmed with the pharmacy.');
  await pageA.fill('#amend-reason', 'Follow-up call');
  await pageA.click('#amend');
  await pageA.waitForSelector('#amendments li');
  stored = await server.json(`/api/v1/recordings/${recording.id}`);
  assert(stored.amendments.length === 1 && stored.amendments[0].reason === 'Follow-up call', 'amendment kept');
  assert(stored.final_transcript === mine, 'the signed text is unchanged');
  // The history lists each change with its author: the upload, the worker's,
  // then theirs, mine, the signature and the amendment.
  const history = await pageA.$$eval('#history li', (items) => items.map((li) => li.textContent));
  const all = history.join(' | ');
  assert(history[0].startsWith('Uploaded by current-clinician'), all);
  assert(history.some((h) => h.startsWith('Transcription by system:transcription')), all);
  assert(history.slice(-4).map((h) => h.split(' ')[0]).join(',') === 'Edited,Edited,Signed,Amended', all);
  assert(history.at(-1).includes('amendments'), all);
  // Every opening of the note was a read of patient data, summed up below the changes.
  const reads = await pageA.textContent('#reads');
  assert(/^Opened \d+ time\(s\); last by current-clinician/.test(reads), reads);
  await pageA.screenshot({ path: join(SHOTS, 'signed.png'), fullPage: true });
  assertNoConsoleErrors(pageA);
  assertNoConsoleErrors(pageB);
  await first.close();
  await second.close();
});

scenario('the checks highlight a critical alert in the transcript, and signing needs a reason for it', async ({ browser, server }) => {
  const recording = await transcribedRecording(server, 'patient-alerts');
  const text = 'Allergic to penicillin. Start amoxicillin 500 mg three times a day. Atorvastatin 40 mg and simvastatin 20 mg.';
  const patched = await fetch(`${server.url}/api/v1/recordings/${recording.id}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/merge-patch+json', 'if-match': `"${recording.version}"` },
    body: JSON.stringify({ final_transcript: text }),
  });
  assert(patched.status === 200, `corrected: ${patched.status}`);
  const context = await browser.newContext();
  const page = await newPage(context);
  await page.goto(`${server.url}/recordings/${recording.id}`);
  await ready(page);
  await page.waitForSelector('#alerts');
  const listed = await page.$$eval('#alerts li', (items) => items.map((li) => li.querySelector('.badge').textContent + ' ' + li.querySelector('strong').textContent));
  assert(listed.join(',') === 'critical ALLERGY_CONFLICT,high DUPLICATE_THERAPY', `most severe first: ${listed}`);
  const marked = await page.$$eval('#checked-text mark', (marks) => marks.map((m) => `${m.className}: ${m.textContent}`));
  assert(marked.includes('alert-span severity-critical: penicillin'), marked.join(' | '));
  assert(marked.includes('alert-span severity-critical: amoxicillin 500 mg three times a day'), marked.join(' | '));
  assert(marked.some((m) => m.startsWith('alert-span severity-high: Atorvastatin')), marked.join(' | '));
  assert((await page.textContent('#checked-text')) === text, 'the marked text is the note, unchanged');
  assert(await page.isDisabled('#sign'), 'no signing before the critical alert is acknowledged');
  assert((await page.getAttribute('#sign', 'title')).includes('reason for each critical alert'), 'the button says why');
  const reason = 'Tolerated amoxicillin in 2024; the allergy was a childhood rash';
  await page.fill('.ack-reason', reason);
  await page.waitForSelector('#sign:not([disabled])');
  await page.screenshot({ path: join(SHOTS, 'alerts.png'), fullPage: true });
  await page.click('#sign');
  await page.waitForSelector('#signed');
  const stored = await server.json(`/api/v1/recordings/${recording.id}`);
  assert(stored.acknowledgements.length === 1, JSON.stringify(stored.acknowledgements));
  assert(stored.acknowledgements[0].alert_id.startsWith('ALLERGY_CONFLICT@'), stored.acknowledgements[0].alert_id);
  assert(stored.acknowledgements[0].reason === reason, 'the reason kept');
  const shown = await page.textContent('#alerts .acknowledged');
  assert(shown === `Acknowledged by current-clinician: ${reason}`, shown);
  const history = await page.$$eval('#history li', (items) => items.map((li) => li.textContent));
  assert(history.at(-1).startsWith('Signed by current-clinician') && history.at(-1).includes('acknowledgements'), history.join(' | '));
  assertNoConsoleErrors(page);
  await context.close();
});

scenario('a transcript edited offline is sent when the network returns; a conflict found then is shown, not sent over', async ({ browser, server }) => {
  const [sent, clashing] = [
    await transcribedRecording(server, 'patient-offline-edit'),
    await transcribedRecording(server, 'patient-offline-clash'),
  ];
  const context = await browser.newContext();
  const page = await newPage(context, [/412/]);
  // The recording page needs the server: edits are made on pages opened online.
  await page.goto(`${server.url}/recordings/${sent.id}`);
  await ready(page);
  await page.waitForSelector('#transcript');
  await context.setOffline(true);
  await page.waitForSelector('#connectivity[data-online="false"]');
  await page.fill('#transcript', 'Edited on the ward without a signal.');
  await page.click('#save-transcript');
  await page.waitForSelector('#save-state:text("Saved on this device")');
  assert((await server.json(`/api/v1/recordings/${sent.id}`)).version === sent.version, 'nothing sent while offline');

  // Back online (to open the other note): the saved edit goes out by itself.
  await context.setOffline(false);
  await page.goto(`${server.url}/recordings/${clashing.id}`);
  await ready(page);
  await waitFor('the offline edit on the server', async () =>
    (await server.json(`/api/v1/recordings/${sent.id}`)).final_transcript === 'Edited on the ward without a signal.');
  await sleep(500); // the page re-renders after sending
  await page.waitForSelector('#transcript');
  await context.setOffline(true);
  await page.waitForSelector('#connectivity[data-online="false"]');
  await page.fill('#transcript', 'My offline correction.');
  await page.click('#save-transcript');
  await page.waitForSelector('#save-state:text("Saved on this device")');
  // Meanwhile, another device changes that note.
  const other = await fetch(`${server.url}/api/v1/recordings/${clashing.id}`, {
    method: 'PATCH',
    headers: { 'content-type': 'application/merge-patch+json', 'if-match': `"${clashing.version}"` },
    body: JSON.stringify({ final_transcript: 'Changed at the desk.' }),
  });
  assert(other.status === 200, `the other device saved: ${other.status}`);

  await context.setOffline(false);
  await page.waitForSelector('#conflict');
  assert((await page.inputValue('#conflict-mine')) === 'My offline correction.', 'my offline version shown');
  assert((await page.inputValue('#conflict-theirs')) === 'Changed at the desk.', 'the desk version shown');
  assert((await server.json(`/api/v1/recordings/${clashing.id}`)).final_transcript === 'Changed at the desk.', 'not sent over');
  await page.click('#take-theirs');
  await page.waitForSelector('#transcript');
  assert((await page.inputValue('#transcript')) === 'Changed at the desk.', 'theirs taken');
  assertNoConsoleErrors(page);
  await context.close();
});

scenario('a recording deleted on one device leaves the other device’s list through the change feed', async ({ browser, server }) => {
  const form = new FormData();
  form.append('patient_id', 'patient-delete');
  form.append('duration_seconds', '3');
  form.append('audio', new Blob([readFileSync(join(OUT, 'spoken.wav'))], { type: 'audio/wav' }), 'spoken.wav');
  const created = await (await fetch(`${server.url}/api/v1/recordings/upload`, { method: 'POST', body: form })).json();
  const watching = await browser.newContext();
  const deleting = await browser.newContext();
  const list = await newPage(watching);
  await list.goto(server.url + '/queue');
  await ready(list);
  await list.waitForSelector(`#server-list li[data-id="${created.id}"]`);

  // Wait for the worker to be done with it: a change by the worker after the
  // page opened would rightly make the DELETE a 412 ("reload it first").
  for (let tries = 0; ; tries++) {
    const now = await server.json(`/api/v1/recordings/${created.id}`);
    if (now.status === 'completed' || now.status === 'error') break;
    assert(tries < 300, `still ${now.status} after 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const page = await newPage(deleting);
  await page.goto(`${server.url}/recordings/${created.id}`);
  await ready(page);
  await page.click('#delete');
  await page.click('#confirm-delete');
  await page.waitForURL('**/queue');
  const gone = await fetch(`${server.url}/api/v1/recordings/${created.id}`);
  assert(gone.status === 404, `deleted: ${gone.status}`);
  await list.waitForSelector(`#server-list li[data-id="${created.id}"]`, { state: 'detached', timeout: 30000 });
  assertNoConsoleErrors(list);
  assertNoConsoleErrors(page);
  await watching.close();
  await deleting.close();
});

scenario('screenshots of every page at 390×844 and 1280×800; accessible names', async ({ browser, server, shared }) => {
  for (const [w, hgt] of [[390, 844], [1280, 800]]) {
    const context = await browser.newContext({ viewport: { width: w, height: hgt } });
    const page = await newPage(context);
    const pages = [
      ['start', '/'],
      ['record', '/record/patient-e2e-1'],
      ['queue', '/queue'],
      ['recording', `/recordings/${shared.recordingId}`],
      ['status', '/status'],
    ];
    for (const [name, path] of pages) {
      await page.goto(server.url + path);
      await ready(page);
      await page.waitForLoadState('networkidle');
      await page.screenshot({ path: join(SHOTS, `${name}-${w}x${hgt}.png`), fullPage: true });
      const problems = await page.evaluate(() => {
        const out = [];
        for (const b of document.querySelectorAll('button, a')) {
          if (!(b.textContent || '').trim() && !b.getAttribute('aria-label')) out.push(`unnamed ${b.tagName}`);
        }
        for (const i of document.querySelectorAll('input')) {
          if (!document.querySelector(`label[for="${i.id}"]`)) out.push(`unlabelled input ${i.id}`);
        }
        for (const b of document.querySelectorAll('button')) {
          const r = b.getBoundingClientRect();
          if (r.width && r.height < 44) out.push(`small target ${b.textContent}`);
        }
        if (document.documentElement.scrollWidth > innerWidth + 1) out.push('horizontal scroll');
        return out;
      });
      assert(problems.length === 0, `${name} at ${w}px: ${problems.join(', ')}`);
    }
    assertNoConsoleErrors(page);
    await context.close();
  }
});

// ---------------------------------------------------------------- signing in

/** `clinscribe ARGS` on `server`'s database; its stdout. */
function cli(server, args, input) {
  return execFileSync(BIN, args, {
    input,
    env: { ...process.env, PWA_DATABASE_URL: `sqlite://${join(server.dir, 'clinical.db')}`, PWA_LOG: 'warn' },
  }).toString();
}

const PASSWORD = 'correct horse battery staple';

/** A user with a password, and an API token of theirs for the test's own checks. */
function addUser(server, id, name) {
  cli(server, ['user', 'add', id, '--name', name, '--password-stdin'], `${PASSWORD}\n`);
  return cli(server, ['token', 'create', id]).trim().split('\n').pop();
}

async function recordingsOf(server, token) {
  const response = await fetch(`${server.url}/api/v1/recordings?limit=1000`, { headers: { authorization: `Bearer ${token}` } });
  assert(response.ok, `list: ${response.status}`);
  return response.json();
}

async function signInAs(page, server, user) {
  await page.goto(server.url + '/signin');
  await ready(page);
  await page.fill('#username', user);
  await page.fill('#password', PASSWORD);
  await page.click('#sign-in');
  await page.waitForURL(server.url + '/');
  await ready(page);
}

/** The app against a server with PWA_AUTH=on, started on a fresh database. */
async function withAuthServer(fn) {
  const dir = mkdtempSync(join(tmpdir(), 'clinscribe-e2e-auth-'));
  const server = new Server(dir, { PWA_AUTH: 'on', PWA_TRANSCRIBE_ENGINE: 'none' });
  await server.start();
  try {
    await fn(server);
  } finally {
    await server.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

scenario('the status page: an administrator sees the queue, recordings, backups, disk and engines; a clinician is refused', async ({ browser }) => {
  await withAuthServer(async (server) => {
    cli(server, ['user', 'add', 'chief', '--name', 'Chief Admin', '--admin', '--password-stdin'], `${PASSWORD}\n`);
    const clinicianToken = addUser(server, 'dr-status', 'Dr Status');
    for (const n of [1, 2]) {
      const r = await fetch(`${server.url}/api/v1/recordings`, {
        method: 'POST',
        headers: { authorization: `Bearer ${clinicianToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ patient_id: `patient-status-${n}`, duration_seconds: 5 }),
      });
      assert(r.status === 201, `create: ${r.status}`);
    }
    const context = await browser.newContext();
    // Before signing in, the app's own requests are refused (401) by design.
    const page = await newPage(context, [/401/]);
    await signInAs(page, server, 'chief');
    await page.click('#status-link');
    await page.waitForSelector('#health-status');
    const text = await page.textContent('#status');
    assert(/Health: (healthy|degraded)/.test(text), text);
    const recordings = await page.$$eval('table.status-table', (tables) => {
      const t = tables.find((x) => x.caption.textContent === 'Recordings');
      return [...t.tBodies[0].rows].map((r) => [...r.cells].map((c) => c.textContent));
    });
    assert(JSON.stringify(recordings) === JSON.stringify([['pending', '2']]), JSON.stringify(recordings));
    for (const caption of ['Components', 'Job queue', 'Disk', 'Engines and sessions']) {
      assert(text.includes(caption), `${caption} missing`);
    }
    assert(text.includes('This instance makes no scheduled backups'), text);
    assert(text.includes('no engine'), text);
    assert(!/null|undefined|NaN/.test(text), text);
    await page.screenshot({ path: join(SHOTS, 'status-admin.png'), fullPage: true });
    assertNoConsoleErrors(page);
    await context.close();

    const other = await browser.newContext();
    // The refused fetches are logged by the browser as failed resources (401 before signing in, then 403).
    const clinicianPage = await newPage(other, [/401/, /403/]);
    await signInAs(clinicianPage, server, 'dr-status');
    assert(!(await clinicianPage.$('#status-link')), 'a clinician is offered no status page');
    await clinicianPage.goto(server.url + '/status');
    await ready(clinicianPage);
    const refused = await clinicianPage.waitForSelector('#status [role=alert]');
    assert((await refused.textContent()).includes('Only an administrator'), await refused.textContent());
    assertNoConsoleErrors(clinicianPage);
    await other.close();
  });
});

scenario('first run: the setup link creates the administrator, who is then signed in', async ({ browser }) => {
  await withAuthServer(async (server) => {
    const link = await waitFor('the setup link', () => server.lines.find((l) => l.startsWith('First run:')));
    const url = link.match(/http:\/\/\S+\/setup\?code=[0-9a-f]{64}/)[0];
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    // The second use of the link is refused (403) by design.
    const page = await newPage(context, [/401/, /403/]);
    await page.goto(url);
    await ready(page);
    await page.fill('#setup-username', 'admin');
    await page.fill('#setup-name', 'Clinic Admin');
    await page.fill('#setup-password', PASSWORD);
    await page.click('#set-up');
    await page.waitForURL(server.url + '/');
    await ready(page);
    assert((await page.textContent('#signed-in-as')) === 'Clinic Admin', 'signed in as the new admin');
    // The link works once.
    await page.goto(url);
    await ready(page);
    await page.fill('#setup-username', 'admin2');
    await page.fill('#setup-name', 'Another');
    await page.fill('#setup-password', PASSWORD);
    await page.click('#set-up');
    await page.waitForSelector('#setup-error:has-text("not valid")');
    const users = cli(server, ['user', 'list']);
    assert(/^admin\s+admin\s+active\s+yes/m.test(users) && !users.includes('admin2'), users);
    assertNoConsoleErrors(page);
    await context.close();
  });
});

scenario('signed out and offline, a dictation waits for its own clinician: another one signing in does not get it', async ({ browser }) => {
  await withAuthServer(async (server) => {
    const tokenA = addUser(server, 'dr-a', 'Dr A');
    const tokenB = addUser(server, 'dr-b', 'Dr B');
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    // Signed out, the app's requests are refused (401) by design.
    const page = await newPage(context, [/401/, /Failed to load resource/]);
    // A wrong password says so, and signs nobody in.
    await page.goto(server.url + '/signin');
    await ready(page);
    await page.fill('#username', 'dr-a');
    await page.fill('#password', 'not the password at all');
    await page.click('#sign-in');
    await page.waitForSelector('#sign-in-error:has-text("Incorrect username or password")');

    await signInAs(page, server, 'dr-a');
    assert((await page.textContent('#signed-in-as')) === 'Dr A', 'signed in as Dr A');
    await controlledByServiceWorker(page);
    await page.click('#sign-out');
    await page.waitForURL(server.url + '/signin');
    await ready(page);

    // Signed out and offline: recording still works.
    await context.setOffline(true);
    await page.goto(server.url + '/record/patient-auth-1');
    await ready(page);
    const recorded = await recordOnce(page, 2000);
    await page.goto(server.url + '/signin');
    await ready(page);
    const waiting = await page.textContent('#waiting');
    assert(waiting.includes('1 dictation waits') && waiting.includes('1 by dr-a'), waiting);
    await context.setOffline(false);

    // Dr B signs in on the same browser: Dr A's dictation neither uploads nor
    // shows, and Dr A's recent patients are not offered.
    await signInAs(page, server, 'dr-b');
    assert(!(await page.textContent('#main')).includes('patient-auth-1'), 'Dr A’s patient on Dr B’s start page');
    await page.goto(server.url + '/queue');
    await ready(page);
    await sleep(3000);
    assert(!(await page.$(`#local-list li[data-key="${recorded.key}"]`)), 'Dr A’s dictation is not in Dr B’s list');
    assert((await recordingsOf(server, tokenB)).length === 0, 'nothing uploaded under Dr B');
    assert((await recordingsOf(server, tokenA)).length === 0, 'nothing uploaded yet');
    await page.click('#sign-out');
    await page.waitForURL(server.url + '/signin');

    // Dr A signs in again: it uploads, under Dr A, once; their patient is offered.
    await signInAs(page, server, 'dr-a');
    await page.waitForSelector('.chips a:has-text("patient-auth-1")');
    const mine = await waitFor('the dictation on the server', async () => {
      const found = (await recordingsOf(server, tokenA)).filter((r) => r.local_storage_key === recorded.key);
      return found.length ? found : null;
    });
    assert(mine.length === 1 && mine[0].clinician_id === 'dr-a' && mine[0].audio_sha256 === recorded.sha256, JSON.stringify(mine));
    assert((await recordingsOf(server, tokenB)).length === 0, 'still nothing under Dr B');
    await page.goto(server.url + '/queue');
    await ready(page);
    await page.waitForSelector(`#local-list li[data-key="${recorded.key}"][data-state="uploaded"]`);
    await page.screenshot({ path: join(SHOTS, 'signed-in-queue.png'), fullPage: true });
    assertNoConsoleErrors(page);
    await context.close();
  });
});

// ---------------------------------------------------------------- single sign-on

/** A port free on loopback now (for a process that must know another's URL before it starts). */
async function freePort() {
  const probe = createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address();
  await new Promise((r) => probe.close(r));
  return port;
}

const OIDC_CLIENT = { id: 'clinscribe', secret: 'the test client secret' };

/** The real OpenID Provider (e2e/oidc-provider.mjs: the npm package oidc-provider). */
class OidcProvider {
  constructor(port, redirectUri, accounts) {
    this.issuer = `http://127.0.0.1:${port}`;
    this.env = {
      OIDC_PORT: String(port),
      OIDC_REDIRECT_URI: redirectUri,
      OIDC_CLIENT_ID: OIDC_CLIENT.id,
      OIDC_CLIENT_SECRET: OIDC_CLIENT.secret,
      OIDC_ACCOUNTS: JSON.stringify(accounts),
    };
  }

  async start() {
    this.child = spawn(process.execPath, [join(ROOT, 'e2e/oidc-provider.mjs')], {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: this.child.stdout });
    await new Promise((resolveLine, reject) => {
      lines.once('line', resolveLine);
      this.child.once('exit', (code) => reject(new Error(`oidc-provider exited with ${code}`)));
    });
  }

  async stop() {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }

  /** From now on, the token endpoint's ID tokens are altered this way (`none`: not). */
  async tamper(mode) {
    const response = await fetch(`${this.issuer}/__test/tamper?mode=${mode}`);
    assert(response.ok && (await response.json()).tamper === mode, `tamper ${mode}`);
  }
}

/** A PWA_AUTH=on server with single sign-on through a provider that knows `accounts`. */
async function withSingleSignOn(env, accounts, fn) {
  const dir = mkdtempSync(join(tmpdir(), 'clinscribe-e2e-sso-'));
  const providerPort = await freePort();
  const server = new Server(dir, {
    PWA_AUTH: 'on',
    PWA_TRANSCRIBE_ENGINE: 'none',
    PWA_OIDC_ISSUER: `http://127.0.0.1:${providerPort}`,
    PWA_OIDC_CLIENT_ID: OIDC_CLIENT.id,
    PWA_OIDC_CLIENT_SECRET: OIDC_CLIENT.secret,
    PWA_OIDC_SCOPES: 'profile email roles',
    PWA_OIDC_ADMIN_CLAIM: 'roles',
    PWA_OIDC_NAME: 'Clinic Sign-On',
    ...env,
  });
  server.port = await freePort();
  await server.start();
  const provider = new OidcProvider(providerPort, `${server.url}/api/v1/auth/oidc/callback`, accounts);
  await provider.start();
  try {
    await fn(server, provider);
  } finally {
    await provider.stop().catch(() => {});
    await server.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * In a fresh browser context: the sign-in page's single sign-on button, the
 * provider's login form, and back. Returns the context and page, on the page
 * the server sent the browser back to.
 */
async function signInThroughProvider(browser, server, provider, login) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  // Signed out, the app's requests are refused (401) by design; the
  // provider's pages have no favicon.
  const page = await newPage(context, [/401/, /404/, /Failed to load resource/]);
  await page.goto(server.url + '/signin');
  await ready(page);
  await page.click('#sign-in-sso:has-text("Sign in with Clinic Sign-On")');
  await page.waitForURL((url) => url.href.startsWith(provider.issuer));
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'the provider checks no password in development mode');
  await page.click('button.login-submit');
  await page.waitForURL((url) => url.href.startsWith(server.url) && !url.pathname.startsWith('/api/'));
  await ready(page);
  return { context, page };
}

async function sessionCookie(context) {
  return (await context.cookies()).find((c) => c.name === 'clinscribe_session');
}

const SSO_ACCOUNTS = {
  'dr-sso': { name: 'Dr Single Sign-On', email: 'dr.sso@clinic.example', roles: ['clinician'] },
  chief: { name: 'Chief Admin', roles: ['clinician', 'admin'] },
  'dr-linked': { name: 'Dr Linked' },
  stranger: { name: 'Not Registered' },
};

scenario('single sign-on: the code flow through a real OpenID Provider creates the clinician, signs them in, and their dictation uploads as theirs', async ({ browser }) => {
  await withSingleSignOn({}, SSO_ACCOUNTS, async (server, provider) => {
    const { context, page } = await signInThroughProvider(browser, server, provider, 'dr-sso');
    assert(new URL(page.url()).pathname === '/', page.url());
    assert((await page.textContent('#signed-in-as')) === 'Dr Single Sign-On', 'signed in as the provider’s name');
    const cookie = await sessionCookie(context);
    assert(cookie && cookie.httpOnly && cookie.sameSite === 'Strict', JSON.stringify(cookie));
    assert(!(await context.cookies()).some((c) => c.name === 'clinscribe_oidc' && c.value), 'the state cookie is cleared');
    const me = await page.evaluate(async () => (await fetch('/api/v1/auth/me')).json());
    assert(me.id === 'dr-sso' && me.role === 'clinician' && me.csrf_token, JSON.stringify(me));

    // The session works as a password one does: a dictation uploads under the user.
    await page.goto(server.url + '/record/patient-sso');
    await ready(page);
    const recorded = await recordOnce(page, 1500);
    await page.goto(server.url + '/queue');
    await ready(page);
    await page.waitForSelector(`#local-list li[data-key="${recorded.key}"][data-state="uploaded"]`);
    assertNoConsoleErrors(page);
    await context.close();

    // The admin claim makes an admin (a new account, created as one).
    const chief = await signInThroughProvider(browser, server, provider, 'chief');
    const chiefMe = await chief.page.evaluate(async () => (await fetch('/api/v1/auth/me')).json());
    assert(chiefMe.id === 'chief' && chiefMe.role === 'admin', JSON.stringify(chiefMe));
    const all = await chief.page.evaluate(async () => (await fetch('/api/v1/recordings?clinician_id=dr-sso&limit=100')).json());
    const mine = all.filter((r) => r.local_storage_key === recorded.key);
    assert(mine.length === 1 && mine[0].clinician_id === 'dr-sso' && mine[0].audio_sha256 === recorded.sha256, JSON.stringify(mine));
    assertNoConsoleErrors(chief.page);
    await chief.context.close();

    // A second sign-in finds the account by its subject: no second one.
    const again = await signInThroughProvider(browser, server, provider, 'dr-sso');
    assert((await again.page.textContent('#signed-in-as')) === 'Dr Single Sign-On', 'signed in again');
    await again.context.close();
    const users = cli(server, ['user', 'list']);
    assert(/^chief\s+admin\s+active\s+no\s+yes\s+Chief Admin$/m.test(users), users);
    assert(/^dr-sso\s+clinician\s+active\s+no\s+yes\s+Dr Single Sign-On$/m.test(users), users);
    assert(users.trim().split('\n').length === 3, `two users and the header: ${users}`);
  });
});

scenario('single sign-on refuses forged, expired, wrong-audience, wrong-issuer and wrong-nonce ID tokens, unregistered and disabled users', async ({ browser }) => {
  await withSingleSignOn({ PWA_OIDC_AUTO_CREATE: 'false' }, SSO_ACCOUNTS, async (server, provider) => {
    cli(server, ['user', 'add', 'dr-linked', '--name', 'Dr Linked', '--no-password', '--oidc-subject', 'dr-linked']);
    const refused = async (login, code, sentence) => {
      const { context, page } = await signInThroughProvider(browser, server, provider, login);
      const url = new URL(page.url());
      assert(url.pathname === '/signin' && url.searchParams.get('error') === code, `${login}: ${page.url()}`);
      await page.waitForSelector(`#sign-in-error:has-text("${sentence}")`);
      assert(!(await sessionCookie(context)), `${login}: no session cookie`);
      const me = await page.evaluate(async () => (await fetch('/api/v1/auth/me')).status);
      assert(me === 401, `${login}: /auth/me ${me}`);
      assertNoConsoleErrors(page);
      await context.close();
    };
    for (const mode of ['forged', 'expired', 'audience', 'issuer', 'nonce']) {
      await provider.tamper(mode);
      await refused('dr-linked', 'invalid', 'failed a security check');
    }
    await provider.tamper('none');

    // Only linked accounts may sign in (PWA_OIDC_AUTO_CREATE=false).
    await refused('stranger', 'unknown', 'No account here is linked');
    assert(!cli(server, ['user', 'list']).includes('stranger'), 'no account made');

    // A callback this browser did not begin (or a replayed one) is refused.
    const forgedCallback = await fetch(`${server.url}/api/v1/auth/oidc/callback?code=abc&state=not-ours`, { redirect: 'manual' });
    assert(forgedCallback.status === 303 && forgedCallback.headers.get('location') === '/signin?error=expired',
      `${forgedCallback.status} ${forgedCallback.headers.get('location')}`);

    const linked = await signInThroughProvider(browser, server, provider, 'dr-linked');
    assert((await linked.page.textContent('#signed-in-as')) === 'Dr Linked', 'the linked account signs in');
    await linked.page.screenshot({ path: join(SHOTS, 'signed-in-sso.png'), fullPage: true });
    await linked.context.close();

    cli(server, ['user', 'disable', 'dr-linked']);
    await refused('dr-linked', 'disabled', 'This account is disabled');
  });
});

// ---------------------------------------------------------------- main

async function main() {
  const spoken = prepareSpeech();
  const dir = mkdtempSync(join(tmpdir(), 'clinscribe-e2e-'));
  const server = new Server(dir);
  await server.start();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      `--use-file-for-fake-audio-capture=${spoken}`,
    ],
  });
  const shared = {};
  let failed = 0;
  // E2E_ONLY=regex runs the scenarios whose names match (while developing one).
  const only = process.env.E2E_ONLY ? new RegExp(process.env.E2E_ONLY) : null;
  const chosen = scenarios.filter(({ name }) => !only || only.test(name));
  for (const { name, fn } of chosen) {
    const started = Date.now();
    try {
      await fn({ browser, server, shared });
      console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}\n     ${e.stack || e}`);
    }
  }
  await browser.close();
  await server.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
  console.log(`\ne2e: ${chosen.length - failed} passed, ${failed} failed; screenshots in ${SHOTS}`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
