// A small, safe Markdown renderer: it builds DOM nodes and puts every piece of the source in text
// nodes, so no HTML in the source is ever parsed. Supported: headings, paragraphs, lists, block
// quotes, fenced and indented code, rules, `code`, **strong**, *emphasis*, [links](https://...) and
// bare http(s) URLs. Links only to http, https and mailto; anything else stays text.

import { h } from './dom.js';

const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([^*]*?[^\s*]|[^\s*])\*|\b_(?=[^\s_])([^_]*?[^\s_]|[^\s_])_\b|\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

export function safeHref(href) {
  try {
    const parsed = new URL(href, 'http://invalid.invalid/');
    if (parsed.origin === 'http://invalid.invalid') return null; // relative: not allowed
    return ['http:', 'https:', 'mailto:'].includes(parsed.protocol) ? parsed.href : null;
  } catch (_) {
    return null;
  }
}

export function inline(text) {
  const nodes = [];
  let at = 0;
  const pattern = new RegExp(INLINE); // its own lastIndex: inline() recurses
  for (let m = pattern.exec(text); m; m = pattern.exec(text)) {
    if (m.index > at) nodes.push(document.createTextNode(text.slice(at, m.index)));
    if (m[1]) nodes.push(h('code', null, m[2].replace(/^ (.*) $/, '$1')));
    else if (m[3] !== undefined || m[4] !== undefined) nodes.push(h('strong', null, inline(m[3] ?? m[4])));
    else if (m[5] !== undefined || m[6] !== undefined) nodes.push(h('em', null, inline(m[5] ?? m[6])));
    else if (m[7] !== undefined) {
      const href = safeHref(m[8]);
      nodes.push(href ? h('a', { href, rel: 'noopener noreferrer nofollow', target: '_blank' }, inline(m[7])) : document.createTextNode(m[0]));
    } else {
      const href = safeHref(m[9]);
      nodes.push(href ? h('a', { href, rel: 'noopener noreferrer nofollow', target: '_blank' }, m[9]) : document.createTextNode(m[9]));
    }
    at = m.index + m[0].length;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

const FENCE = /^ {0,3}(```+|~~~+)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const BULLET = /^ {0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const INDENTED = /^( {4}|\t)(.*)$/;

function blocks(lines, depth) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    let m = FENCE.exec(line);
    if (m) {
      const code = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(m[1])) code.push(lines[i++]);
      i += 1;
      out.push(h('pre', null, h('code', null, code.join('\n'))));
      continue;
    }
    m = INDENTED.exec(line);
    if (m) {
      const code = [];
      while (i < lines.length && (INDENTED.test(lines[i]) || !lines[i].trim())) code.push(lines[i++].replace(INDENTED, '$2'));
      out.push(h('pre', null, h('code', null, code.join('\n').replace(/\n+$/, ''))));
      continue;
    }
    m = HEADING.exec(line);
    if (m) {
      out.push(h(`h${Math.min(6, m[1].length + 2)}`, null, inline(m[2])));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.push(h('hr'));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
      out.push(h('blockquote', null, depth < 8 ? blocks(quoted, depth + 1) : quoted.join('\n')));
      continue;
    }
    const bullet = BULLET.test(line);
    if (bullet || NUMBERED.test(line)) {
      const pattern = bullet ? BULLET : NUMBERED;
      const items = [];
      while (i < lines.length && pattern.test(lines[i])) {
        const got = pattern.exec(lines[i++]);
        const text = [bullet ? got[1] : got[2]];
        // Continuation lines: indented and not a new item.
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !pattern.test(lines[i])) text.push(lines[i++].trim());
        items.push(h('li', null, inline(text.join(' '))));
      }
      const start = bullet ? null : Number(NUMBERED.exec(line)[1]);
      out.push(h(bullet ? 'ul' : 'ol', start && start !== 1 ? { start } : null, items));
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !HEADING.test(lines[i])
      && !QUOTE.test(lines[i]) && !BULLET.test(lines[i]) && !RULE.test(lines[i])
      && !(para.length === 0 && NUMBERED.test(lines[i]))) {
      para.push(lines[i++].trim());
    }
    if (!para.length) {
      // A line no rule above took (e.g. a numbered line inside a paragraph): keep it as text.
      para.push(lines[i++].trim());
    }
    const children = [];
    para.forEach((text, n) => {
      if (n) children.push(h('br'));
      children.push(...inline(text));
    });
    out.push(h('p', null, children));
  }
  return out;
}

/** The Markdown source as a <div class="markdown"> of DOM nodes. */
export function render(source) {
  const text = String(source || '');
  return h('div', { class: 'markdown' }, blocks(text.split(/\r\n|\n|\r/), 0));
}
