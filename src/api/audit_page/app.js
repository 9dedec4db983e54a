// The audit team's page. Everything it shows comes from this server's FHIR API with the
// token typed in (kept in sessionStorage: this tab only), so every read is audited like any
// other. Data is put into the page with textContent only, never as HTML.
'use strict';

const TOKEN = 'cpis-audit-token';
const NHS = 'https://fhir.nhs.uk/Id/nhs-number';
const COLOURS = ['#005eb8', '#007f3b', '#ffb81c', '#ae2573', '#00a499', '#768692', '#330072', '#ed8b00'];

const $ = (s) => document.querySelector(s);

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function status(text, error) {
  const s = $('#status');
  s.textContent = text;
  s.className = error ? 'error' : '';
}

async function api(path) {
  const r = await fetch(path, {
    headers: { Authorization: 'Bearer ' + sessionStorage.getItem(TOKEN), Accept: 'application/fhir+json' },
  });
  const body = await r.json().catch(() => null);
  if (r.status === 401) {
    signOut();
    throw new Error('the token was refused: sign in again');
  }
  if (!r.ok) {
    const issue = body && body.issue && body.issue[0];
    throw new Error((issue && issue.diagnostics) || 'HTTP ' + r.status);
  }
  return body;
}

// Parameters → a list of { name: value | [values] } for each repeated parameter `name`.
function partsOf(report, name) {
  return (report.parameter || []).filter((p) => p.name === name).map((p) => {
    const o = {};
    for (const q of p.part || []) {
      const key = Object.keys(q).find((k) => k.startsWith('value'));
      const v = key ? q[key] : undefined;
      if (q.name === 'flag') (o.flag = o.flag || []).push(v);
      else o[q.name] = v;
    }
    return o;
  });
}

// A stacked bar per day, a colour per series (the 7 largest; the rest as "others").
function chart(target, rows, key) {
  const box = $(target);
  box.replaceChildren();
  if (rows.length === 0) {
    box.append(el('p', 'No accesses in this period.'));
    return;
  }
  const totals = {};
  for (const r of rows) totals[r[key]] = (totals[r[key]] || 0) + r.accesses;
  const top = Object.keys(totals).sort((a, b) => totals[b] - totals[a] || a.localeCompare(b)).slice(0, 7);
  const series = (name) => (top.includes(name) ? name : 'others');
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const byDay = {};
  for (const r of rows) {
    const d = (byDay[r.day] = byDay[r.day] || {});
    d[series(r[key])] = (d[series(r[key])] || 0) + r.accesses;
  }
  const names = top.concat(Object.keys(totals).length > top.length ? ['others'] : []);
  const max = Math.max(...days.map((d) => Object.values(byDay[d]).reduce((a, b) => a + b, 0)));
  const width = Math.max(320, days.length * 28 + 60);
  const height = 180;
  const plot = height - 30;
  const s = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': target });
  s.append(svg('text', { x: 4, y: 12, 'font-size': 10 }));
  s.lastChild.textContent = String(max);
  days.forEach((day, i) => {
    let y = plot;
    const x = 40 + i * 28;
    names.forEach((name, j) => {
      const n = byDay[day][name] || 0;
      if (!n) return;
      const h = Math.max(1, (n / max) * (plot - 20));
      y -= h;
      const bar = svg('rect', { class: 'bar', x, y, width: 20, height: h, fill: COLOURS[j % COLOURS.length], 'data-series': name, 'data-day': day, 'data-count': n });
      const tip = svg('title');
      tip.textContent = `${day} ${name}: ${n}`;
      bar.append(tip);
      s.append(bar);
    });
    const label = svg('text', { x, y: height - 14, 'font-size': 9 });
    label.textContent = day.slice(5);
    s.append(label);
  });
  const legend = el('div', null, { class: 'legend' });
  names.forEach((name, j) => {
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    const swatch = el('span', null, { class: 'swatch' });
    swatch.style.background = COLOURS[j % COLOURS.length];
    legend.append(swatch, el('span', name === 'others' ? 'others' : `${name} (${totals[name]})`));
  });
  box.append(s, legend);
}

function fill(table, rows) {
  const body = $(table + ' tbody');
  body.replaceChildren(...rows);
}

function link(text, uri) {
  const a = el('a', text, { href: '#results' });
  a.addEventListener('click', (e) => {
    e.preventDefault();
    const u = new URL(uri, location.href);
    runSearch(u.pathname + u.search + (u.search.includes('_count') ? '' : '&_count=20'), true);
  });
  return a;
}

