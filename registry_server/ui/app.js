// The single-page app: hash routes, the session (token and role) and live refresh.
//   #/?filters            the models table
//   #/models/NAME         a model            #/models/NAME/compare?v=1,2   compare versions
//   #/models/NAME/versions/N   a version     #/events?models=&kinds=&after=  the events view

import { role, demote, follow, getToken, setToken } from './api.js';
import { h, add, clear } from './dom.js';
import { modelsPage } from './models.js';
import { modelPage, comparePage } from './model.js';
import { versionPage } from './version.js';
import { eventsPage } from './events.js';

const main = document.getElementById('main');
const notice = document.getElementById('notice');
const who = document.getElementById('who');
const signin = document.getElementById('signin');
const signout = document.getElementById('signout');
const dialog = document.getElementById('signin-dialog');
const tokenInput = document.getElementById('token-input');

let session = { role: 'viewer' };
let current = null; // the page shown: { controller, ... }

function showNotice(children, kind = 'info') {
  clear(notice);
  if (!children) {
    notice.hidden = true;
    return;
  }
  notice.className = `notice ${kind}`;
  add(notice, children);
  const close = h('button', { type: 'button', class: 'small', 'aria-label': 'Dismiss' }, '×');
  close.addEventListener('click', () => showNotice(null));
  add(notice, [' ', close]);
  notice.hidden = false;
}

function drawSession() {
  const signed = Boolean(getToken());
  signin.hidden = signed;
  signout.hidden = !signed;
  who.textContent = {
    editor: signed ? 'Signed in: may edit' : 'No sign-in needed',
    viewer: signed ? 'Signed in: read only' : 'Read only',
    'signed-out': 'Not signed in',
  }[session.role] || '';
  document.body.dataset.role = session.role;
}

async function refreshSession() {
  session.role = await role();
  drawSession();
  if (session.role === 'signed-out') {
    const button = h('button', { type: 'button' }, 'Sign in');
    button.addEventListener('click', () => openSignin());
    showNotice(['This registry needs a token to read it. ', button]);
  }
}

function openSignin() {
  tokenInput.value = '';
  dialog.showModal();
  tokenInput.focus();
}

signin.addEventListener('click', openSignin);
document.getElementById('signin-cancel').addEventListener('click', () => dialog.close());
document.getElementById('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = tokenInput.value.trim();
  tokenInput.value = '';
  dialog.close();
  if (!token) return;
  setToken(token);
  showNotice(null);
  await refreshSession();
  if (session.role === 'signed-out') {
    setToken(''); // a refused token is not kept
    drawSession();
    showNotice('That token was refused (UNAUTHENTICATED). Check it and sign in again.', 'error');
  }
  show();
});
signout.addEventListener('click', async () => {
  setToken('');
  showNotice(null);
  await refreshSession();
  show();
});

function parse() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const at = raw.indexOf('?');
  const path = at < 0 ? raw : raw.slice(0, at);
  const query = new URLSearchParams(at < 0 ? '' : raw.slice(at + 1));
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch (_) {
    parts = ['?'];
  }
  return { parts, query };
}

