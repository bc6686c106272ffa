// A model: its fields, versions (newest first), aliases and their history; the editor's edits; and
// the comparison of two or more versions.

import { call, get, seg } from './api.js';
import { h, add, clear, route, time, badge, tree, flatten, short, refusal } from './dom.js';
import { render as markdown } from './markdown.js';
import { currentAliases } from './models.js';

const VERSIONS_PER_PAGE = 50;
const KEY_METRICS = 4;

/** Runs an edit: the button waits, a refusal is shown in `out`, success refreshes the page. */
export function action(ctx, button, out, what, run) {
  return async (event) => {
    if (event) event.preventDefault();
    button.disabled = true;
    clear(out);
    try {
      await run();
      ctx.editing(false);
      await ctx.refresh();
    } catch (error) {
      if (ctx.signal.aborted) return;
      add(out, refusal(error, what));
      ctx.refused(error);
    } finally {
      button.disabled = false;
    }
  };
}

function field(id, label, input) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}

/** A section whose content can be swapped for an edit form by editors. */
function editable(ctx, title, id, view, makeForm) {
  const body = h('div', { class: 'section-body' }, view);
  const section = h('section', { class: 'card', 'aria-labelledby': `${id}-title` });
  const heading = h('h2', { id: `${id}-title` }, title);
  add(section, h('div', { class: 'section-head' }, heading));
  if (ctx.canEdit && makeForm) {
    const edit = h('button', { type: 'button', class: 'edit', id: `edit-${id}`, 'aria-label': `Edit ${title.toLowerCase()}` }, 'Edit');
    edit.addEventListener('click', () => {
      ctx.editing(true);
      const out = h('div', { class: 'form-out' });
      const cancel = h('button', { type: 'button' }, 'Cancel');
      const form = makeForm(out, cancel);
      cancel.addEventListener('click', () => {
        ctx.editing(false);
        clear(body);
        add(body, view);
        edit.hidden = false;
        edit.focus();
      });
      clear(body);
      add(body, [form, out]);
      edit.hidden = true;
      const first = form.querySelector('input, textarea, select');
      if (first) first.focus();
    });
    section.firstChild.append(edit);
  }
  add(section, body);
  return section;
}

function patchModel(name, model, mask) {
  return call('PATCH', `/api/v1/models/${seg(name)}`, { body: { model, updateMask: mask } });
}

function keyMetricsOf(versions) {
  const counts = new Map();
  for (const v of versions) {
    for (const key of Object.keys(flatten((v.checkpoint || {}).metrics || {}))) counts.set(key, (counts.get(key) || 0) + 1);
  }
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, KEY_METRICS).map(([k]) => k);
}

function changeText(change) {
  const from = change.previousVersion ? `v${change.previousVersion}` : null;
  const to = change.version ? `v${change.version}` : null;
  if (!to) return ['removed', from ? ` (was ${from})` : ''];
  if (!from) return ['set to ', h('strong', null, to)];
  return ['moved from ', from, ' to ', h('strong', null, to)];
}

