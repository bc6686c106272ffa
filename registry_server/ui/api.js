// The REST API (routes in the README's "REST API"), the session's token and the event stream.
// The token lives in sessionStorage and travels only in the Authorization header, never in a URL.

const TOKEN_KEY = 'model-registry-token';
const ROLE_KEY = 'model-registry-role';

const CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
  'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED',
  'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(token) {
  sessionStorage.removeItem(ROLE_KEY);
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A refusal of the server: a google.rpc.Status, with its ErrorInfo's reason and metadata. */
export class ApiError extends Error {
  constructor(httpStatus, status) {
    super((status && status.message) || `HTTP ${httpStatus}`);
    const details = (status && Array.isArray(status.details)) ? status.details : [];
    const info = details.find((d) => d && String(d['@type'] || '').endsWith('google.rpc.ErrorInfo')) || {};
    const code = status ? status.code : undefined;
    this.httpStatus = httpStatus;
    this.code = typeof code === 'number' ? (CODES[code] || String(code)) : String(code || `HTTP_${httpStatus}`);
    this.reason = typeof info.reason === 'string' ? info.reason : '';
    this.metadata = info.metadata && typeof info.metadata === 'object' ? info.metadata : {};
  }
}

/** `path` with a query string; arrays repeat their key, empty values are left out. */
export function url(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null && one !== '') params.append(key, String(one));
    }
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** One path segment (a model name, an alias), encoded. */
export const seg = (value) => encodeURIComponent(String(value));

/** A checkpoint file's path, each segment encoded, slashes kept. */
export const filePath = (path) => String(path).split('/').map(encodeURIComponent).join('/');

function headers(extra) {
  const result = { Accept: 'application/json', ...extra };
  const token = getToken();
  if (token) result.Authorization = `Bearer ${token}`;
  return result;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  return new ApiError(response.status, body && typeof body === 'object' ? body : null);
}

export async function call(method, path, { query, body, signal } = {}) {
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch (error) {
    if (signal && signal.aborted) throw error;
    throw new ApiError(0, { code: 14, message: 'cannot reach the registry (is the server running?)' });
  }
  if (!response.ok) throw await errorOf(response);
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

export const get = (path, query, signal) => call('GET', path, { query, signal });

/**
 * What the session may do: 'editor' (may try edits; the server still checks ownership), 'viewer',
 * or 'signed-out' (the server wants a token). GetServerInfo names the caller's role (ROLE_ADMIN on a
 * server without tokens). Remembered for the session (and forgotten when the token changes).
 */
export async function role() {
  const known = sessionStorage.getItem(ROLE_KEY);
  if (known) return known;
  let found;
  try {
    const info = await get('/api/v1/serverInfo');
    found = info.callerRole === 'ROLE_EDITOR' || info.callerRole === 'ROLE_ADMIN' ? 'editor' : 'viewer';
  } catch (error) {
    if (error.code !== 'UNAUTHENTICATED') return 'viewer'; // unknown: not remembered
    found = 'signed-out';
  }
  sessionStorage.setItem(ROLE_KEY, found);
  return found;
}

/** Forget the role, e.g. after a PERMISSION_DENIED ROLE_NOT_ALLOWED showed that it changed. */
export function demote(to) {
  sessionStorage.setItem(ROLE_KEY, to);
}

function parseSse(buffer, dispatch) {
  // Returns what is left of `buffer` after its complete messages (separated by a blank line).
  const parts = buffer.split(/\r\n\r\n|\n\n|\r\r/);
  const rest = parts.pop();
  for (const part of parts) {
    const message = { id: '', event: '', data: [] };
    for (const line of part.split(/\r\n|\n|\r/)) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') message.data.push(value);
      else if (field === 'id') message.id = value;
      else if (field === 'event') message.event = value;
    }
    if (message.data.length) dispatch(message);
  }
  return rest;
}

/**
 * Follows WatchEvents as Server-Sent Events. EventSource cannot send an Authorization header, so the
 * stream is read with fetch; after a drop it resumes after the last sequence received, waiting a
 * little longer each time. `onEvent(event)` gets each Event; `onState(state, error)` gets
 * 'connecting', 'live', 'ended' (with stopAtEnd) or 'error'. Resolves with the last sequence seen
 * once the stream ends (stopAtEnd), the signal aborts, or the server refuses the request.
 */
export async function follow({ modelNames = [], kinds = [], afterSequence = 0, stopAtEnd = false }, { onEvent, onState, signal }) {
  let last = Number(afterSequence) || 0;
  let wait = 500;
  const state = onState || (() => {});
  while (!(signal && signal.aborted)) {
    state('connecting');
    try {
      const response = await fetch(url('/api/v1/events', { modelNames, kinds, afterSequence: last, stopAtEnd: stopAtEnd ? 'true' : '' }), {
        headers: headers({ Accept: 'text/event-stream' }), signal, cache: 'no-store', credentials: 'same-origin',
      });
      if (!response.ok) {
        const error = await errorOf(response);
        state('error', error);
        if (response.status < 500 && response.status !== 429) return last;
      } else {
        state('live');
        wait = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        let ended = null; // the server's reason for ending the stream (an `error` event), if it gave one
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = parseSse(buffer + value, (message) => {
            let parsed;
            try {
              parsed = JSON.parse(message.data.join('\n'));
            } catch (_) {
              return;
            }
            if (message.event === 'error') {
              ended = new ApiError(0, parsed);
              return;
            }
            if (!parsed || !parsed.event) return;
            const event = parsed.event;
            const sequence = Number(event.sequence || message.id || 0);
            if (sequence > last) last = sequence;
            if (onEvent) onEvent(event);
          });
        }
        if (ended) {
          // Token revoked, role taken away, a bad request: retrying would not help. Else resume.
          state('error', ended);
          if (['UNAUTHENTICATED', 'PERMISSION_DENIED', 'INVALID_ARGUMENT', 'NOT_FOUND'].includes(ended.code)) return last;
        } else if (stopAtEnd) {
          state('ended');
          return last;
        } else {
          state('error', new ApiError(0, { code: 14, message: 'the event stream closed; resuming' }));
        }
      }
    } catch (error) {
      if (signal && signal.aborted) return last;
      state('error', error instanceof ApiError ? error : new ApiError(0, { code: 14, message: 'the event stream broke; resuming' }));
    }
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, wait);
      if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
    wait = Math.min(wait * 2, 10000);
  }
  return last;
}

/** Downloads a file with the session's token: a plain link cannot carry the Authorization header. */
export async function download(href, filename, signal) {
  const response = await fetch(href, { headers: headers({ Accept: 'application/octet-stream' }), signal, cache: 'no-store' });
  if (!response.ok) throw await errorOf(response);
  const blob = await response.blob();
  const objectUrl = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = objectUrl;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(objectUrl), 60000);
}
