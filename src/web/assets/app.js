// clinscribe's web app: one page shell, four views chosen by the path.
//   /                      start: enter or pick a patient
//   /record/{patient_id}   record, pause, stop, listen, save
//   /queue                 every dictation on this device and on the server
//   /recordings/{id}       one recording: audio, transcript, verification
//   /signin                sign in (and how many dictations wait for it)
//   /setup?code=…          the first run: create the first administrator
// Plain modules, no framework: views are built with the small `h` helper.

import * as legacy from './legacy.js';
import * as session from './session.js';
import * as store from './store.js';
import { Recorder } from './recorder.js';
import { UploadManager } from './uploader.js';
import { checksSection } from './checks.js';
import { deleteControl, historySection, sendSavedEdits, transcriptSection } from './review.js';

const main = document.getElementById('main');
const uploads = new UploadManager();

// ---------------------------------------------------------------- helpers

/** Creates an element: h('button', {class: 'big', onclick: fn}, 'Text', child, ...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function show(title, ...content) {
  document.title = `${title} · clinscribe`;
  main.replaceChildren(h('h1', { tabindex: '-1', id: 'page-title' }, title), ...content.filter(Boolean));
  document.getElementById('page-title').focus({ preventScroll: true });
}

function announce(message) {
  document.getElementById('announcer').textContent = message;
}

function formatTime(ms) {
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

function formatBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KB', 'MB', 'GB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function sha256Hex(blob) {
  const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** Navigates inside the app without a reload. */
function go(path) {
  history.pushState(null, '', path);
  route();
}

function link(path, text, attrs = {}) {
  return h('a', { href: path, ...attrs, onclick: (e) => { e.preventDefault(); go(path); } }, text);
}

async function api(path, method = 'GET') {
  if (!navigator.onLine) throw new Error('offline');
  const headers = { accept: 'application/json' };
  const response = await fetch(path, { method, headers: method === 'GET' ? headers : await session.withCsrf(headers) });
  if (response.status === 401) {
    await session.signedOut();
    await showWho();
    throw new Error('Signed out: sign in to see the server’s recordings (recording works meanwhile).');
  }
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (typeof body.detail === 'string') message = body.detail;
    } catch {
      // not JSON
    }
    throw new Error(message);
  }
  return response.json();
}

// ---------------------------------------------------------------- recent patients

// Kept per clinician: on a shared device one does not see another's patients.
let recentKey = 'recent-patients:';

function recentPatients() {
  try {
    return JSON.parse(localStorage.getItem(recentKey) || '[]');
  } catch {
    return [];
  }
}

function rememberPatient(id) {
  const list = [id, ...recentPatients().filter((p) => p !== id)].slice(0, 8);
  localStorage.setItem(recentKey, JSON.stringify(list));
}

// ---------------------------------------------------------------- views

function startView() {
  const input = h('input', {
    id: 'patient-id', name: 'patient_id', required: true, maxlength: '128',
    autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', inputmode: 'text',
  });
  const form = h('form', {
    class: 'card',
    onsubmit: (e) => {
      e.preventDefault();
      const id = input.value.trim();
      if (id) go(`/record/${encodeURIComponent(id)}`);
    },
  },
  h('label', { for: 'patient-id' }, 'Patient ID'),
  input,
  h('button', { type: 'submit', class: 'primary big' }, 'Start dictation'));
  const recent = recentPatients();
  show('New dictation', form,
    recent.length
      ? h('section', { class: 'card', 'aria-labelledby': 'recent-title' },
        h('h2', { id: 'recent-title' }, 'Recent patients'),
        h('ul', { class: 'chips' }, recent.map((p) => h('li', {}, link(`/record/${encodeURIComponent(p)}`, p, { class: 'chip' })))))
      : null,
    h('p', {}, link('/queue', 'See all dictations →')));
  input.focus();
}

let activeRecorder = null;
let backgroundSync = null;

/**
 * Asks the browser to fire a sync (upload) when it can, should this page close
 * first. Resolves once the browser holds the request, so that a page closed
 * right after "Saved" still uploads.
 */
