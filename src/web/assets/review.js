// Reviewing a transcript: the clinician corrects it, saves it with the
// version they edited (If-Match), sees a two-sided choice when someone else
// changed it meanwhile, signs it, and amends it after signing.
//
// An edit saved while offline is kept in IndexedDB (store.js `edits`) with the
// version it was made to, and sent when the network returns; if the note
// changed meanwhile, the edit is kept beside the server's version and shown
// as a conflict, never sent over it.

import * as session from './session.js';
import * as store from './store.js';

/** A JSON request; resolves to {status, body, etag}; rejects only when offline. */
async function send(path, method, { ifMatch, body } = {}) {
  if (!navigator.onLine) throw new Error('offline');
  const headers = await session.withCsrf({ accept: 'application/json' });
  if (ifMatch !== undefined) headers['if-match'] = `"${ifMatch}"`;
  if (body !== undefined) headers['content-type'] = 'application/merge-patch+json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) await session.signedOut();
  let json = null;
  try {
    json = await response.json();
  } catch {
    // 204, or not JSON
  }
  return { status: response.status, body: json };
}

const recordingUrl = (id) => `/api/v1/recordings/${encodeURIComponent(id)}`;

/** Sends a corrected text made to `version`: {saved}, {conflict: current}, or throws. */
async function saveText(id, version, text) {
  const { status, body } = await send(recordingUrl(id), 'PATCH', { ifMatch: version, body: { final_transcript: text } });
  if (status === 200) return { saved: body };
  if (status === 412) return { conflict: body.current };
  throw new Error(body && typeof body.detail === 'string' ? body.detail : `HTTP ${status}`);
}

/**
 * Sends the edits saved on this device while offline, oldest first. An edit
 * the server took is forgotten; one whose note changed meanwhile is kept with
 * the server's version, for the clinician to decide. Stops at the first
 * network failure (the 'online' event calls again). Returns how many were
 * sent or found in conflict.
 */
export async function sendSavedEdits() {
  let handled = 0;
  const user = await session.current();
  for (const edit of await store.listEdits()) {
    if (edit.conflict) continue;
    // Another clinician's edit waits for them to sign in on this device.
    if (!user || (edit.user_id && edit.user_id !== user.id)) continue;
    let outcome;
    try {
      outcome = await saveText(edit.id, edit.base_version, edit.text);
    } catch (e) {
      if (e.message === 'offline' || e instanceof TypeError) return handled;
      await store.updateEdit(edit.id, { error: e.message });
      continue;
    }
    if (outcome.saved) await store.deleteEdit(edit.id);
    else await store.updateEdit(edit.id, { conflict: outcome.conflict });
    handled += 1;
  }
  return handled;
}

/** A message for the next rendering of a note's section (it re-renders after a change). */
const notices = new Map();

function formatWhen(iso) {
  return iso ? new Date(iso).toLocaleString() : '—';
}

/**
 * The transcript section of a recording's page. `h` builds elements;
 * `refresh()` reloads the page's recording (after a change made here);
 * `checks` is the page's check section (checks.js), whose acknowledgements
 * the signature carries.
 */