async function showReport() {
  const start = $('#start').value;
  const end = $('#end').value;
  status('Loading…');
  try {
    const report = await api(`/AuditEvent/$access-report?start=${start}&end=${end}`);
    const daily = partsOf(report, 'daily');
    chart('#chart-councils', daily.filter((d) => d.council), 'council');
    chart('#chart-orgs', daily.filter((d) => d.organization), 'organization');
    fill('#notifications', partsOf(report, 'notifications').map((n) => {
      const tr = el('tr');
      tr.append(el('td', n.council), el('td', n.subscriptions), el('td', n.backlog), el('td', n.lagSeconds), el('td', n.failing));
      return tr;
    }));
    fill('#misuse', partsOf(report, 'user').map((u) => {
      const tr = el('tr');
      const flags = el('td', (u.flag || []).join(', '), { class: u.flag ? 'flag' : '' });
      const events = el('td');
      events.append(link('AuditEvents', u.events));
      tr.append(el('td', u.agent), el('td', u.agentName || ''), el('td', u.organization), el('td', u.role),
        el('td', u.accesses), el('td', u.distinctPeople), el('td', u.mostPeopleInADay), el('td', u.outOfHours),
        el('td', u.repeatedSilentReads), el('td', u.probeMisses), flags, events);
      return tr;
    }));
    fill('#refusals', partsOf(report, 'refusals').map((r) => {
      const tr = el('tr');
      const events = el('td');
      events.append(link('AuditEvents', r.events));
      tr.append(el('td', r.source), el('td', r.count), el('td', r.flagged ? 'yes' : '', { class: r.flagged ? 'flag' : '' }), events);
      return tr;
    }));
    status(`Report for ${start} to ${end}.`);
  } catch (e) {
    status(e.message, true);
  }
}

// Search paging: the server's `next` links; the way back is kept here.
const pages = [];

function rowOf(e) {
  const user = (e.agent || []).find((a) => a.requestor) || {};
  const org = (e.agent || []).find((a) => a.who && a.who.identifier && a.who.identifier.system === 'https://fhir.nhs.uk/Id/ods-organization-code');
  const person = (e.entity || []).find((x) => x.what && x.what.identifier && x.what.identifier.system === NHS);
  const councils = (e.entity || []).filter((x) => x.description === 'Responsible council').map((x) => x.what.identifier.value);
  const purpose = e.purposeOfEvent && e.purposeOfEvent[0].coding[0].code;
  const tr = el('tr', null, { class: 'event' });
  tr.append(
    el('td', e.recorded),
    el('td', (user.who && user.who.identifier && user.who.identifier.value) || (user.who && user.who.display) || ''),
    el('td', (org && org.who.identifier.value) || ''),
    el('td', (user.role && user.role[0].coding[0].code) || ''),
    el('td', (e.subtype && e.subtype[0].code) || e.type.code),
    el('td', e.outcome),
    el('td', purpose || ''),
    el('td', (person && person.what.identifier.value) || ''),
    el('td', councils.join(' ')),
  );
  return tr;
}

async function runSearch(path, fresh) {
  if (fresh) pages.length = 0;
  status('Searching…');
  try {
    const bundle = await api(path);
    pages.push(path);
    const events = (bundle.entry || []).filter((x) => x.search && x.search.mode === 'match').map((x) => x.resource);
    fill('#results', events.map(rowOf));
    const next = (bundle.link || []).find((l) => l.relation === 'next');
    const nextButton = $('#next');
    nextButton.disabled = !next;
    nextButton.dataset.href = next ? new URL(next.url).pathname + new URL(next.url).search : '';
    $('#previous').disabled = pages.length < 2;
    $('#page').textContent = `page ${pages.length}` + (bundle.total !== undefined ? ` (${bundle.total} in all)` : '');
    status(`${events.length} AuditEvents.`);
  } catch (e) {
    status(e.message, true);
  }
}

function searchPath(form) {
  const q = new URLSearchParams();
  const data = new FormData(form);
  for (const [k, v] of data.entries()) {
    if (!v) continue;
    if (k === 'nhs') q.append('patient:identifier', `${NHS}|${v.replace(/\s/g, '')}`);
    else if (k === 'from') q.append('date', 'ge' + v);
    else if (k === 'to') q.append('date', 'lt' + v);
    else q.append(k, v);
  }
  q.append('_count', '20');
  return '/AuditEvent?' + q.toString();
}

function signOut() {
  sessionStorage.removeItem(TOKEN);
  $('#app').hidden = true;
  $('#sign-out').hidden = true;
  $('#sign-in-panel').hidden = false;
}

function signedIn() {
  $('#sign-in-panel').hidden = true;
  $('#app').hidden = false;
  $('#sign-out').hidden = false;
  showReport();
}

document.addEventListener('DOMContentLoaded', () => {
  const today = new Date();
  const monthAgo = new Date(today.getTime() - 30 * 86400000);
  $('#end').value = today.toISOString().slice(0, 10);
  $('#start').value = monthAgo.toISOString().slice(0, 10);
  $('#sign-in').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN, $('#token').value.trim());
    $('#token').value = '';
    signedIn();
  });
  $('#sign-out').addEventListener('click', signOut);
  $('#period').addEventListener('submit', (e) => {
    e.preventDefault();
    showReport();
  });
  $('#search').addEventListener('submit', (e) => {
    e.preventDefault();
    runSearch(searchPath(e.target), true);
  });
  $('#next').addEventListener('click', () => runSearch($('#next').dataset.href, false));
  $('#previous').addEventListener('click', () => {
    pages.pop();
    const back = pages.pop();
    if (back) runSearch(back, false);
  });
  if (sessionStorage.getItem(TOKEN)) signedIn();
});
