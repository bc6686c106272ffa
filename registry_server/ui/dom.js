// Building the page. Every text the server sends goes in as a text node (never as HTML), so names,
// labels, metadata and notes holding markup or script render as inert text.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = Boolean(value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  add(el, children);
  return el;
}

export function add(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** A hash link inside the app: segments are encoded, so a name cannot add a path or a query. */
export function route(...segments) {
  return `#/${segments.map((s) => encodeURIComponent(String(s))).join('/')}`;
}

export function time(value) {
  if (!value) return h('span', { class: 'muted' }, '—');
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const pad = (n) => String(n).padStart(2, '0');
  const text = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return h('time', { datetime: date.toISOString(), title: date.toISOString() }, text);
}

export function bytes(value) {
  let n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${n.toFixed(n >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** A JSON value in one short line (for tables). */
export function short(value) {
  if (value === undefined) return '—';
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
  return JSON.stringify(value);
}

export function badge(text, cls = '') {
  return h('span', { class: `badge ${cls}`.trim() }, text);
}

/** A JSON value as a tree: objects and arrays as nested lists under a disclosure, leaves as text. */
export function tree(value, label) {
  if (value === null || typeof value !== 'object') {
    return h('span', { class: `leaf ${value === null ? 'null' : typeof value}` }, typeof value === 'string' ? JSON.stringify(value) : String(value));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  if (!entries.length) return h('span', { class: 'leaf muted' }, Array.isArray(value) ? '[]' : '{}');
  const list = h('ul', { class: 'tree' }, entries.map(([key, child]) => h('li', null,
    child !== null && typeof child === 'object'
      ? h('details', { open: true }, h('summary', null, h('span', { class: 'key' }, key), h('span', { class: 'muted' }, Array.isArray(child) ? ` [${child.length}]` : ` {${Object.keys(child).length}}`)), tree(child))
      : [h('span', { class: 'key' }, key), ': ', tree(child)])));
  return label ? h('div', { class: 'tree-root', 'aria-label': label }, list) : list;
}

/** Flattens nested objects into dotted keys: {"a": {"b": 1}} -> {"a.b": 1}. */
export function flatten(value, prefix = '', into = {}) {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length) {
    for (const [key, child] of Object.entries(value)) flatten(child, prefix ? `${prefix}.${key}` : key, into);
  } else if (prefix) {
    into[prefix] = value;
  }
  return into;
}

/** A refusal of the server, shown as its code, reason and message. */
export function refusal(error, what) {
  const parts = [];
  if (what) parts.push(h('strong', null, `${what} refused: `));
  parts.push(h('span', { class: 'code' }, error.code || 'ERROR'));
  if (error.reason) parts.push(' ', h('span', { class: 'reason' }, error.reason));
  parts.push(' — ', error.message || 'no message');
  if (error.code === 'PERMISSION_DENIED') {
    parts.push(h('span', { class: 'hint' }, error.reason === 'ROLE_NOT_ALLOWED'
      ? ' Your token is a viewer\'s: ask for an editor\'s token to change things.'
      : ' Only the model\'s owner, its editors or an admin may change it.'));
  } else if (error.code === 'UNAUTHENTICATED') {
    parts.push(h('span', { class: 'hint' }, ' Sign in with a token.'));
  }
  return h('div', { class: 'error', role: 'alert' }, parts);
}

/** A copy-ready snippet with a Copy button. */
export function snippet(title, text) {
  const id = `snippet-${Math.random().toString(36).slice(2)}`;
  const status = h('span', { class: 'copied', 'aria-live': 'polite' });
  const copy = h('button', { type: 'button', class: 'copy', 'aria-describedby': id, onclick: async () => {
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = 'Copied';
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      status.textContent = 'Selected: press Ctrl+C';
    }
  } }, 'Copy');
  const code = h('code', null, text);
  return h('figure', { class: 'snippet' }, h('figcaption', { id }, title, ' ', copy, ' ', status), h('pre', null, code));
}

/** Single-quoted for a POSIX shell. */
export function shq(value) {
  return `'${String(value).replace(/'/g, "'\\''")}'`;
}
