// The models table: every sort and filter of ListModels, paged by the API's tokens. Latest version
// comes with each model; aliases are fetched for the visible page only, a few at a time.

import { get, seg } from './api.js';
import { h, add, clear, route, time, badge, refusal } from './dom.js';

const SORTS = [
  ['MODEL_SORT_BY_NAME', 'Name'],
  ['MODEL_SORT_BY_DESCRIPTION', 'Description'],
  ['MODEL_SORT_BY_CREATION_TIME', 'Created'],
  ['MODEL_SORT_BY_LAST_UPDATED_TIME', 'Last updated'],
  ['MODEL_SORT_BY_NUM_VERSIONS', 'Versions'],
];
const PAGE_SIZES = ['25', '50', '100'];
const ALIAS_FETCHES_AT_ONCE = 4;

/** Current aliases of a model from its alias history (the last move of each alias wins), and the
 * history itself, oldest first: at most 5 pages of 1000 moves. */
export async function currentAliases(name, signal) {
  const aliases = new Map();
  const changes = [];
  let token = '';
  let total = 0;
  for (let page = 0; page < 5; page += 1) {
    const answer = await get(`/api/v1/models/${seg(name)}/aliasChanges`, { pageSize: 1000, pageToken: token }, signal);
    total = Number(answer.totalSize || 0);
    for (const change of answer.changes || []) {
      changes.push(change);
      if (change.version) aliases.set(change.alias, change.version);
      else aliases.delete(change.alias);
    }
    token = answer.nextPageToken || '';
    if (!token) return { aliases, changes, total, complete: true };
  }
  return { aliases, changes, total, complete: false };
}

function filtersOf(query) {
  return {
    sortBy: query.get('sortBy') || 'MODEL_SORT_BY_NAME',
    orderBy: query.get('orderBy') || 'ORDER_BY_ASC',
    name: query.get('name') || '',
    description: query.get('description') || '',
    labels: query.getAll('labels').filter(Boolean),
    archived: query.get('archived') || '',
    owner: query.get('owner') || '',
    pageSize: PAGE_SIZES.includes(query.get('pageSize')) ? query.get('pageSize') : '50',
    pageToken: query.get('pageToken') || '',
    page: query.get('pageToken') ? Math.max(1, Number.parseInt(query.get('page'), 10) || 1) : 0,
  };
}

function hashOf(filters) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) {
    for (const one of Array.isArray(value) ? value : [value]) if (one) params.append(key, one);
  }
  return `#/?${params}`;
}

// The token of each page seen (by page number, 0 the first), kept while the filters stay the same;
// the page number travels in the address, so the browser's Back keeps the count right.
let pages = { key: '', tokens: [''] };