async function requestBackgroundSync() {
  if (backgroundSync) await backgroundSync.register('upload').catch(() => {});
}

function recordView(patientId) {
  rememberPatient(patientId);
  const timer = h('output', { class: 'timer', 'aria-label': 'Elapsed time' }, '00:00');
  const level = h('meter', { min: '0', max: '1', value: '0', class: 'level', 'aria-label': 'Input level' });
  const status = h('p', { class: 'status', role: 'status' }, 'Ready to record.');
  const recordBtn = h('button', { class: 'primary big', id: 'record' }, 'Record');
  const pauseBtn = h('button', { class: 'big', id: 'pause', disabled: true }, 'Pause');
  const stopBtn = h('button', { class: 'danger big', id: 'stop', disabled: true }, 'Stop');
  const review = h('section', { class: 'card', hidden: true, 'aria-labelledby': 'review-title' });

  recordBtn.addEventListener('click', async () => {
    try {
      activeRecorder = new Recorder({
        patientId,
        onTick: (ms) => { timer.textContent = formatTime(ms); },
        onLevel: (v) => { level.value = v; },
        onError: (e) => { status.textContent = `Could not save audio on this device: ${e.message}`; },
      });
      await activeRecorder.start();
      main.dataset.dictation = activeRecorder.key;
      recordBtn.disabled = true;
      pauseBtn.disabled = false;
      stopBtn.disabled = false;
      status.textContent = 'Recording… audio is saved on this device every second.';
      announce('Recording started');
    } catch (e) {
      status.textContent = `Cannot record: ${e.message}`;
      activeRecorder = null;
    }
  });
  pauseBtn.addEventListener('click', () => {
    if (!activeRecorder) return;
    if (activeRecorder.state === 'recording') {
      activeRecorder.pause();
      pauseBtn.textContent = 'Resume';
      status.textContent = 'Paused.';
    } else {
      activeRecorder.resume();
      pauseBtn.textContent = 'Pause';
      status.textContent = 'Recording…';
    }
  });
  stopBtn.addEventListener('click', async () => {
    if (!activeRecorder) return;
    pauseBtn.disabled = true;
    stopBtn.disabled = true;
    const dictation = await activeRecorder.stop();
    activeRecorder = null;
    status.textContent = 'Stopped. Listen, then save or discard.';
    announce('Recording stopped');
    await showReview(review, dictation, recordBtn, status);
  });

  show(`Dictation for ${patientId}`,
    h('div', { class: 'card recorder' },
      h('div', { class: 'readout' }, timer, level),
      h('div', { class: 'controls' }, recordBtn, pauseBtn, stopBtn),
      status),
    review,
    h('p', {}, link('/queue', 'See all dictations →')));
}

async function showReview(section, dictation, recordBtn, status) {
  const blob = await store.audioBlob(dictation.key, dictation.mime_type);
  const url = URL.createObjectURL(blob);
  const digest = await sha256Hex(blob);
  const save = h('button', { class: 'primary big', id: 'save' }, 'Save and upload');
  const discard = h('button', { class: 'big', id: 'discard' }, 'Discard');
  section.replaceChildren(
    h('h2', { id: 'review-title' }, 'Listen before saving'),
    h('audio', { controls: true, src: url, class: 'player' }),
    h('p', { class: 'muted', dataset: { sha256: digest, key: dictation.key, bytes: String(blob.size) }, id: 'recorded-audio' },
      `${formatBytes(blob.size)}, ${dictation.duration_seconds} s`),
    h('div', { class: 'controls' }, save, discard));
  section.hidden = false;
  save.addEventListener('click', async () => {
    await store.updateDictation(dictation.key, { state: store.State.RECORDED, sha256: digest });
    // Before saying "saved": the page may be closed the moment it does.
    await requestBackgroundSync();
    URL.revokeObjectURL(url);
    section.hidden = true;
    recordBtn.disabled = false;
    status.textContent = navigator.onLine
      ? 'Saved. Uploading in the background; see the queue.'
      : 'Saved on this device. It will upload when you are back online.';
    announce('Dictation saved');
    uploads.kick();
  });
  discard.addEventListener('click', async () => {
    if (!confirm('Discard this dictation? It cannot be recovered.')) return;
    await store.deleteDictation(dictation.key);
    URL.revokeObjectURL(url);
    section.hidden = true;
    recordBtn.disabled = false;
    status.textContent = 'Discarded.';
  });
  save.focus();
}

