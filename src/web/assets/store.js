// The device's dictations, in IndexedDB: what makes "never lose a dictation" true.
//
// Three object stores:
// - `dictations` (key: local_storage_key): metadata and upload state;
// - `chunks` (key: [local_storage_key, seq]): the audio, appended every second
//   while recording, so a closed tab or a crash loses at most the last second;
// - `edits` (key: recording id): a transcript corrected while offline, with the
//   version it was made to, until the server has it (review.js);
// - `meta` (key: a name): who is signed in (`session`: id, name, role, CSRF
//   token) and who last was (`last-user`), for the pages and the worker.
// Each dictation names the user who recorded it (`user_id`): only that user's
// session uploads it.
// Chunks are deleted only once the server has acknowledged a durable upload.

const DB_NAME = 'clinscribe';
const DB_VERSION = 3;

/** Local states of a dictation. */
export const State = Object.freeze({
  RECORDING: 'recording', // chunks are being written by an open page
  REVIEW: 'review', // stopped; the clinician may listen before saving
  RECORDED: 'recorded', // saved on this device, waiting to upload
  UPLOADING: 'uploading',
  UPLOADED: 'uploaded', // the server holds it durably; the local audio is gone
  ERROR: 'error', // the server refused it (4xx): shown, not retried until asked
});

let opening = null;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error('transaction aborted'));
  });
}

/** The database (opened once per page or worker). */
export function open() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains('dictations')) {
          const d = db.createObjectStore('dictations', { keyPath: 'key' });
          d.createIndex('created_at', 'created_at');
        }
        if (!db.objectStoreNames.contains('chunks')) {
          db.createObjectStore('chunks', { keyPath: ['key', 'seq'] });
        }
        if (!db.objectStoreNames.contains('edits')) {
          db.createObjectStore('edits', { keyPath: 'id' });
        }
        if (!db.objectStoreNames.contains('meta')) {
          db.createObjectStore('meta');
        }
      };
      req.onsuccess = () => {
        // A newer version of the app upgrading the database: let it.
        req.result.onversionchange = () => { req.result.close(); opening = null; };
        resolve(req.result);
      };
      req.onerror = () => reject(req.error);
    });
  }
  return opening;
}

/** A value kept under `name` in `meta` (undefined when none). */
export async function getMeta(name) {
  const db = await open();
  return request(db.transaction('meta').objectStore('meta').get(name));
}

/** Keeps `value` under `name` in `meta` (null or undefined removes it). */
export async function setMeta(name, value) {
  const db = await open();
  const tx = db.transaction('meta', 'readwrite');
  if (value === null || value === undefined) tx.objectStore('meta').delete(name);
  else tx.objectStore('meta').put(value, name);
  await done(tx);
  notify();
}

/**
 * Who records now: the signed-in user, or, while signed out, the last one
 * who was signed in on this device (null if nobody ever was).
 */
export async function recordingUser() {
  const session = await getMeta('session');
  return (session && session.id) || (await getMeta('last-user')) || null;
}

/** Creates a dictation record, marked with the user recording it. */
export async function createDictation(dictation) {
  if (dictation.user_id === undefined) dictation.user_id = await recordingUser();
  const db = await open();
  const tx = db.transaction('dictations', 'readwrite');
  tx.objectStore('dictations').add(dictation);
  await done(tx);
  notify();
  return dictation;
}

/**
 * Adds a finished dictation and its audio in one transaction (from the
 * previous version's store); false, changing nothing, when one with the same
 * key is already here.
 */
export async function importDictation(dictation, blob) {
  const db = await open();
  const tx = db.transaction(['dictations', 'chunks'], 'readwrite');
  const dictations = tx.objectStore('dictations');
  if (await request(dictations.getKey(dictation.key)) !== undefined) {
    await done(tx);
    return false;
  }
  dictations.add({
    ...dictation,
    state: State.RECORDED,
    bytes: blob.size,
    chunks: 1,
    heartbeat_at: Date.now(),
  });
  tx.objectStore('chunks').put({ key: dictation.key, seq: 0, blob });
  await done(tx);
  notify();
  return true;
}

/** Applies `changes` to a dictation; returns it (undefined if gone). */
export async function updateDictation(key, changes) {
  const db = await open();
  const tx = db.transaction('dictations', 'readwrite');
  const store = tx.objectStore('dictations');
  const current = await request(store.get(key));
  if (!current) {
    await done(tx);
    return undefined;
  }
  const next = { ...current, ...changes };
  store.put(next);
  await done(tx);
  notify();
  return next;
}

/** One dictation. */
export async function getDictation(key) {
  const db = await open();
  return request(db.transaction('dictations').objectStore('dictations').get(key));
}

/** Every dictation on this device, newest first. */
export async function listDictations() {
  const db = await open();
  const all = await request(db.transaction('dictations').objectStore('dictations').getAll());
  return all.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
}

