// Adopting what the original service's web app left on this device, so that a
// clinic replacing it on the same address loses no dictation.
//
// The original kept its dictations with localForage (IndexedDB driver) in the
// database `ClinicalTranscription`, object store `recordings`: one entry per
// dictation, keyed by its `id` (a UUID it also sent as `local_storage_key`),
// holding `patient_id`, `audio_blob`, `draft_transcript`, `duration_seconds`,
// `created_at`, `sync_status` (pending_upload, uploading, uploaded, failed)
// and, once uploaded, `server_id`.
//
// Every entry that is not known to be on the server becomes a dictation in
// clinscribe's own queue, under the same key (so the server recognises one the
// original already uploaded instead of storing it twice). The original's entry
// is deleted only once clinscribe's server has acknowledged that dictation as
// durable; its database goes when it is empty. Each step is one transaction, so
// a crash or a closed tab at any point leaves every dictation in the old store,
// in the new one, or on the server: never nowhere.

import * as store from './store.js';

const LEGACY_DB = 'ClinicalTranscription';
const LEGACY_STORE = 'recordings';
const ADOPTED_COUNT = 'legacy-adopted';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** The original's database, or null when this device has none (never creates it). */
async function openLegacy() {
  if (indexedDB.databases) {
    const names = (await indexedDB.databases()).map((d) => d.name);
    if (!names.includes(LEGACY_DB)) return null;
  }
  return new Promise((resolve) => {
    const req = indexedDB.open(LEGACY_DB);
    req.onupgradeneeded = (e) => {
      // It did not exist: abort, so that looking does not create it.
      if (e.oldVersion === 0) req.transaction.abort();
    };
    req.onsuccess = () => {
      const db = req.result;
      if (db.objectStoreNames.contains(LEGACY_STORE)) resolve(db);
      else {
        db.close();
        resolve(null);
      }
    };
    req.onerror = () => resolve(null);
  });
}

/** Every entry of the original's store, as [key, value] pairs. */
async function legacyEntries(db) {
  const tx = db.transaction(LEGACY_STORE);
  const objects = tx.objectStore(LEGACY_STORE);
  const [keys, values] = await Promise.all([request(objects.getAllKeys()), request(objects.getAll())]);
  return keys.map((k, i) => [k, values[i]]);
}

async function deleteLegacy(db, key) {
  const tx = db.transaction(LEGACY_STORE, 'readwrite');
  tx.objectStore(LEGACY_STORE).delete(key);
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/** Whether the server holds the dictation with this key (null: cannot tell). */
async function onServer(key) {
  if (!navigator.onLine) return null;
  try {
    const response = await fetch(`/api/v1/uploads/${key}`, { headers: { accept: 'application/json' } });
    if (response.status === 404) return false;
    if (!response.ok) return null;
    const state = await response.json();
    return state.complete === true;
  } catch {
    return null;
  }
}

/** How many dictations were brought over from the previous version, ever. */
export function adoptedCount() {
  return Number(localStorage.getItem(ADOPTED_COUNT) || 0);
}

/**
 * One pass: brings the original's pending dictations into clinscribe's queue,
 * and deletes those clinscribe's server now holds. Safe to run at every start,
 * in several tabs, and after a crash at any point. Returns how many entries
 * it brought over in this pass.
 */
export async function adoptLegacyDictations() {
  const db = await openLegacy();
  if (!db) return 0;
  let adopted = 0;
  try {
    for (const [storageKey, entry] of await legacyEntries(db)) {
      const id = String((entry && entry.id) || storageKey);
      const key = UUID.test(id) ? id.toLowerCase() : null;
      const ours = key ? await store.getDictation(key) : undefined;
      if (ours && ours.state === store.State.UPLOADED) {
        // Acknowledged as durable by clinscribe's server: the old copy may go.
        await deleteLegacy(db, storageKey);
        continue;
      }
      if (ours) continue; // brought over before; waiting for its upload
      const blob = entry && entry.audio_blob;
      if (!(blob instanceof Blob) || blob.size === 0) continue; // nothing to upload: keep it untouched
      if (entry.sync_status === 'uploaded' && key && (await onServer(key)) === true) {
        await deleteLegacy(db, storageKey);
        continue;
      }
      const created = await store.importDictation({
        key: key || crypto.randomUUID(),
        patient_id: String(entry.patient_id ?? ''),
        created_at: entry.created_at || new Date().toISOString(),
        duration_seconds: Math.max(0, Math.round(Number(entry.duration_seconds) || 0)),
        draft_transcript: entry.draft_transcript || null,
        mime_type: blob.type || 'audio/webm',
        legacy_key: storageKey,
      }, blob);
      if (created) {
        adopted += 1;
        localStorage.setItem(ADOPTED_COUNT, String(adoptedCount() + 1));
      }
    }
    const left = await legacyEntries(db);
    db.close();
    if (left.length === 0) indexedDB.deleteDatabase(LEGACY_DB);
  } catch (e) {
    db.close();
    throw e;
  }
  return adopted;
}

/**
 * Removes the original's service worker (registered at /static/js/ with that
 * scope). The server also answers its script with one that unregisters itself,
 * for browsers that update it before this runs.
 */
export async function unregisterLegacyWorker() {
  if (!('serviceWorker' in navigator)) return;
  for (const registration of await navigator.serviceWorker.getRegistrations()) {
    if (new URL(registration.scope).pathname.startsWith('/static/js/')) {
      await registration.unregister();
    }
  }
}