/** A recording's status on the server, as the clinician reads it. */
const SERVER_LABELS = {
  pending: 'Waiting for audio',
  uploading: 'Uploading',
  queued: 'Queued for transcription',
  processing: 'Transcribing…',
  completed: 'Transcribed',
  error: 'Error',
};
const IN_PROGRESS = new Set(['queued', 'processing']);

/** A button that puts a recording in `error` back in the transcription queue. */
function retryButton(id, after) {
  const button = h('button', { type: 'button', class: 'secondary retry' }, 'Retry');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await api(`/api/v1/recordings/${encodeURIComponent(id)}/retry`, 'POST');
    } catch (e) {
      button.replaceWith(h('span', { class: 'error-text', role: 'alert' }, `Cannot retry: ${e.message}`));
      return;
    }
    await after();
  });
  return button;
}

const LOCAL_LABELS = {
  recording: 'Recording',
  review: 'Not saved yet',
  recorded: 'Saved on this device',
  uploading: 'Uploading',
  uploaded: 'Uploaded',
  error: 'Upload refused',
};

/**
 * A refused dictation: the clinician may correct its patient id (the usual
 * reason a server refuses one) and send it again. Never retried by itself.
 */
function correction(d) {
  const id = `fix-${d.key}`;
  const input = h('input', {
    id, class: 'patient-fix', value: d.patient_id, maxlength: '128', required: true,
    autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false',
  });
  return h('form', {
    class: 'fix',
    onsubmit: (e) => {
      e.preventDefault();
      const patientId = input.value.trim();
      if (patientId) uploads.retry(d.key, { patient_id: patientId });
    },
  },
  h('label', { for: id }, 'Patient ID'),
  input,
  h('button', { type: 'submit', class: 'small' }, 'Send again'));
}

/**
 * The clinician's recordings on the server, kept current from the change
 * feed: each poll fetches only what changed since the last one (deletions
 * included), instead of the whole list. Kept in memory for this page load.
 */
const serverCopy = { next: '0', byId: new Map() };

async function followChangeFeed() {
  const PAGE = 1000;
  for (;;) {
    const page = await api(`/api/v1/changes?since=${encodeURIComponent(serverCopy.next)}&limit=${PAGE}`);
    for (const change of page.changes) {
      if (change.deleted) serverCopy.byId.delete(change.id);
      else serverCopy.byId.set(change.id, change.recording);
    }
    serverCopy.next = page.next;
    if (page.changes.length < PAGE) break;
  }
  // Newest first, as the list endpoint orders them.
  return [...serverCopy.byId.values()]
    .sort((a, b) => (a.created_at === b.created_at ? (a.id < b.id ? 1 : -1) : a.created_at < b.created_at ? 1 : -1));
}