/**
 * Appends one chunk of audio and the dictation's new size in one transaction,
 * so the metadata never claims bytes that are not stored.
 */
export async function appendChunk(key, seq, blob, heartbeat) {
  const db = await open();
  const tx = db.transaction(['chunks', 'dictations'], 'readwrite');
  tx.objectStore('chunks').put({ key, seq, blob });
  const dictations = tx.objectStore('dictations');
  const current = await request(dictations.get(key));
  if (current) {
    dictations.put({
      ...current,
      bytes: (current.bytes || 0) + blob.size,
      chunks: seq + 1,
      heartbeat_at: heartbeat,
    });
  }
  await done(tx);
}

/** The dictation's audio as one Blob (chunks in order). */
export async function audioBlob(key, type) {
  const db = await open();
  const range = IDBKeyRange.bound([key, 0], [key, Number.MAX_SAFE_INTEGER]);
  const rows = await request(db.transaction('chunks').objectStore('chunks').getAll(range));
  rows.sort((a, b) => a.seq - b.seq);
  return new Blob(rows.map((r) => r.blob), { type: type || 'audio/webm' });
}

/** Deletes a dictation's audio (after a durable upload, or a discard). */
export async function deleteAudio(key) {
  const db = await open();
  const tx = db.transaction('chunks', 'readwrite');
  tx.objectStore('chunks').delete(IDBKeyRange.bound([key, 0], [key, Number.MAX_SAFE_INTEGER]));
  await done(tx);
}

/** Deletes a dictation entirely (discarded before saving). */
export async function deleteDictation(key) {
  await deleteAudio(key);
  const db = await open();
  const tx = db.transaction('dictations', 'readwrite');
  tx.objectStore('dictations').delete(key);
  await done(tx);
  notify();
}

/**
 * Keeps an edit made while offline. A second edit of the same note before the
 * first was sent replaces its text but keeps the version the first was made
 * to: that is the version the clinician saw.
 */
export async function saveEdit(edit) {
  // Whose edit it is, asked before the transaction (an await inside would end it).
  if (edit.user_id === undefined) edit.user_id = await recordingUser();
  const db = await open();
  const tx = db.transaction('edits', 'readwrite');
  const edits = tx.objectStore('edits');
  const earlier = await request(edits.get(edit.id));
  edits.put(earlier ? { ...earlier, text: edit.text, saved_at: edit.saved_at } : edit);
  await done(tx);
}

/** The edit kept for a note, if any. */
export async function getEdit(id) {
  const db = await open();
  return request(db.transaction('edits').objectStore('edits').get(id));
}

/** Every kept edit, oldest first. */
export async function listEdits() {
  const db = await open();
  const all = await request(db.transaction('edits').objectStore('edits').getAll());
  return all.sort((a, b) => (a.saved_at < b.saved_at ? -1 : 1));
}

/** Applies `changes` to a kept edit. */
export async function updateEdit(id, changes) {
  const db = await open();
  const tx = db.transaction('edits', 'readwrite');
  const edits = tx.objectStore('edits');
  const current = await request(edits.get(id));
  if (current) edits.put({ ...current, ...changes });
  await done(tx);
}

/** Forgets a kept edit (sent, or given up for the server's version). */
export async function deleteEdit(id) {
  const db = await open();
  const tx = db.transaction('edits', 'readwrite');
  tx.objectStore('edits').delete(id);
  await done(tx);
}

// Other parts of the page (and other tabs) listen for changes.
const channel = 'BroadcastChannel' in self ? new BroadcastChannel('clinscribe-dictations') : null;
const listeners = new Set();

function notify() {
  for (const fn of listeners) fn();
  if (channel) channel.postMessage('changed');
}

if (channel) {
  channel.onmessage = () => {
    for (const fn of listeners) fn();
  };
}

/** Calls `fn` whenever a dictation changes (here or in another tab). */
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/**
 * Dictations left unfinished by a page that is gone (closed tab, crash, dead
 * battery): still `recording` without a heartbeat for a while, or left in
 * `review`. They become `recorded`, so they upload; returns how many.
 */
export async function recoverUnfinished(now = Date.now()) {
  let recovered = 0;
  for (const d of await listDictations()) {
    const stale = now - (d.heartbeat_at || 0) > 5000;
    if ((d.state === State.RECORDING && stale) || (d.state === State.REVIEW && stale)) {
      if ((d.bytes || 0) > 0) {
        await updateDictation(d.key, {
          state: State.RECORDED,
          recovered: true,
          duration_seconds: d.duration_seconds || Math.round(((d.heartbeat_at || now) - Date.parse(d.created_at)) / 1000),
        });
        recovered += 1;
      } else {
        await deleteDictation(d.key);
      }
    }
  }
  return recovered;
}