export async function modelsPage(main, query, ctx) {
  const f = filtersOf(query);
  const key = JSON.stringify({ ...f, pageToken: undefined, page: undefined });
  if (pages.key !== key) pages = { key, tokens: [''] };
  pages.tokens[f.page] = f.pageToken;
  const go = (changes) => {
    location.hash = hashOf({ ...f, pageToken: '', page: '', ...changes });
  };

  const field = (id, label, input) => h('div', { class: 'field' }, h('label', { for: id }, label), input);
  const nameInput = h('input', { id: 'f-name', name: 'name', type: 'search', value: f.name });
  const descInput = h('input', { id: 'f-description', name: 'description', type: 'search', value: f.description });
  const labelsInput = h('input', { id: 'f-labels', name: 'labels', type: 'text', value: f.labels.join(', '), placeholder: 'a, b' });
  const ownerInput = h('input', { id: 'f-owner', name: 'owner', type: 'text', value: f.owner });
  const archivedSelect = h('select', { id: 'f-archived', name: 'archived' },
    [['', 'Any'], ['false', 'Not archived'], ['true', 'Archived']].map(([v, t]) => h('option', { value: v, selected: f.archived === v }, t)));
  const sortSelect = h('select', { id: 'f-sort', name: 'sortBy' }, SORTS.map(([v, t]) => h('option', { value: v, selected: f.sortBy === v }, t)));
  const orderSelect = h('select', { id: 'f-order', name: 'orderBy' },
    [['ORDER_BY_ASC', 'Ascending'], ['ORDER_BY_DESC', 'Descending']].map(([v, t]) => h('option', { value: v, selected: f.orderBy === v }, t)));
  const sizeSelect = h('select', { id: 'f-size', name: 'pageSize' }, PAGE_SIZES.map((v) => h('option', { value: v, selected: f.pageSize === v }, v)));

  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter models', onsubmit: (e) => {
    e.preventDefault();
    go({
      name: nameInput.value.trim(), description: descInput.value.trim(), owner: ownerInput.value.trim(),
      labels: labelsInput.value.split(',').map((s) => s.trim()).filter(Boolean), archived: archivedSelect.value,
      sortBy: sortSelect.value, orderBy: orderSelect.value, pageSize: sizeSelect.value,
    });
  } },
  field('f-name', 'Name contains', nameInput), field('f-description', 'Description contains', descInput),
  field('f-labels', 'Labels (all of)', labelsInput), field('f-owner', 'Owner', ownerInput),
  field('f-archived', 'Archived', archivedSelect), field('f-sort', 'Sort by', sortSelect),
  field('f-order', 'Order', orderSelect), field('f-size', 'Per page', sizeSelect),
  h('div', { class: 'field actions' }, h('button', { type: 'submit' }, 'Apply'),
    h('button', { type: 'button', onclick: () => { location.hash = '#/'; } }, 'Reset')));

  const sortHeader = (sort, label) => {
    const active = f.sortBy === sort;
    const next = active && f.orderBy === 'ORDER_BY_ASC' ? 'ORDER_BY_DESC' : 'ORDER_BY_ASC';
    return h('th', { scope: 'col', 'aria-sort': active ? (f.orderBy === 'ORDER_BY_DESC' ? 'descending' : 'ascending') : 'none', class: `c-${sort.slice(14).toLowerCase()}` },
      h('button', { type: 'button', class: 'sort', 'data-sort': sort, onclick: () => go({ sortBy: sort, orderBy: next }) },
        label, h('span', { class: 'arrow', 'aria-hidden': 'true' }, active ? (f.orderBy === 'ORDER_BY_DESC' ? ' ▼' : ' ▲') : '')));
  };
  const plain = (label, cls) => h('th', { scope: 'col', class: cls }, label);
  const tbody = h('tbody');
  for (let i = 0; i < Number(f.pageSize); i += 1) {
    if (i >= 10) break;
    tbody.append(h('tr', { class: 'placeholder' }, h('td', { colspan: 9 }, ' ')));
  }
  const table = h('table', { class: 'models', id: 'models-table' },
    h('caption', { class: 'sr-only' }, 'Models'),
    h('thead', null, h('tr', null, sortHeader('MODEL_SORT_BY_NAME', 'Name'), sortHeader('MODEL_SORT_BY_DESCRIPTION', 'Description'),
      plain('Labels', 'c-labels'), plain('Latest', 'c-latest'), plain('Aliases', 'c-aliases'), sortHeader('MODEL_SORT_BY_NUM_VERSIONS', 'Versions'),
      plain('Owner', 'c-owner'), sortHeader('MODEL_SORT_BY_LAST_UPDATED_TIME', 'Updated'), sortHeader('MODEL_SORT_BY_CREATION_TIME', 'Created'))),
    tbody);
  const status = h('p', { class: 'status', id: 'models-status', 'aria-live': 'polite' }, 'Loading models…');
  const prev = h('button', { type: 'button', id: 'prev-page', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', id: 'next-page', disabled: true }, 'Next →');
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' }, prev, next);
  clear(main);
  add(main, [h('h1', { tabindex: '-1' }, 'Models'), form, status, h('div', { class: 'scroll' }, table), pager]);

  let answer;
  try {
    answer = await get('/api/v1/models', {
      pageSize: f.pageSize, pageToken: f.pageToken, sortBy: f.sortBy, orderBy: f.orderBy, name: f.name,
      description: f.description, labels: f.labels, archived: f.archived, owner: f.owner,
    }, ctx.signal);
  } catch (error) {
    if (ctx.signal.aborted) return;
    clear(tbody);
    status.replaceWith(refusal(error, 'Listing models'));
    return;
  }
  const models = answer.models || [];
  const total = Number(answer.totalSize || 0);
  const first = f.page * Number(f.pageSize);
  status.textContent = models.length
    ? `Models ${first + 1}–${first + models.length} of ${total}`
    : (total ? 'No more models.' : 'No model matches.');
  clear(tbody);
  const aliasCells = [];
  for (const model of models) {
    const aliasCell = h('td', { class: 'c-aliases' }, model.numVersions ? h('span', { class: 'muted' }, '…') : h('span', { class: 'muted' }, '—'));
    if (model.numVersions) aliasCells.push([model.name, aliasCell]);
    tbody.append(h('tr', { 'data-model': model.name, class: model.archived ? 'archived' : '' },
      h('th', { scope: 'row', class: 'c-name' }, h('a', { href: route('models', model.name) }, model.name),
        model.archived ? [' ', badge('archived', 'archived')] : null),
      h('td', { class: 'c-description' }, h('span', { class: 'clip' }, model.description || '')),
      h('td', { class: 'c-labels' }, (model.labels || []).map((l) => badge(l, 'label'))),
      h('td', { class: 'c-latest' }, model.latestVersion
        ? h('a', { href: route('models', model.name, 'versions', model.latestVersion) }, `v${model.latestVersion}`)
        : h('span', { class: 'muted' }, '—')),
      aliasCell,
      h('td', { class: 'c-num_versions num' }, String(model.numVersions || 0)),
      h('td', { class: 'c-owner' }, model.owner || h('span', { class: 'muted' }, '—')),
      h('td', { class: 'c-last_updated_time' }, time(model.lastUpdatedTime)),
      h('td', { class: 'c-creation_time' }, time(model.creationTime))));
  }
  ctx.painted();

  prev.disabled = !f.pageToken;
  prev.addEventListener('click', () => {
    const back = f.page - 1;
    const token = pages.tokens[back];
    // A page reached without passing its predecessor (e.g. a pasted address): back to the first.
    location.hash = token === undefined || back <= 0 ? hashOf({ ...f, pageToken: '', page: '' }) : hashOf({ ...f, pageToken: token, page: String(back) });
  });
  next.disabled = !answer.nextPageToken;
  next.addEventListener('click', () => {
    location.hash = hashOf({ ...f, pageToken: answer.nextPageToken, page: String(f.page + 1) });
  });

  // Aliases of the visible models, a few requests at a time.
  const queue = aliasCells.slice();
  const worker = async () => {
    while (queue.length && !ctx.signal.aborted) {
      const [name, cell] = queue.shift();
      try {
        const { aliases, complete } = await currentAliases(name, ctx.signal);
        const items = [...aliases.entries()].sort((a, b) => a[0].localeCompare(b[0]));
        clear(cell);
        if (!items.length) add(cell, h('span', { class: 'muted' }, '—'));
        for (const [alias, version] of items) {
          add(cell, [h('a', { class: 'badge alias', href: route('models', name, 'versions', version) }, `${alias} → v${version}`), ' ']);
        }
        if (!complete) add(cell, h('span', { class: 'muted' }, '…'));
      } catch (error) {
        if (ctx.signal.aborted) return;
        clear(cell);
        add(cell, h('span', { class: 'muted', title: error.message }, '?'));
      }
    }
  };
  await Promise.all(Array.from({ length: ALIAS_FETCHES_AT_ONCE }, worker));
}