async function queueView() {
  const localList = h('ul', { class: 'list', id: 'local-list', 'aria-live': 'polite' });
  const serverList = h('ul', { class: 'list', id: 'server-list' });
  const serverNote = h('p', { class: 'muted', id: 'server-note' });
  const storageNote = h('p', { class: 'muted', id: 'storage' });
  const adopted = legacy.adoptedCount();
  const adoptedNote = adopted
    ? h('p', { class: 'note', id: 'adopted-note' },
      `${adopted} dictation${adopted === 1 ? ' was' : 's were'} brought over from the previous version of the app.`)
    : null;
  show('Dictations',
    h('section', { class: 'card', 'aria-labelledby': 'local-title' },
      h('h2', { id: 'local-title' }, 'On this device'), adoptedNote, localList, storageNote),
    h('section', { class: 'card', 'aria-labelledby': 'server-title' },
      h('h2', { id: 'server-title' }, 'On the server'), serverNote, serverList));

  const renderLocal = async () => {
    // Only the dictations of whoever records here now (another user's stay hidden).
    const who = await store.recordingUser();
    const dictations = (await store.listDictations()).filter((d) => !d.user_id || d.user_id === who);
    localList.replaceChildren(...(dictations.length ? dictations.map((d) => {
      const fraction = uploads.progress.get(d.key);
      const item = h('li', { class: `item state-${d.state}`, dataset: { key: d.key, state: d.state } },
        h('div', { class: 'item-main' },
          h('strong', {}, d.patient_id),
          h('span', { class: 'muted' }, ` ${new Date(d.created_at).toLocaleString()} · ${d.duration_seconds || 0} s · ${formatBytes(d.bytes)}`),
          d.recovered ? h('span', { class: 'badge' }, 'recovered') : null,
          d.legacy_key ? h('span', { class: 'badge' }, 'from the previous version') : null),
        h('div', { class: 'item-state' },
          h('span', { class: 'state' }, LOCAL_LABELS[d.state] || d.state),
          d.state === 'uploading' && fraction !== undefined
            ? h('progress', { max: '1', value: String(fraction), 'aria-label': 'Upload progress' }) : null,
          d.state === 'error' ? h('span', { class: 'error-text', role: 'alert' }, d.error) : null,
          d.state === 'error' ? correction(d) : null,
          d.recording_id ? link(`/recordings/${d.recording_id}`, 'Open') : null));
      return item;
    }) : [h('li', { class: 'muted' }, 'No dictations on this device.')]));
  };
  const renderServer = async () => {
    try {
      const recordings = (await followChangeFeed()).slice(0, 100);
      serverNote.textContent = recordings.length ? '' : 'No recordings yet.';
      serverList.replaceChildren(...recordings.map((r) => h('li', { class: `item status-${r.status}`, dataset: { id: r.id, key: r.local_storage_key || '' } },
        h('div', { class: 'item-main' },
          h('strong', {}, r.patient_id),
          h('span', { class: 'muted' }, ` ${new Date(r.created_at).toLocaleString()} · ${r.duration_seconds ?? '?'} s`)),
        h('div', { class: 'item-state' },
          h('span', { class: 'state' }, SERVER_LABELS[r.status] || r.status),
          r.error_message ? h('span', { class: 'error-text' }, r.error_message) : null,
          r.status === 'error' ? retryButton(r.id, renderServer) : null,
          link(`/recordings/${r.id}`, 'Open')))));
      // Faster while something is being transcribed, so progress shows without a reload.
      schedule(recordings.some((r) => IN_PROGRESS.has(r.status)) ? 2000 : 10000);
    } catch (e) {
      serverNote.textContent = e.message === 'offline'
        ? 'Offline: the server’s list will show when you are back online.'
        : `Cannot reach the server: ${e.message}`;
    }
  };
  const renderStorage = async () => {
    if (!navigator.storage || !navigator.storage.estimate) return;
    const { usage, quota } = await navigator.storage.estimate();
    const persisted = navigator.storage.persisted ? await navigator.storage.persisted() : false;
    storageNote.textContent = `Storage used: ${formatBytes(usage)} of ${formatBytes(quota)}${persisted ? ' (persistent)' : ''}.`;
  };
  let timer = null;
  let stopped = false;
  function schedule(ms) {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(renderServer, ms);
  }
  await Promise.all([renderLocal(), renderServer(), renderStorage()]);
  const off = [store.onChange(renderLocal), uploads.onProgress(renderLocal)];
  const online = () => renderServer();
  addEventListener('online', online);
  cleanup = () => { stopped = true; off.forEach((f) => f()); clearTimeout(timer); removeEventListener('online', online); };
}