export async function transcriptSection(h, r, refresh, checks) {
  const engineText = r.transcript;
  if (r.signed_at) return signedSection(h, r, refresh);
  const editorUser = await store.recordingUser();
  const kept = await store.getEdit(r.id);
  // An edit kept on this device by someone else is theirs to send, not shown here.
  const pending = kept && (!kept.user_id || kept.user_id === editorUser) ? kept : null;
  const current = r.final_transcript ?? engineText ?? '';
  if (!current && !pending && r.status !== 'completed') return null;

  const section = h('section', { class: 'card', id: 'review' }, h('h2', {}, 'Transcript'));
  const editor = h('textarea', {
    id: 'transcript', class: 'transcript-editor', rows: '8', 'aria-label': 'Transcript',
    spellcheck: 'true',
  }, pending ? pending.text : current);
  const notice = notices.get(r.id) ?? '';
  notices.delete(r.id);
  const state = h('p', { class: 'muted', id: 'save-state', role: 'status' },
    pending && !pending.conflict ? 'Saved on this device; it is sent when you are back online.' : notice);
  const baseVersion = pending ? pending.base_version : r.version;
  const dirty = () => editor.value !== current;

  const save = h('button', { type: 'button', class: 'primary', id: 'save-transcript' }, 'Save');
  const useEngine = h('button', { type: 'button', class: 'secondary', id: 'use-engine-text' }, 'Use the engine’s text');
  const sign = h('button', { type: 'button', class: 'secondary', id: 'sign' }, 'Sign');
  const updateButtons = () => {
    const unacknowledged = checks.missing().length;
    sign.disabled = r.status !== 'completed' || dirty() || !!pending || !editor.value.trim() || unacknowledged > 0;
    sign.title = !sign.disabled ? ''
      : unacknowledged ? 'Give a reason for each critical alert first'
        : 'Save your changes first; only a transcribed note can be signed';
  };
  checks.onChange(updateButtons);
  editor.addEventListener('input', () => { state.textContent = dirty() ? 'Not saved.' : ''; updateButtons(); });
  useEngine.disabled = !engineText;
  useEngine.addEventListener('click', () => { editor.value = engineText; editor.dispatchEvent(new Event('input')); });

  save.addEventListener('click', async () => {
    save.disabled = true;
    try {
      const outcome = await saveText(r.id, baseVersion, editor.value);
      await store.deleteEdit(r.id);
      if (outcome.saved) {
        notices.set(r.id, 'Saved.');
        await refresh();
      } else {
        section.replaceWith(conflictSection(h, r.id, editor.value, outcome.conflict, refresh));
      }
    } catch (e) {
      if (e.message === 'offline' || e instanceof TypeError) {
        await store.saveEdit({ id: r.id, base_version: baseVersion, text: editor.value, saved_at: new Date().toISOString() });
        state.textContent = 'Saved on this device; it is sent when you are back online.';
      } else {
        state.textContent = `Not saved: ${e.message}`;
        state.className = 'error-text';
      }
    } finally {
      save.disabled = false;
    }
  });

  sign.addEventListener('click', async () => {
    sign.disabled = true;
    try {
      const { status, body } = await send(`${recordingUrl(r.id)}/sign`, 'POST', {
        ifMatch: r.version, body: { acknowledgements: checks.acknowledgements() },
      });
      if (status === 412) notices.set(r.id, 'This note changed since you opened it; check it again before signing.');
      else if (status !== 200) notices.set(r.id, `Not signed: ${body?.detail ?? `HTTP ${status}`}`);
      await refresh();
    } catch (e) {
      state.textContent = e.message === 'offline' ? 'Signing needs a connection.' : `Not signed: ${e.message}`;
      updateButtons();
    }
  });

  if (pending?.conflict) {
    return conflictSection(h, r.id, pending.text, pending.conflict, refresh);
  }
  updateButtons();
  section.append(
    editor,
    engineText && engineText !== current
      ? h('details', {}, h('summary', {}, 'The engine’s text'), h('p', { class: 'transcript', id: 'engine-text' }, engineText))
      : null,
    h('div', { class: 'actions' }, save, useEngine, sign),
    state,
  );
  return section;
}

/**
 * Deleting a recording that is not signed: a second click confirms. Other
 * devices drop it from their lists through the change feed.
 */
export function deleteControl(h, r, afterDelete) {
  if (r.signed_at) return null;
  const status = h('span', { class: 'muted', role: 'status', id: 'delete-state' });
  const confirm = h('button', { type: 'button', class: 'danger', id: 'confirm-delete', hidden: true }, 'Yes, delete it');
  const ask = h('button', { type: 'button', class: 'secondary', id: 'delete' }, 'Delete recording');
  ask.addEventListener('click', () => {
    ask.hidden = true;
    confirm.hidden = false;
    status.textContent = 'Delete this recording and its audio? This cannot be undone.';
  });
  confirm.addEventListener('click', async () => {
    confirm.disabled = true;
    try {
      const { status: code, body } = await send(recordingUrl(r.id), 'DELETE', { ifMatch: r.version });
      if (code === 204) {
        await store.deleteEdit(r.id);
        afterDelete();
        return;
      }
      status.textContent = code === 412
        ? 'This recording changed since you opened it: reload it before deleting.'
        : `Not deleted: ${body?.detail ?? `HTTP ${code}`}`;
    } catch (e) {
      status.textContent = e.message === 'offline' ? 'Deleting needs a connection.' : e.message;
    }
    confirm.disabled = false;
  });
  return h('section', { class: 'card' }, h('h2', {}, 'Delete'), h('div', { class: 'actions' }, ask, confirm), status);
}

/**
 * Someone changed the note since the clinician's edit: both versions side by
 * side, and the choice. Nothing is sent until they choose.
 */