export async function modelPage(main, name, query, ctx) {
  const selected = new Set();
  let extraVersions = [];
  let versionsToken = '';
  let historyAll = false;
  let drawn = ''; // what the page shows, to skip a live refresh that would change nothing

  async function fetchAll() {
    const [model, versions, history] = await Promise.all([
      get(`/api/v1/models/${seg(name)}`, null, ctx.signal),
      get(`/api/v1/models/${seg(name)}/versions`, { pageSize: VERSIONS_PER_PAGE }, ctx.signal),
      currentAliases(name, ctx.signal),
    ]);
    return { model: model.model || {}, versions, history };
  }

  async function draw({ live = false } = {}) {
    let data;
    try {
      data = await fetchAll();
    } catch (error) {
      if (ctx.signal.aborted) return;
      clear(main);
      add(main, [h('h1', { tabindex: '-1' }, name), refusal(error, 'Loading the model')]);
      ctx.painted();
      return;
    }
    if (live && ctx.isEditing()) {
      ctx.deferred(); // an edit form is open: refresh once it is closed
      return;
    }
    const fingerprint = JSON.stringify(data);
    if (live && fingerprint === drawn) return; // nothing changed: keep the page as it is
    drawn = fingerprint;
    const { model, versions, history } = data;
    const all = [...(versions.modelVersions || []), ...extraVersions];
    versionsToken = extraVersions.length ? versionsToken : (versions.nextPageToken || '');
    const scrollY = window.scrollY;
    clear(main);

    // Header: name, state, owner, times, archive.
    const headOut = h('div', { class: 'form-out' });
    const header = h('div', { class: 'page-head' },
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Models'), ' / '),
      h('h1', { tabindex: '-1', id: 'model-name' }, model.name, model.archived ? [' ', badge('archived', 'archived')] : null),
      h('dl', { class: 'facts' },
        h('dt', null, 'Owner'), h('dd', null, model.owner || '—'),
        h('dt', null, 'Editors'), h('dd', null, (model.editors || []).join(', ') || '—'),
        h('dt', null, 'Created'), h('dd', null, time(model.creationTime)),
        h('dt', null, 'Updated'), h('dd', null, time(model.lastUpdatedTime)),
        h('dt', null, 'Versions'), h('dd', null, String(model.numVersions || 0)),
        h('dt', null, 'Latest'), h('dd', null, model.latestVersion ? h('a', { href: route('models', model.name, 'versions', model.latestVersion) }, `v${model.latestVersion}`) : '—')));
    if (ctx.canEdit) {
      const archive = h('button', { type: 'button', id: 'archive-toggle' }, model.archived ? 'Unarchive' : 'Archive');
      archive.addEventListener('click', action(ctx, archive, headOut, model.archived ? 'Unarchive' : 'Archive',
        () => call('POST', `/api/v1/models/${seg(name)}:${model.archived ? 'unarchive' : 'archive'}`, { body: {} })));
      add(header, h('div', { class: 'head-actions' }, archive));
    }
    add(header, headOut);
    add(main, header);

    const grid = h('div', { class: 'grid' });
    add(main, grid);

    // Description.
    add(grid, editable(ctx, 'Description', 'description',
      h('p', { class: 'description', id: 'model-description' }, model.description || h('span', { class: 'muted' }, 'No description.')),
      (out, cancel) => {
        const input = h('textarea', { id: 'edit-description-input', rows: 3, value: model.description || '' });
        const save = h('button', { type: 'submit' }, 'Save');
        const form = h('form', null, field('edit-description-input', 'Description', input), h('div', { class: 'buttons' }, save, cancel));
        form.addEventListener('submit', action(ctx, save, out, 'Saving the description', () => patchModel(name, { description: input.value }, 'description')));
        return form;
      }));

    // Labels.
    add(grid, editable(ctx, 'Labels', 'labels',
      h('p', { id: 'model-labels' }, (model.labels || []).length ? (model.labels || []).map((l) => [badge(l, 'label'), ' ']) : h('span', { class: 'muted' }, 'No labels.')),
      (out, cancel) => {
        const input = h('input', { id: 'edit-labels-input', type: 'text', value: (model.labels || []).join(', ') });
        const save = h('button', { type: 'submit' }, 'Save');
        const form = h('form', null, field('edit-labels-input', 'Labels, separated by commas', input), h('div', { class: 'buttons' }, save, cancel));
        form.addEventListener('submit', action(ctx, save, out, 'Saving the labels',
          () => patchModel(name, { labels: input.value.split(',').map((s) => s.trim()).filter(Boolean) }, 'labels')));
        return form;
      }));

    // Notes (Markdown, rendered safely).
    add(grid, editable(ctx, 'Notes', 'notes',
      model.notes ? h('div', { id: 'model-notes' }, markdown(model.notes)) : h('p', { id: 'model-notes', class: 'muted' }, 'No notes.'),
      (out, cancel) => {
        const input = h('textarea', { id: 'edit-notes-input', rows: 10, value: model.notes || '' });
        const preview = h('div', { class: 'preview', 'aria-live': 'polite' }, markdown(model.notes || ''));
        input.addEventListener('input', () => { clear(preview); add(preview, markdown(input.value)); });
        const save = h('button', { type: 'submit' }, 'Save');
        const form = h('form', null, field('edit-notes-input', 'Notes (Markdown)', input),
          h('p', { class: 'muted' }, 'Preview'), preview, h('div', { class: 'buttons' }, save, cancel));
        form.addEventListener('submit', action(ctx, save, out, 'Saving the notes', () => patchModel(name, { notes: input.value }, 'notes')));
        return form;
      }));

    // Metadata: a tree; editors add, replace and remove top-level keys.
    const metadata = model.metadata || {};
    const metaSection = h('section', { class: 'card', 'aria-labelledby': 'metadata-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'metadata-title' }, 'Metadata')),
      h('div', { id: 'model-metadata' }, Object.keys(metadata).length ? tree(metadata, 'Metadata') : h('p', { class: 'muted' }, 'No metadata.')));
    if (ctx.canEdit) {
      const out = h('div', { class: 'form-out' });
      const keys = Object.keys(metadata);
      if (keys.length) {
        const removeSelect = h('select', { id: 'meta-remove-key' }, keys.map((k) => h('option', { value: k }, k)));
        const remove = h('button', { type: 'submit' }, 'Remove key');
        const removeForm = h('form', { class: 'inline' }, field('meta-remove-key', 'Key to remove', removeSelect), remove);
        removeForm.addEventListener('submit', action(ctx, remove, out, 'Removing the key',
          () => call('POST', `/api/v1/models/${seg(name)}:updateMetadata`, { body: { removeKeys: [removeSelect.value] } })));
        add(metaSection, removeForm);
      }
      const keyInput = h('input', { id: 'meta-key', type: 'text', required: true });
      const valueInput = h('input', { id: 'meta-value', type: 'text', required: true, placeholder: '"text", 3, {"a": 1}' });
      const set = h('button', { type: 'submit' }, 'Set key');
      const setForm = h('form', { class: 'inline' }, field('meta-key', 'Key', keyInput), field('meta-value', 'Value (JSON)', valueInput), set);
      setForm.addEventListener('input', () => ctx.editing(true));
      setForm.addEventListener('submit', action(ctx, set, out, 'Setting the key', async () => {
        let value;
        try {
          value = JSON.parse(valueInput.value);
        } catch (_) {
          value = valueInput.value; // plain text is taken as a string
        }
        await call('POST', `/api/v1/models/${seg(name)}:updateMetadata`, { body: { merge: { [keyInput.value]: value } } });
      }));
      add(metaSection, [setForm, out]);
    }
    add(grid, metaSection);

    // Aliases: where each points; editors set, move and delete them.
    const aliasSection = h('section', { class: 'card', 'aria-labelledby': 'aliases-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'aliases-title' }, 'Aliases')));
    const aliasOut = h('div', { class: 'form-out' });
    const aliasList = h('ul', { class: 'aliases', id: 'model-aliases' });
    const current = history.aliases;
    for (const [alias, version] of [...current.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      const item = h('li', { 'data-alias': alias }, h('a', { class: 'badge alias', href: route('models', name, 'versions', version) }, `${alias} → v${version}`));
      if (ctx.canEdit) {
        const del = h('button', { type: 'button', class: 'small', 'aria-label': `Delete alias ${alias}` }, 'Delete');
        del.addEventListener('click', action(ctx, del, aliasOut, `Deleting alias ${alias}`,
          () => call('DELETE', `/api/v1/models/${seg(name)}/aliases/${seg(alias)}`)));
        add(item, [' ', del]);
      }
      aliasList.append(item);
    }
    if (!current.size) aliasList.append(h('li', { class: 'muted' }, 'No aliases.'));
    add(aliasSection, aliasList);
    if (ctx.canEdit) {
      const aliasInput = h('input', { id: 'alias-name', type: 'text', required: true, list: 'alias-names', autocomplete: 'off' });
      const versionInput = h('input', { id: 'alias-version', type: 'number', min: 1, required: true, value: model.latestVersion || '' });
      const set = h('button', { type: 'submit', id: 'alias-set' }, 'Set / move');
      const form = h('form', { class: 'inline', 'aria-label': 'Set or move an alias' },
        h('datalist', { id: 'alias-names' }, [...current.keys()].map((a) => h('option', { value: a }))),
        field('alias-name', 'Alias', aliasInput), field('alias-version', 'Version', versionInput), set);
      form.addEventListener('input', () => ctx.editing(true));
      form.addEventListener('submit', action(ctx, set, aliasOut, 'Setting the alias',
        () => call('PUT', `/api/v1/models/${seg(name)}/aliases/${seg(aliasInput.value.trim())}`, { body: { version: Number(versionInput.value) } })));
      add(aliasSection, form);
    }
    add(aliasSection, aliasOut);
    add(grid, aliasSection);

    // Versions, newest first, with aliases and key metrics; pick some to compare.
    const metrics = keyMetricsOf(all);
    const compareButton = h('button', { type: 'button', id: 'compare', disabled: selected.size < 2 }, `Compare selected (${selected.size})`);
    compareButton.addEventListener('click', () => {
      location.hash = `${route('models', name, 'compare')}?v=${[...selected].sort((a, b) => a - b).join(',')}`;
    });
    const rows = all.map((v) => {
      const box = h('input', { type: 'checkbox', id: `pick-${v.version}`, checked: selected.has(v.version), 'aria-label': `Select version ${v.version} to compare` });
      box.addEventListener('change', () => {
        if (box.checked) selected.add(v.version); else selected.delete(v.version);
        compareButton.disabled = selected.size < 2;
        compareButton.textContent = `Compare selected (${selected.size})`;
      });
      const flat = flatten((v.checkpoint || {}).metrics || {});
      return h('tr', { 'data-version': v.version },
        h('td', null, box),
        h('th', { scope: 'row' }, h('a', { href: route('models', name, 'versions', v.version) }, `v${v.version}`)),
        h('td', null, v.name || ''),
        h('td', null, (v.aliases || []).map((a) => [badge(a, 'alias'), ' '])),
        metrics.map((k) => h('td', { class: 'num' }, short(flat[k]))),
        h('td', null, time(v.creationTime)),
        h('td', null, v.owner || '—'));
    });
    const versionsSection = h('section', { class: 'card wide', 'aria-labelledby': 'versions-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'versions-title' }, `Versions (${versions.totalSize || 0})`), compareButton),
      all.length ? h('div', { class: 'scroll' }, h('table', { id: 'versions-table' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Select')), h('th', { scope: 'col' }, 'Version'),
          h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Aliases'), metrics.map((k) => h('th', { scope: 'col', class: 'num' }, k)),
          h('th', { scope: 'col' }, 'Created'), h('th', { scope: 'col' }, 'Owner'))),
        h('tbody', null, rows))) : h('p', { class: 'muted' }, 'No versions yet.'));
    if (versionsToken) {
      const more = h('button', { type: 'button' }, 'Older versions');
      more.addEventListener('click', async () => {
        more.disabled = true;
        try {
          const page = await get(`/api/v1/models/${seg(name)}/versions`, { pageSize: VERSIONS_PER_PAGE, pageToken: versionsToken }, ctx.signal);
          extraVersions = extraVersions.concat(page.modelVersions || []);
          versionsToken = page.nextPageToken || '';
          await draw();
        } catch (error) {
          more.replaceWith(refusal(error, 'Loading older versions'));
        }
      });
      add(versionsSection, more);
    }
    add(main, versionsSection);

    // Alias history: a timeline, newest first.
    const SHOWN = 50;
    const newest = history.changes.slice().reverse();
    const timeline = h('ol', { class: 'timeline', id: 'alias-history', reversed: true },
      (historyAll ? newest : newest.slice(0, SHOWN)).map((c) => h('li', null,
        time(c.time), ' ', h('span', { class: 'principal' }, c.principal || 'anonymous'), ' ',
        h('span', { class: 'badge alias' }, c.alias), ' ', changeText(c))));
    const historySection = h('section', { class: 'card wide', 'aria-labelledby': 'history-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'history-title' }, `Alias history (${history.total})`)),
      newest.length ? timeline : h('p', { class: 'muted' }, 'No alias was ever set.'));
    if (!historyAll && newest.length > SHOWN) {
      const more = h('button', { type: 'button' }, `Show all ${newest.length}`);
      more.addEventListener('click', () => { historyAll = true; draw(); });
      add(historySection, more);
    }
    if (!history.complete) add(historySection, h('p', { class: 'muted' }, `Showing the first ${history.changes.length} of ${history.total} changes.`));
    add(main, historySection);
    window.scrollTo(0, scrollY);
    ctx.painted();
  }

  ctx.refresh = draw;
  await draw();
  ctx.watch([name], (event) => {
    if (event.kind === 'EVENT_KIND_MODEL_RENAMED' && event.newModelName && event.modelName === name) {
      location.hash = route('models', event.newModelName);
      return true;
    }
    return false;
  });
}

export async function comparePage(main, name, query, ctx) {
  const numbers = [...new Set((query.get('v') || '').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0))].slice(0, 20);
  clear(main);
  const head = h('div', { class: 'page-head' },
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Models'), ' / ', h('a', { href: route('models', name) }, name), ' / '),
    h('h1', { tabindex: '-1' }, `Compare versions ${numbers.map((n) => `v${n}`).join(', ')}`));
  add(main, head);
  let drawn = '';
  async function draw({ live = false } = {}) {
    let versions;
    try {
      versions = (await Promise.all(numbers.map((n) => get(`/api/v1/models/${seg(name)}/versions/${n}`, null, ctx.signal)))).map((a) => a.modelVersion || {});
    } catch (error) {
      if (ctx.signal.aborted) return;
      clear(main);
      add(main, [head, refusal(error, 'Loading the versions')]);
      ctx.painted();
      return;
    }
    const fingerprint = JSON.stringify(versions);
    if (live && fingerprint === drawn) return;
    drawn = fingerprint;
    const rows = [];
    const section = (title, pick) => {
      const values = versions.map(pick);
      const keys = [...new Set(values.flatMap((v) => Object.keys(v)))].sort();
      if (keys.length) rows.push({ title });
      for (const key of keys) rows.push({ key, values: values.map((v) => v[key]) });
    };
    section('Version', (v) => ({ name: v.name, comment: v.comment, labels: (v.labels || []).join(', '), aliases: (v.aliases || []).join(', '), owner: v.owner, created: v.creationTime }));
    section('Checkpoint', (v) => {
      const c = v.checkpoint || {};
      return { uuid: c.uuid, experiment: c.experimentId, trial: c.trialId, batch: c.batchNumber, framework: c.framework, format: c.format, state: (c.state || '').replace('CHECKPOINT_STATE_', ''), reported: c.reportTime };
    });
    section('Metrics', (v) => flatten((v.checkpoint || {}).metrics || {}));
    section('Hyperparameters', (v) => flatten((v.checkpoint || {}).hparams || {}));
    section('Experiment config', (v) => flatten((v.checkpoint || {}).experimentConfig || {}));
    const onlyDiffs = h('input', { type: 'checkbox', id: 'only-diffs' });
    const table = h('table', { class: 'compare', id: 'compare-table' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Differs')),
        versions.map((v) => h('th', { scope: 'col' }, h('a', { href: route('models', name, 'versions', v.version) }, `v${v.version}`))))),
      h('tbody', null, rows.map((row) => {
        if (row.title) return h('tr', { class: 'group' }, h('th', { scope: 'rowgroup', colspan: versions.length + 2 }, row.title));
        const texts = row.values.map((v) => (v === undefined ? '—' : short(v)));
        const differs = new Set(texts).size > 1;
        return h('tr', { class: differs ? 'differs' : 'same', 'data-field': row.key },
          h('th', { scope: 'row' }, row.key),
          h('td', { class: 'mark' }, differs ? h('span', { title: 'values differ' }, '≠', h('span', { class: 'sr-only' }, ' differs')) : ''),
          texts.map((t) => h('td', null, t)));
      })));
    onlyDiffs.addEventListener('change', () => table.classList.toggle('only-diffs', onlyDiffs.checked));
    clear(main);
    add(main, [head, h('p', { class: 'legend' }, h('span', { class: 'swatch' }, '≠'), ' marks the fields whose values differ. ',
      h('label', { for: 'only-diffs' }, onlyDiffs, ' Show only differences')), h('div', { class: 'scroll' }, table)]);
    ctx.painted();
  }
  ctx.refresh = draw;
  await draw();
  ctx.watch([name], () => false);
}
