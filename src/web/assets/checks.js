// The clinical guardrails' check of a note, as the clinician reviews it: the
// text with each alert's evidence highlighted, the alerts most severe first,
// and (before signing) a reason to give for each critical alert, which the
// signature must carry. A signed note shows the acknowledgements it was
// signed with.
//
// Offsets in the check are Unicode code points: the text is split with
// Array.from, not indexed as UTF-16.

const SEVERITY_ORDER = ['critical', 'high', 'medium', 'low'];

/** The alerts of a stored check, most severe first (none for the original's objects). */
function alertsOf(results) {
  const alerts = Array.isArray(results?.alerts) ? results.alerts : [];
  return [...alerts].sort((a, b) => SEVERITY_ORDER.indexOf(a.severity) - SEVERITY_ORDER.indexOf(b.severity));
}

/** `text` with the evidence spans of `alerts` marked, as a list of nodes. */
function highlighted(h, text, alerts) {
  const points = Array.from(text);
  // The most severe alert on a code point colours it.
  const owner = new Array(points.length).fill(null);
  for (const alert of [...alerts].reverse()) {
    for (const e of alert.evidence ?? []) {
      for (let i = Math.max(0, e.start); i < Math.min(points.length, e.end); i += 1) owner[i] = alert;
    }
  }
  const nodes = [];
  let start = 0;
  for (let i = 1; i <= points.length; i += 1) {
    if (i === points.length || owner[i] !== owner[start]) {
      const part = points.slice(start, i).join('');
      const alert = owner[start];
      nodes.push(alert
        ? h('mark', { class: `alert-span severity-${alert.severity}`, 'data-alert': alert.id, title: alert.message }, part)
        : part);
      start = i;
    }
  }
  return nodes;
}

/**
 * The check section of recording `r`. Returns `{section, acknowledgements(),
 * missing(), onChange(fn)}`: the reasons given so far, the critical alerts
 * still without one, and a callback for when either changes.
 */
export function checksSection(h, r) {
  const listeners = [];
  const reasons = new Map();
  const results = r.verification_results;
  const alerts = alertsOf(results);
  const critical = alerts.filter((a) => a.severity === 'critical');
  const text = r.final_transcript ?? r.transcript ?? '';
  const api = {
    acknowledgements: () => [...reasons].filter(([, v]) => v.trim()).map(([alert_id, reason]) => ({ alert_id, reason })),
    missing: () => (r.signed_at ? [] : critical.filter((a) => !(reasons.get(a.id) ?? '').trim())),
    onChange: (fn) => listeners.push(fn),
  };
  const section = h('section', { class: 'card', id: 'checks' }, h('h2', {}, 'Clinical checks'));
  api.section = section;
  if (!results) {
    section.append(h('p', { class: 'muted', id: 'checks-pending' }, text && r.status === 'completed'
      ? 'The guardrails are checking this note; the results show here when they are in.'
      : 'No results yet.'));
    return api;
  }
  if (!Array.isArray(results.alerts)) {
    // A check stored by the original service: shown as it is.
    section.append(h('pre', { class: 'json' }, JSON.stringify(results, null, 2)));
    return api;
  }
  section.append(h('p', { class: results.passed ? 'muted' : 'error-text', id: 'checks-summary' },
    results.passed
      ? `Passed${alerts.length ? ` with ${alerts.length} note(s)` : ''} · score ${results.score}`
      : `Needs attention: ${alerts.length} alert(s) · score ${results.score}`,
    results.engine_error ? ` · checked by the embedded engine (${results.engine_error})` : ''));
  if (alerts.length && text) {
    section.append(h('p', { class: 'transcript', id: 'checked-text' }, ...highlighted(h, text, alerts)));
  }
  const acknowledged = new Map((r.acknowledgements ?? []).map((a) => [a.alert_id, a]));
  if (alerts.length) {
    section.append(h('ol', { id: 'alerts', class: 'alerts' }, alerts.map((alert) => {
      const item = h('li', { class: `alert severity-${alert.severity}`, 'data-alert': alert.id },
        h('span', { class: `badge severity-${alert.severity}` }, alert.severity),
        ' ', h('strong', {}, alert.rule_id), ' — ', alert.message,
        (alert.evidence ?? []).length
          ? h('span', { class: 'muted' }, ` (“${alert.evidence.map((e) => e.text).join('”, “')}”)`) : null);
      const kept = acknowledged.get(alert.id);
      if (kept) {
        item.append(h('p', { class: 'muted acknowledged' }, `Acknowledged by ${kept.by}: ${kept.reason}`));
      } else if (alert.severity === 'critical' && !r.signed_at) {
        const id = `ack-${alert.id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
        const input = h('input', { id, class: 'ack-reason', maxlength: '1000', autocomplete: 'off', 'data-alert': alert.id });
        input.addEventListener('input', () => {
          reasons.set(alert.id, input.value);
          listeners.forEach((fn) => fn());
        });
        item.append(h('label', { for: id }, 'Reason for signing despite this alert'), input);
      }
      return item;
    })));
  } else {
    section.append(h('p', { class: 'muted', id: 'no-alerts' }, 'No alerts.'));
  }
  return api;
}