async function recordingView(id) {
  show('Recording', h('p', { class: 'muted' }, 'Loading…'));
  let timer = null;
  let stopped = false;
  let shownVersion = null;
  cleanup = () => { stopped = true; clearTimeout(timer); };
  const url = `/api/v1/recordings/${encodeURIComponent(id)}`;
  // A poll names the version shown: while nothing changed the answer is a 304,
  // which carries no patient data (and so is no read in the audit trail).
  const unchanged = async () => {
    if (shownVersion === null || !navigator.onLine) return false;
    try {
      const response = await fetch(url, { headers: { accept: 'application/json', 'if-none-match': `"${shownVersion}"` } });
      return response.status === 304;
    } catch {
      return false;
    }
  };
  const poll = async () => {
    if (stopped) return;
    if (await unchanged()) {
      if (!stopped) timer = setTimeout(poll, 2000);
      return;
    }
    await render();
  };
  const render = async () => {
    let r;
    try {
      r = await api(url);
    } catch (e) {
      show('Recording', h('p', { class: 'error-text', role: 'alert' },
        e.message === 'offline' ? 'Offline: recordings on the server show when you are back online.' : e.message),
      h('p', {}, link('/queue', '← Dictations')));
      return;
    }
    if (stopped) return;
    shownVersion = r.version;
    const row = (label, value) => [h('dt', {}, label), h('dd', {}, value ?? '—')];
    const transcript = r.final_transcript || r.transcript;
    const checks = checksSection(h, r);
    const review = await transcriptSection(h, r, render, checks);
    const history = await historySection(h, r.id);
    if (stopped) return;
    show(`Recording for ${r.patient_id}`,
      h('section', { class: 'card' },
        h('dl', { class: 'facts' },
          row('Status', h('span', { class: `state status-${r.status}`, id: 'recording-status' }, SERVER_LABELS[r.status] || r.status)),
          r.error_message ? row(r.status === 'error' ? 'Error' : 'Last attempt', h('span', { class: 'error-text', id: 'recording-error' }, r.error_message)) : null,
          r.status === 'error' ? row('', retryButton(r.id, render)) : null,
          row('Created', new Date(r.created_at).toLocaleString()),
          row('Uploaded', r.uploaded_at ? new Date(r.uploaded_at).toLocaleString() : null),
          row('Processed', r.processed_at ? new Date(r.processed_at).toLocaleString() : null),
          row('Duration', r.duration_seconds != null ? `${r.duration_seconds} s` : null),
          row('Model', transcript ? r.whisper_model : null),
          row('Upload attempts', String(r.upload_attempts)))),
      r.audio_sha256
        ? h('section', { class: 'card' }, h('h2', {}, 'Audio'),
          h('audio', { controls: true, preload: 'metadata', src: `/api/v1/recordings/${r.id}/audio`, class: 'player' }))
        : null,
      review ?? h('section', { class: 'card' }, h('h2', {}, 'Transcript'),
        h('p', { class: 'muted', id: 'transcript-pending' },
          IN_PROGRESS.has(r.status) ? `${SERVER_LABELS[r.status]} The transcript appears here when it is ready.`
            : r.draft_transcript ? `Draft from the device: ${r.draft_transcript}` : 'Not transcribed yet.')),
      checks.section,
      history,
      deleteControl(h, r, () => { announce('Recording deleted.'); go('/queue'); }),
      h('p', {}, link('/queue', '← Dictations')));
    // Follow the transcription without a reload (not while the clinician edits).
    if (!review && (IN_PROGRESS.has(r.status) || r.status === 'pending')) timer = setTimeout(poll, 2000);
  };
  await render();
}

// ---------------------------------------------------------------- signing in

/** The header's line: who is signed in, with a way out; or a way in. */
async function showWho() {
  const el = document.getElementById('who');
  if (!el) return;
  const user = await session.current();
  // Administrators (and the one clinician of PWA_AUTH=off, on loopback) see the status page.
  const statusLink = user && (user.role === 'admin' || !user.csrf_token)
    ? [link('/status', 'Status', { id: 'status-link' }), ' ']
    : [];
  if (user && !user.csrf_token) {
    // Not a browser session (PWA_AUTH=off): nothing to sign out of.
    el.replaceChildren(...statusLink, h('span', { id: 'signed-in-as' }, user.display_name));
  } else if (user) {
    const out = h('button', {
      class: 'small', id: 'sign-out',
      onclick: async () => { await session.signOut().catch(() => {}); location.assign('/signin'); },
    }, 'Sign out');
    el.replaceChildren(...statusLink, h('span', { id: 'signed-in-as' }, user.display_name), ' ', out);
  } else {
    el.replaceChildren(link('/signin', 'Sign in', { id: 'sign-in-link' }));
  }
}

