// A version: its fields, its checkpoint, the checkpoint's files with download links, and snippets
// that fetch it with the Python client, the command line and curl.

import { download, get, getToken, seg, filePath } from './api.js';
import { h, add, clear, route, time, badge, tree, bytes, refusal, snippet, shq } from './dom.js';
import { render as markdown } from './markdown.js';

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v === undefined || v === '' || v === null ? '—' : v)]));
}

function treeCard(title, id, value) {
  const has = value && Object.keys(value).length;
  return h('section', { class: 'card', 'aria-labelledby': `${id}-title` }, h('h2', { id: `${id}-title` }, title),
    h('div', { id }, has ? tree(value, title) : h('p', { class: 'muted' }, 'None.')));
}

export async function versionPage(main, name, number, query, ctx) {
  let drawn = '';
  async function draw({ live = false } = {}) {
    let v;
    try {
      v = (await get(`/api/v1/models/${seg(name)}/versions/${seg(number)}`, null, ctx.signal)).modelVersion || {};
    } catch (error) {
      if (ctx.signal.aborted) return;
      clear(main);
      add(main, [h('h1', { tabindex: '-1' }, `${name} v${number}`), refusal(error, 'Loading the version')]);
      ctx.painted();
      return;
    }
    const fingerprint = JSON.stringify(v);
    if (live && fingerprint === drawn) return; // nothing changed: keep the page as it is
    drawn = fingerprint;
    const c = v.checkpoint || {};
    const files = Object.entries(c.resources || {}).sort((a, b) => a[0].localeCompare(b[0]));
    const fileOut = h('div', { class: 'form-out' });
    const fileRows = files.map(([path, size]) => {
      const href = `/api/v1/checkpoints/${seg(c.uuid)}/files/${filePath(path)}`;
      const base = path.split('/').pop();
      const link = h('a', { href, download: base, class: 'download', 'aria-label': `Download ${path}` }, 'Download');
      link.addEventListener('click', async (event) => {
        if (!getToken()) return; // no token: the browser downloads it as any link
        event.preventDefault();
        clear(fileOut);
        try {
          await download(href, base, ctx.signal);
        } catch (error) {
          add(fileOut, refusal(error, `Downloading ${path}`));
        }
      });
      return h('tr', { 'data-path': path }, h('th', { scope: 'row' }, h('code', null, path)), h('td', { class: 'num' }, bytes(size)), h('td', null, link));
    });
    const total = files.reduce((sum, [, size]) => sum + Number(size || 0), 0);

    const origin = location.origin;
    const dir = `./${name}-v${v.version}`;
    const auth = '-H "Authorization: Bearer $MODEL_REGISTRY_TOKEN" ';
    const python = [
      'from registry_client import Registry',
      '',
      'r = Registry()  # the gRPC server: $MODEL_REGISTRY_TARGET, else localhost:50051; token from $MODEL_REGISTRY_TOKEN',
      `version = r.get_version(${JSON.stringify(name)}, version=${v.version})`,
      `path = version.download(${JSON.stringify(dir)})  # the checkpoint's files`,
      'model = version.load()  # or load the model object',
    ].join('\n');
    const cli = [
      `model-registry model version describe ${shq(name)} ${v.version}`,
      `model-registry checkpoint download ${c.uuid || 'UUID'} ${shq(dir)}`,
    ].join('\n');
    const curl = [
      `curl -fsS ${auth}\\\n  ${shq(`${origin}/api/v1/models/${seg(name)}/versions/${v.version}`)}`,
      ...files.slice(0, 3).map(([path]) => `curl -fsS ${auth}-o ${shq(path.split('/').pop())} \\\n  ${shq(`${origin}/api/v1/checkpoints/${seg(c.uuid)}/files/${filePath(path)}`)}`),
    ].join('\n');

    const scrollY = window.scrollY;
    clear(main);
    add(main, [
      h('div', { class: 'page-head' },
        h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Models'), ' / ', h('a', { href: route('models', name) }, name), ' / '),
        h('h1', { tabindex: '-1', id: 'version-title' }, `${name} v${v.version}`, v.name ? [' ', h('span', { class: 'muted' }, `(${v.name})`)] : null),
        h('p', { id: 'version-aliases' }, (v.aliases || []).map((a) => [badge(a, 'alias'), ' '])),
        facts([['Comment', v.comment], ['Labels', (v.labels || []).map((l) => [badge(l, 'label'), ' '])], ['Owner', v.owner],
          ['Created', time(v.creationTime)], ['Updated', time(v.lastUpdatedTime)]])),
      h('div', { class: 'grid' },
        h('section', { class: 'card', 'aria-labelledby': 'checkpoint-title' }, h('h2', { id: 'checkpoint-title' }, 'Checkpoint'),
          facts([['UUID', h('code', { id: 'checkpoint-uuid' }, c.uuid || '')], ['Experiment', c.experimentId], ['Trial', c.trialId],
            ['Batch', c.batchNumber], ['Framework', c.framework], ['Format', c.format], ['State', c.state ? c.state.replace('CHECKPOINT_STATE_', '') : ''],
            ['Reported', time(c.reportTime)], ['Owner', c.owner], ['Storage', c.storageUri ? h('code', null, c.storageUri) : '']])),
        treeCard('Metrics', 'checkpoint-metrics', c.metrics),
        treeCard('Hyperparameters', 'checkpoint-hparams', c.hparams),
        treeCard('Experiment config', 'checkpoint-config', c.experimentConfig),
        treeCard('Checkpoint metadata', 'checkpoint-metadata', c.metadata),
        treeCard('Version metadata', 'version-metadata', v.metadata),
        h('section', { class: 'card', 'aria-labelledby': 'vnotes-title' }, h('h2', { id: 'vnotes-title' }, 'Notes'),
          v.notes ? h('div', { id: 'version-notes' }, markdown(v.notes)) : h('p', { class: 'muted' }, 'No notes.'))),
      h('section', { class: 'card wide', 'aria-labelledby': 'files-title' },
        h('h2', { id: 'files-title' }, `Files (${files.length}, ${bytes(total)})`),
        files.length ? h('div', { class: 'scroll' }, h('table', { id: 'files-table' },
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Path'), h('th', { scope: 'col', class: 'num' }, 'Size'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Download')))),
          h('tbody', null, fileRows))) : h('p', { class: 'muted' }, 'No files stored in the registry.'),
        fileOut),
      h('section', { class: 'card wide', 'aria-labelledby': 'fetch-title' }, h('h2', { id: 'fetch-title' }, 'Fetch this version'),
        snippet('Python client', python), snippet('Command line', cli), snippet('curl (REST API)', curl)),
    ]);
    window.scrollTo(0, scrollY);
    ctx.painted();
  }
  ctx.refresh = draw;
  await draw();
  ctx.watch([name], () => false);
}