function makeContext() {
  const controller = new AbortController();
  const page = { controller, dirty: false, pending: null };
  const ctx = {
    signal: controller.signal,
    canEdit: session.role === 'editor',
    refresh: async () => {},
    painted: () => {
      if (!document.body.dataset.painted) performance.mark('first-paint-of-data');
      document.body.dataset.painted = String(Date.now());
      main.setAttribute('aria-busy', 'false');
    },
    // While an edit form is open, live changes wait: the page refreshes when the edit ends.
    editing: (on) => {
      page.dirty = on;
      if (!on && page.stale) {
        page.stale = false;
        clearTimeout(page.pending);
        page.pending = setTimeout(() => keepFocus(() => ctx.refresh({ live: true })), 100);
      }
    },
    isEditing: () => page.dirty,
    deferred: () => { page.stale = true; },
    refused: (error) => {
      if (error.code === 'PERMISSION_DENIED' && error.reason === 'ROLE_NOT_ALLOWED') {
        demote('viewer');
        session.role = 'viewer';
        drawSession();
        showNotice(['Your token may only read (', h('code', null, error.reason), '): edit controls are hidden.'], 'error');
        ctx.canEdit = false;
        page.dirty = false;
        ctx.refresh();
      } else if (error.code === 'UNAUTHENTICATED') {
        refreshSession();
      }
    },
    /** Refreshes the page when an event of these models arrives; `handler` may take over. */
    watch: async (names, handler) => {
      const changed = () => {
        if (controller.signal.aborted) return;
        if (page.dirty) {
          page.stale = true;
          return;
        }
        clearTimeout(page.pending);
        page.pending = setTimeout(() => keepFocus(() => ctx.refresh({ live: true })), 100);
      };
      // Where the log ends now, then every event after it. The page was fetched meanwhile: refresh
      // once so that a change between the two is not missed.
      const end = await follow({ modelNames: names, stopAtEnd: true }, { signal: controller.signal });
      if (controller.signal.aborted) return;
      changed();
      document.body.dataset.live = 'on';
      await follow({ modelNames: names, afterSequence: end }, {
        signal: controller.signal,
        onEvent: (event) => {
          if (handler && handler(event)) return;
          if (event.kind === 'EVENT_KIND_MODEL_DELETED') {
            showNotice(`The model ${event.modelName} was deleted.`, 'error');
            return;
          }
          changed();
        },
      });
    },
  };
  return { page, ctx };
}

async function keepFocus(run) {
  const id = document.activeElement && document.activeElement.id;
  await run();
  if (id) {
    const again = document.getElementById(id);
    if (again) again.focus({ preventScroll: true });
  }
}

async function show() {
  if (current) current.controller.abort();
  const { page, ctx } = makeContext();
  current = page;
  document.body.dataset.live = 'off';
  main.setAttribute('aria-busy', 'true');
  const { parts, query } = parse();
  for (const [id, on] of [['nav-models', parts[0] !== 'events'], ['nav-events', parts[0] === 'events']]) {
    const link = document.getElementById(id);
    if (on) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  try {
    if (parts.length === 0) await modelsPage(main, query, ctx);
    else if (parts[0] === 'events' && parts.length === 1) await eventsPage(main, query, ctx);
    else if (parts[0] === 'models' && parts.length === 2) await modelPage(main, parts[1], query, ctx);
    else if (parts[0] === 'models' && parts.length === 3 && parts[2] === 'compare') await comparePage(main, parts[1], query, ctx);
    else if (parts[0] === 'models' && parts.length === 4 && parts[2] === 'versions') await versionPage(main, parts[1], parts[3], query, ctx);
    else {
      clear(main);
      add(main, [h('h1', { tabindex: '-1' }, 'Not found'), h('p', null, 'No such page. ', h('a', { href: '#/' }, 'Back to the models.'))]);
      ctx.painted();
    }
  } catch (error) {
    if (!ctx.signal.aborted) {
      console.error(error);
      showNotice(`Something went wrong: ${error.message}`, 'error');
    }
  }
}

let lastPath = null;
window.addEventListener('hashchange', () => {
  const path = parse().parts.join('/');
  const moved = path !== lastPath;
  lastPath = path;
  show().then(() => {
    if (moved) {
      const heading = main.querySelector('h1');
      if (heading) heading.focus({ preventScroll: true });
    }
  });
});

(async () => {
  lastPath = parse().parts.join('/');
  // The first page does not wait for the role (one more round trip) unless it is remembered; when
  // the role turns out to allow edits, the page is drawn again with its edit controls.
  const remembered = sessionStorage.getItem('model-registry-role');
  if (remembered) {
    session.role = remembered;
    drawSession();
  }
  const before = session.role;
  const first = show();
  await refreshSession();
  await first;
  const { parts } = parse();
  if (session.role !== before && parts[0] === 'models' && parts.length === 2) show(); // the only page with edit controls
})();