function conflictSection(h, id, mine, theirs, refresh) {
  const theirsText = theirs.final_transcript ?? theirs.transcript ?? '';
  const status = h('p', { class: 'muted', role: 'status', id: 'conflict-state' });
  const keepMine = h('button', { type: 'button', class: 'primary', id: 'keep-mine' }, 'Keep mine');
  const takeTheirs = h('button', { type: 'button', class: 'secondary', id: 'take-theirs' }, 'Take theirs');
  const copyMine = h('button', { type: 'button', class: 'secondary', id: 'copy-mine' }, 'Copy mine');
  const mineBox = h('textarea', { id: 'conflict-mine', readonly: true, rows: '6', 'aria-label': 'Your version' }, mine);
  keepMine.addEventListener('click', async () => {
    keepMine.disabled = true;
    try {
      const outcome = await saveText(id, theirs.version, mine);
      if (outcome.saved) {
        await store.deleteEdit(id);
        await refresh();
      } else {
        // Changed once more: show the newest version.
        section.replaceWith(conflictSection(h, id, mine, outcome.conflict, refresh));
      }
    } catch (e) {
      status.textContent = e.message === 'offline' ? 'Choosing needs a connection.' : e.message;
      keepMine.disabled = false;
    }
  });
  takeTheirs.addEventListener('click', async () => {
    await store.deleteEdit(id);
    await refresh();
  });
  copyMine.addEventListener('click', async () => {
    mineBox.select();
    try {
      await navigator.clipboard.writeText(mine);
      status.textContent = 'Your version is on the clipboard.';
    } catch {
      status.textContent = 'Your version is selected: copy it with Ctrl+C.';
    }
  });
  const section = h('section', { class: 'card conflict', id: 'conflict', role: 'alert' },
    h('h2', {}, 'Changed elsewhere'),
    h('p', {}, `Someone saved another version of this note (version ${theirs.version}) after you began editing. Choose which to keep.`),
    h('div', { class: 'sides' },
      h('div', {}, h('h3', {}, 'Your version'), mineBox),
      h('div', {}, h('h3', {}, `Their version (${theirs.signed_at ? 'signed' : 'saved'} ${formatWhen(theirs.updated_at)})`),
        h('textarea', { id: 'conflict-theirs', readonly: true, rows: '6', 'aria-label': 'Their version' }, theirsText))),
    h('div', { class: 'actions' }, theirs.signed_at ? null : keepMine, takeTheirs, copyMine),
    status);
  return section;
}

/** A signed note: its text, its signature, its amendments, and a form for another. */
function signedSection(h, r, refresh) {
  const text = h('textarea', { id: 'amend-text', rows: '3', required: true, maxlength: '200000' });
  const reason = h('input', { id: 'amend-reason', required: true, maxlength: '1000', autocomplete: 'off' });
  const status = h('p', { class: 'muted', role: 'status', id: 'amend-state' });
  const form = h('form', {
    class: 'amend',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const { status: code, body } = await send(`${recordingUrl(r.id)}/amendments`, 'POST', {
          ifMatch: r.version, body: { text: text.value, reason: reason.value },
        });
        if (code === 201) await refresh();
        else if (code === 412) status.textContent = 'Someone amended this note meanwhile: it has been reloaded; add yours again.';
        else status.textContent = `Not added: ${body?.detail?.[0]?.msg ?? body?.detail ?? `HTTP ${code}`}`;
        if (code === 412) await refresh();
      } catch (err) {
        status.textContent = err.message === 'offline' ? 'Amending needs a connection.' : err.message;
      }
    },
  },
  h('h3', {}, 'Add an amendment'),
  h('label', { for: 'amend-text' }, 'Correction'), text,
  h('label', { for: 'amend-reason' }, 'Reason'), reason,
  h('button', { type: 'submit', id: 'amend' }, 'Add amendment'),
  status);
  return h('section', { class: 'card', id: 'review' },
    h('h2', {}, 'Transcript (signed)'),
    h('p', { class: 'transcript', id: 'transcript' }, r.final_transcript),
    h('p', { class: 'muted', id: 'signed' },
      `Signed by ${r.signed_by} on ${formatWhen(r.signed_at)} · SHA-256 ${r.signed_sha256.slice(0, 12)}…`),
    r.amendments.length
      ? h('ol', { id: 'amendments', class: 'amendments' }, r.amendments.map((a) => h('li', {},
        h('p', { class: 'transcript' }, a.text),
        h('p', { class: 'muted' }, `${a.reason} — ${a.author}, ${formatWhen(a.created_at)}`))))
      : null,
    form);
}

const ACTION_LABELS = {
  create: 'Created', upload: 'Uploaded', transcribe: 'Transcription', update: 'Edited', sign: 'Signed', amend: 'Amended', delete: 'Deleted', retry: 'Queued again',
};

/** The note's audit history: who changed what, and when, oldest first;
 * reads (every opening of the note, its audio or this history) are summed up
 * in one line below, so that they do not bury the changes. */
export async function historySection(h, id) {
  let events = null;
  try {
    const { status, body } = await send(`${recordingUrl(id)}/history`, 'GET');
    if (status === 200) events = body;
  } catch {
    // offline: said below
  }
  if (events === null) {
    return h('section', { class: 'card' }, h('h2', {}, 'History'),
      h('p', { class: 'muted' }, 'The history shows when you are online.'));
  }
  const changes = events.filter((e) => e.action !== 'read');
  const reads = events.filter((e) => e.action === 'read');
  const last = reads.at(-1);
  return h('section', { class: 'card' }, h('h2', {}, 'History'),
    changes.length
      ? h('ol', { id: 'history', class: 'history' }, changes.map((e) => h('li', {},
        `${ACTION_LABELS[e.action] ?? e.action} by ${e.actor}, ${formatWhen(e.at)}`,
        Object.keys(e.changes).length
          ? h('span', { class: 'muted' }, ` — ${Object.keys(e.changes).join(', ')}`) : null)))
      : h('p', { class: 'muted' }, 'No changes since it was stored.'),
    last
      ? h('p', { class: 'muted', id: 'reads' },
        `Opened ${reads.length} time(s); last by ${last.actor}, ${formatWhen(last.at)}.`)
      : null);
}
