// The events view: follows WatchEvents (Server-Sent Events), newest on top.

import { follow } from './api.js';
import { h, add, clear, route, time, refusal } from './dom.js';

const KINDS = ['MODEL_CREATED', 'MODEL_UPDATED', 'MODEL_RENAMED', 'MODEL_ARCHIVED', 'MODEL_UNARCHIVED', 'MODEL_DELETED',
  'MODEL_VERSION_CREATED', 'MODEL_VERSION_UPDATED', 'MODEL_VERSION_DELETED', 'CHECKPOINT_CREATED', 'CHECKPOINT_DELETED',
  'ALIAS_SET', 'ALIAS_DELETED', 'CHECKPOINT_FILES_UPLOADED'];
const KEEP = 500;

export function describe(event) {
  const kind = String(event.kind || '').replace('EVENT_KIND_', '');
  const parts = [];
  if (event.version) parts.push(`v${event.version}`);
  if (event.alias) parts.push(`alias ${event.alias}`);
  if (event.previousVersion) parts.push(`was v${event.previousVersion}`);
  if (event.newModelName) parts.push(`renamed to ${event.newModelName}`);
  if (event.checkpointUuid) parts.push(`checkpoint ${event.checkpointUuid}`);
  return { kind, detail: parts.join(', ') };
}

export async function eventsPage(main, query, ctx) {
  const models = (query.get('models') || '').split(',').map((s) => s.trim()).filter(Boolean);
  const kinds = query.getAll('kinds').filter((k) => KINDS.includes(k));
  const after = Math.max(0, Number(query.get('after') || 0) || 0);

  const modelsInput = h('input', { id: 'ev-models', type: 'text', value: models.join(', '), placeholder: 'all models' });
  const kindsSelect = h('select', { id: 'ev-kinds', multiple: true, size: 5 }, KINDS.map((k) => h('option', { value: k, selected: kinds.includes(k) }, k)));
  const afterInput = h('input', { id: 'ev-after', type: 'number', min: 0, value: String(after) });
  const form = h('form', { class: 'filters', 'aria-label': 'Filter events' },
    h('div', { class: 'field' }, h('label', { for: 'ev-models' }, 'Models (comma separated)'), modelsInput),
    h('div', { class: 'field' }, h('label', { for: 'ev-kinds' }, 'Kinds (none: all)'), kindsSelect),
    h('div', { class: 'field' }, h('label', { for: 'ev-after' }, 'After sequence (0: from the start)'), afterInput),
    h('div', { class: 'field actions' }, h('button', { type: 'submit' }, 'Follow')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const params = new URLSearchParams();
    if (modelsInput.value.trim()) params.set('models', modelsInput.value.trim());
    for (const option of kindsSelect.selectedOptions) params.append('kinds', option.value);
    if (Number(afterInput.value) > 0) params.set('after', String(Number(afterInput.value)));
    location.hash = `#/events?${params}`;
  });
  const state = h('p', { class: 'status', id: 'events-state', 'aria-live': 'polite' }, 'Connecting…');
  const out = h('div');
  const tbody = h('tbody', { id: 'events-body' });
  const count = h('span', { id: 'events-count' }, '0');
  clear(main);
  add(main, [h('h1', { tabindex: '-1' }, 'Events'), form, state, out,
    h('p', { class: 'muted' }, count, ` events received; the newest ${KEEP} are shown, newest first.`),
    h('div', { class: 'scroll' }, h('table', { id: 'events-table' },
      h('thead', null, h('tr', null, ['Sequence', 'Time', 'Kind', 'Model', 'Details', 'Principal'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody))]);
  ctx.painted();

  let received = 0;
  await follow({ modelNames: models, kinds: kinds.map((k) => `EVENT_KIND_${k}`), afterSequence: after }, {
    signal: ctx.signal,
    onState: (s, error) => {
      clear(out);
      state.textContent = { connecting: 'Connecting…', live: 'Live: following new events.', ended: 'Ended.', error: 'Disconnected.' }[s] || s;
      if (error) add(out, refusal(error, 'Following events'));
    },
    onEvent: (event) => {
      received += 1;
      count.textContent = String(received);
      const { kind, detail } = describe(event);
      const model = event.modelName
        ? h('a', { href: route('models', event.newModelName || event.modelName) }, event.modelName)
        : h('span', { class: 'muted' }, '—');
      tbody.prepend(h('tr', { 'data-sequence': String(event.sequence), 'data-kind': kind },
        h('td', { class: 'num' }, String(event.sequence)), h('td', null, time(event.time)), h('td', null, kind),
        h('td', null, model), h('td', null, detail), h('td', null, event.principal || '—')));
      while (tbody.childElementCount > KEEP) tbody.lastElementChild.remove();
    },
  });
}
