// Who is signed in on this device. The session itself is an HttpOnly cookie
// the page cannot read; what the page keeps (in IndexedDB, `meta`, so the
// service worker sees it too) is the user and the session's CSRF token, which
// every state-changing request sends back in X-CSRF-Token.
//
// Signed out (or offline), the app keeps recording: dictations are marked
// with the last user signed in here and wait until that user signs in again.

import * as store from './store.js';

/** The signed-in user {id, display_name, role, csrf_token}, or null. */
export function current() {
  return store.getMeta('session').then((s) => s || null);
}

/** Headers with the session's CSRF token added (for a state-changing request). */
export async function withCsrf(headers = {}) {
  const session = await current();
  return session && session.csrf_token ? { ...headers, 'x-csrf-token': session.csrf_token } : headers;
}

async function remember(user) {
  await store.setMeta('session', user);
  await store.setMeta('last-user', user.id);
  return user;
}

/** The server's answer to a 401: this device is signed out. */
export async function signedOut() {
  await store.setMeta('session', null);
}

/**
 * Asks the server who this device is signed in as; keeps the answer. Offline
 * (or the server unreachable) the last answer stands.
 */
export async function refresh() {
  if (!navigator.onLine) return current();
  let response;
  try {
    response = await fetch('/api/v1/auth/me', { headers: { accept: 'application/json' } });
  } catch {
    return current();
  }
  if (response.status === 401) {
    await signedOut();
    return null;
  }
  if (!response.ok) return current();
  return remember(await response.json());
}

async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify(body),
  });
  let json = null;
  try {
    json = await response.json();
  } catch {
    // not JSON
  }
  if (!response.ok) {
    const detail = json && typeof json.detail === 'string' ? json.detail : `HTTP ${response.status}`;
    throw new Error(detail);
  }
  return json;
}

/** Signs in with a password; throws the server's message on refusal. */
export async function signIn(username, password) {
  return remember(await post('/api/v1/auth/login', { username, password }));
}

/** Creates the first administrator with the first-run code, signed in. */
export async function setUp(code, username, displayName, password) {
  return remember(await post('/api/v1/auth/setup', { code, username, display_name: displayName, password }));
}

/** Signs out (this session, or with `everywhere` every session of the user). */
export async function signOut(everywhere = false) {
  const path = everywhere ? '/api/v1/auth/logout-all' : '/api/v1/auth/logout';
  try {
    await fetch(path, { method: 'POST', headers: await withCsrf() });
  } finally {
    await signedOut();
  }
}

/** Dictations on this device still to upload, counted by the user who recorded them. */
export async function waitingByUser() {
  const counts = new Map();
  for (const d of await store.listDictations()) {
    if (d.state !== store.State.RECORDED && d.state !== store.State.UPLOADING) continue;
    const who = d.user_id || '';
    counts.set(who, (counts.get(who) || 0) + 1);
  }
  return counts;
}

/** Whether dictation `d` is `user`'s (one recorded before anyone signed in is anyone's). */
export function owns(user, d) {
  return Boolean(user) && (!d.user_id || d.user_id === user.id);
}