/** The sentence about dictations waiting on this device for a sign-in. */
async function waitingNote() {
  const counts = await session.waitingByUser();
  if (!counts.size) return null;
  const parts = [...counts].map(([who, n]) => `${n} by ${who || 'someone not yet signed in'}`);
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  return h('p', { class: 'note', id: 'waiting' },
    `${total} dictation${total === 1 ? '' : 's'} wait${total === 1 ? 's' : ''} on this device to upload (${parts.join(', ')}); `
    + 'each uploads when the clinician who recorded it signs in.');
}

async function signInView() {
  const user = h('input', { id: 'username', name: 'username', required: true, autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false' });
  const password = h('input', { id: 'password', name: 'password', type: 'password', required: true, autocomplete: 'current-password' });
  const error = h('p', { class: 'error-text', role: 'alert', id: 'sign-in-error' });
  const form = h('form', {
    class: 'card',
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      try {
        await session.signIn(user.value.trim(), password.value);
        // A fresh page: nothing of the previous user stays in memory.
        location.assign('/');
      } catch (err) {
        error.textContent = navigator.onLine ? err.message : 'Offline: sign in when the network is back. Recording works meanwhile.';
        password.value = '';
      }
    },
  },
  h('label', { for: 'username' }, 'User'), user,
  h('label', { for: 'password' }, 'Password'), password,
  error,
  h('button', { type: 'submit', class: 'primary big', id: 'sign-in' }, 'Sign in'));
  const failed = new URLSearchParams(location.search).get('error');
  if (failed) error.textContent = SINGLE_SIGN_ON_ERRORS[failed] || SINGLE_SIGN_ON_ERRORS.default;
  const sso = await singleSignOn();
  const ssoLink = sso && h('p', { class: 'card' }, h('a', {
    class: 'button primary big', id: 'sign-in-sso', href: sso.start_url,
  }, `Sign in with ${sso.name}`));
  show('Sign in', await waitingNote(), ssoLink, form, h('p', {}, link('/', 'Record without signing in →')));
  user.focus();
}

/** Why a single sign-on came back without signing in (the callback's `?error=`). */
const SINGLE_SIGN_ON_ERRORS = {
  expired: 'The single sign-on took too long, or was begun in another browser. Please sign in again.',
  refused: 'The identity provider did not sign you in.',
  invalid: 'The identity provider’s answer failed a security check, so you are not signed in. Please tell your administrator.',
  unknown: 'No account here is linked to your single sign-on identity. Ask an administrator to add you.',
  disabled: 'This account is disabled.',
  taken: 'An account with your user name exists here but is not linked to your single sign-on identity. Ask an administrator.',
  'no-id': 'The identity provider gave no user name that can be used here. Ask an administrator.',
  provider: 'The identity provider could not be reached. Try again, or sign in with a password.',
  unavailable: 'The server could not record the sign-in. Please try again shortly.',
  default: 'Single sign-on did not sign you in. Please try again.',
};

/** The single sign-on provider {name, start_url}, or null (none, or offline). */
async function singleSignOn() {
  if (!navigator.onLine) return null;
  try {
    const response = await fetch('/api/v1/auth/providers', { headers: { accept: 'application/json' } });
    return response.ok ? (await response.json()).single_sign_on : null;
  } catch {
    return null;
  }
}

async function setupView() {
  const code = new URLSearchParams(location.search).get('code') || '';
  const field = (id, label, attrs = {}) => [h('label', { for: id }, label), h('input', { id, name: id, required: true, ...attrs })];
  const error = h('p', { class: 'error-text', role: 'alert', id: 'setup-error' });
  const form = h('form', {
    class: 'card',
    onsubmit: async (e) => {
      e.preventDefault();
      const value = (id) => form.querySelector(`#${id}`).value;
      try {
        await session.setUp(code, value('setup-username').trim(), value('setup-name').trim(), value('setup-password'));
        location.assign('/');
      } catch (err) {
        error.textContent = err.message;
      }
    },
  },
  field('setup-username', 'Administrator user id', { autocomplete: 'username', autocapitalize: 'none' }),
  field('setup-name', 'Name'),
  field('setup-password', 'Password (at least 15 characters)', { type: 'password', autocomplete: 'new-password', minlength: '15' }),
  error,
  h('button', { type: 'submit', class: 'primary big', id: 'set-up' }, 'Create administrator'));
  show('First run', h('p', {}, 'No administrator exists yet. Create the first one; this link works once.'), form);
}

// ---------------------------------------------------------------- status (administrators)

/** Seconds as "3 h 5 min", "4 min 10 s" or "12 s". */
function formatSeconds(seconds) {
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${s} s`;
}

function table(caption, headings, rows) {
  return h('table', { class: 'status-table' },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, headings.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows.length
      ? rows.map((cells) => h('tr', {}, cells.map((c, i) => (i === 0 ? h('th', { scope: 'row' }, c) : h('td', {}, c)))))
      : h('tr', {}, h('td', { colspan: String(headings.length) }, 'None'))));
}

/** The backup line: when the last one was made, or that none is known. */
function backupSummary(b) {
  if (b.last_success_at) return `Last scheduled backup ${b.last_success_at} (took ${b.last_duration_seconds.toFixed(1)} s).`;
  if (b.newest_file) return `Newest backup file ${b.newest_file.name}, ${formatBytes(b.newest_file.bytes)}, written ${b.newest_file.modified_at}.`;
  return b.directory ? `No backup in ${b.directory} yet.` : 'This instance makes no scheduled backups (PWA_BACKUP_INTERVAL is unset).';
}

/** The instance at a glance: health, queue, recordings, backup, disk, engines. */
async function statusView() {
  const body = h('div', { id: 'status' }, h('p', { class: 'status' }, 'Loading…'));
  show('Status', body);
  const render = async () => {
    let status;
    let health;
    try {
      [status, health] = await Promise.all([api('/api/v1/status'), api('/api/v1/health')]);
    } catch (e) {
      body.replaceChildren(h('p', { class: 'error-text', role: 'alert' }, `Cannot show the status: ${e.message}`));
      return;
    }
    const b = status.backup;
    body.replaceChildren(...[
      h('p', { class: 'status', id: 'health-status', dataset: { health: health.status } },
        `Health: ${health.status}${health.detail ? ` (${health.detail})` : ''}. `
        + `clinscribe ${status.version} on ${status.backend}, up ${formatSeconds(status.uptime_seconds)}.`),
      table('Components', ['Component', 'State'], Object.entries(health.components)),
      table('Job queue', ['Kind', 'State', 'Jobs', 'Longest wait'], status.jobs.map((j) => [
        j.kind, j.state, String(j.count), j.oldest_due_seconds == null ? '' : formatSeconds(j.oldest_due_seconds)])),
      table('Recordings', ['Status', 'Recordings'], status.recordings.map((r) => [r.status, String(r.count)])),
      h('h2', {}, 'Backups'),
      h('p', { id: 'backup-summary' }, backupSummary(b)),
      b.last_failure_at ? h('p', { class: 'error-text', role: 'alert' }, `Last failure ${b.last_failure_at}: ${b.last_failure}`) : null,
      table('Disk', ['Volume', 'Free', 'Size'], status.disk.map((v) => [
        v.path, `${formatBytes(v.free_bytes)} (${Math.round((100 * v.free_bytes) / Math.max(1, v.total_bytes))} %)`, formatBytes(v.total_bytes)])),
      table('Engines and sessions', ['What', 'Now'], [
        ['Transcription', status.engines.transcription],
        ['Clinical checks', status.engines.extraction],
        ['Browser sessions', String(status.sessions_active ?? '?')],
        ['Uploads under way', String(status.upload_sessions_open ?? '?')],
        ['Write-ahead log', status.wal_bytes == null ? 'n/a' : formatBytes(status.wal_bytes)],
        ['Server memory', status.resident_memory_bytes == null ? '?' : formatBytes(status.resident_memory_bytes)],
        ['Open files', String(status.open_fds ?? '?')],
      ]),
    ].filter(Boolean));
  };
  await render();
  const timer = setInterval(render, 5000);
  cleanup = () => clearInterval(timer);
}

// ---------------------------------------------------------------- router

let cleanup = () => {};

function route() {
  cleanup();
  cleanup = () => {};
  const path = location.pathname;
  let m;
  if (activeRecorder && !path.startsWith('/record/')) {
    // Leaving while recording: the audio so far is on this device; stop cleanly.
    activeRecorder.stop().catch(() => {});
    activeRecorder = null;
  }
  if (path === '/signin') signInView();
  else if (path === '/setup') setupView();
  else if (path === '/') startView();
  else if ((m = path.match(/^\/record\/(.+)$/))) recordView(decodeURIComponent(m[1]));
  else if (path === '/queue') queueView();
  else if (path === '/status') statusView();
  else if ((m = path.match(/^\/recordings\/([^/]+)$/))) recordingView(m[1]);
  else show('Not found', h('p', {}, link('/', 'Start')));
  for (const a of document.querySelectorAll('nav a')) {
    a.toggleAttribute('aria-current', a.getAttribute('href') === path);
  }
}

// ---------------------------------------------------------------- start

function showConnectivity() {
  const el = document.getElementById('connectivity');
  el.textContent = navigator.onLine ? 'Online' : 'Offline';
  el.dataset.online = String(navigator.onLine);
}

addEventListener('online', showConnectivity);
addEventListener('offline', showConnectivity);
addEventListener('popstate', route);
for (const a of document.querySelectorAll('nav a')) {
  a.addEventListener('click', (e) => { e.preventDefault(); go(a.getAttribute('href')); });
}
addEventListener('beforeunload', (e) => {
  // The audio so far is safe either way; this only asks before cutting a dictation short.
  if (activeRecorder) e.preventDefault();
});

/**
 * Brings over what the original service's web app left on this device, and
 * removes its service worker; failures are retried at the next start.
 */
async function adoptPreviousVersion() {
  await legacy.unregisterLegacyWorker().catch(() => {});
  try {
    const adopted = await legacy.adoptLegacyDictations();
    if (adopted) announce(`Brought over ${adopted} dictation(s) from the previous version; they will upload.`);
  } catch {
    // Left as it was: the next start tries again.
  }
}

async function boot() {
  showConnectivity();
  await session.refresh();
  await showWho();
  recentKey = `recent-patients:${(await store.recordingUser()) || ''}`;
  // The list of the version before sign-in belonged to no one in particular.
  localStorage.removeItem('recent-patients');
  const recovered = await store.recoverUnfinished();
  if (recovered) announce(`Recovered ${recovered} unfinished dictation(s); they will upload.`);
  await adoptPreviousVersion();
  // Once a dictation brought over is on the server, its old copy may go.
  uploads.onProgress((key, fraction) => {
    if (fraction === 1) legacy.adoptLegacyDictations().catch(() => {});
  });
  route();
  uploads.kick();
  setInterval(() => uploads.run(), 5000);
  // Transcript edits saved offline go out when the network returns; the page
  // of a note they concern shows the outcome (saved, or a conflict).
  const sendEdits = async () => {
    const handled = await sendSavedEdits().catch(() => 0);
    if (handled && location.pathname.startsWith('/recordings/')) route();
  };
  addEventListener('online', sendEdits);
  sendEdits();
  if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
  if ('serviceWorker' in navigator) {
    try {
      // Where the browser has Background Sync (Chromium, which also runs ES
      // module workers), the worker uploads by itself, even with no page open.
      const withSync = 'SyncManager' in window;
      const registration = withSync
        ? await navigator.serviceWorker.register('/sw-module.js', { type: 'module' })
        : await navigator.serviceWorker.register('/sw.js');
      backgroundSync = registration.sync || null;
      requestBackgroundSync();
      navigator.serviceWorker.addEventListener('message', (e) => {
        if (e.data === 'upload') uploads.kick();
      });
    } catch {
      // The app works without offline support; nothing to report.
    }
  }
  document.documentElement.dataset.ready = 'true';
}

boot();
