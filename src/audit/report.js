(function(){
const D = JSON.parse(document.getElementById('chains-data').textContent);
const chains = D.chains;
const $ = id => document.getElementById(id);
function el(tag, cls, text){ const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined && text !== null) e.textContent = String(text); return e; }
const verdictSel = $('f-verdict');
for (const v of D.verifiers) {
  for (const what of ['passed','failed']) { const o = el('option', null, v + ' ' + what); o.value = what + ':' + v; verdictSel.appendChild(o); }
}
const flagSel = $('f-flag');
for (const f of D.flag_kinds) { const o = el('option', null, f.code); o.value = f.code; flagSel.appendChild(o); }
const toolSel = $('f-tool');
for (const st of D.tool_statuses) { const o = el('option', null, 'a call ended ' + st); o.value = 'status:' + st; toolSel.appendChild(o); }
function calls(c){ return c.tool_calls || []; }
function toolOk(c, spec){
  if (!spec) return true;
  if (spec === 'with') return calls(c).length > 0;
  if (spec === 'none') return calls(c).length === 0;
  const st = spec.slice(7);
  return calls(c).some(t => t.status === st);
}
let shown = 200, current = null;
function verdictOk(c, spec){
  if (!spec) return true;
  const [what, name] = spec.split(':');
  if (name === 'all') {
    const applicable = Object.values(c.verifiers).some(v => v && v.reward !== null && v.reward !== undefined);
    return what === 'passed' ? c.passed : (applicable && !c.passed);
  }
  const v = c.verifiers[name];
  if (!v || v.reward === null || v.reward === undefined) return false;
  return what === 'passed' ? !!v.passed : !v.passed;
}
function matches(c){
  const smin = $('f-step-min').value, smax = $('f-step-max').value;
  if (smin !== '' && c.step < Number(smin)) return false;
  if (smax !== '' && c.step > Number(smax)) return false;
  const p = $('f-prompt').value.trim();
  if (p && String(c.prompt_id).indexOf(p) < 0) return false;
  if (!verdictOk(c, verdictSel.value)) return false;
  const fl = flagSel.value;
  if (fl && !c.flags.some(f => f.code === fl)) return false;
  if (!toolOk(c, toolSel.value)) return false;
  if ($('f-truncated').checked && !c.truncated) return false;
  const q = $('f-text').value;
  if (q) {
    const hay = [c.prompt, c.reasoning, c.answer, c.text || ''].join('\n');
    if ($('f-regex').checked) { let re; try { re = new RegExp(q, 'i'); } catch (e) { return false; } if (!re.test(hay)) return false; }
    else if (hay.toLowerCase().indexOf(q.toLowerCase()) < 0) return false;
  }
  return true;
}
function fmt(x){ return (x === null || x === undefined) ? '-' : (typeof x === 'number' ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : String(x)); }
function render(){
  const hits = chains.filter(matches);
  $('count').textContent = hits.length + ' of ' + chains.length + ' embedded chains match';
  const tb = $('rows'); tb.textContent = '';
  for (const c of hits.slice(0, shown)) {
    const tr = el('tr', 'row'); tr.dataset.idx = chains.indexOf(c);
    tr.appendChild(el('td', 'num', c.step)); tr.appendChild(el('td', null, c.prompt_id));
    tr.appendChild(el('td', 'num', c.group + '/' + c.sample)); tr.appendChild(el('td', 'num', fmt(c.reward)));
    tr.appendChild(el('td', c.passed ? 'ok' : 'bad', c.passed ? 'pass' : 'fail'));
    tr.appendChild(el('td', 'num', c.length + (c.truncated ? ' (cut)' : '')));
    const bad = calls(c).filter(t => t.status !== 'ok').length;
    tr.appendChild(el('td', bad ? 'num bad' : 'num', calls(c).length ? calls(c).length + (bad ? ' (' + bad + ' not ok)' : '') : ''));
    tr.appendChild(el('td', 'flagname', c.flags.map(f => f.code).join(' ')));
    tr.addEventListener('click', () => show(Number(tr.dataset.idx)));
    if (current === Number(tr.dataset.idx)) tr.classList.add('sel');
    tb.appendChild(tr);
  }
  $('more').style.display = hits.length > shown ? '' : 'none';
}
// One tool call where the chain made it: its program, its observation, the status as a badge,
// what the sandbox measured.
function callBox(t, k){
  const box = el('div', 'toolcall');
  const head = el('div'); head.appendChild(el('b', null, 'tool call ' + (k + 1) + ' '));
  head.appendChild(el('span', t.status === 'ok' ? 'badge tool-ok' : 'badge tool-bad', t.status));
  head.appendChild(el('span', null, ' · wall ' + fmt(t.wall_s) + ' s · memory ' + fmt(t.peak_memory_kb) + ' kB' +
    (t.truncated ? ' · observation truncated' : '')));
  box.appendChild(head);
  box.appendChild(el('pre', 'code', t.code || '(no code)'));
  box.appendChild(el('pre', 'output', t.observation || '(no output)'));
  return box;
}
// A text field, with its calls in place when the page knows where they are.
function field(d, c, cls, text, parts, placed){
  if (!parts) { d.appendChild(el('pre', cls, text || '(empty)')); return; }
  for (const p of parts) {
    if (typeof p === 'string') { if (p.trim() !== '') d.appendChild(el('pre', cls, p)); continue; }
    const t = calls(c)[p.call];
    if (t) { d.appendChild(callBox(t, p.call)); placed.add(p.call); }
  }
}
function show(i){
  current = i; const c = chains[i]; const d = $('detail'); d.textContent = '';
  d.appendChild(el('h3', null, 'step ' + c.step + ' · prompt ' + c.prompt_id + ' · group ' + c.group + ' · sample ' + c.sample));
  d.appendChild(el('div', null, 'reward ' + fmt(c.reward) + ' · advantage ' + fmt(c.advantage) + ' · kl ' + fmt(c.kl) +
    ' · length ' + c.length + (c.truncated ? ' (truncated)' : '') + ' · ' + (c.passed ? 'passed every verifier' : 'did not pass every verifier')));
  for (const f of c.flags) d.appendChild(el('div', 'flag', '⚑ ' + f.code + ': ' + f.why));
  for (const r of c.reasons) d.appendChild(el('div', 'bad', '✗ ' + r));
  d.appendChild(el('h4', null, 'prompt')); d.appendChild(el('pre', 'prompt', c.prompt));
  if (c.text !== undefined) { d.appendChild(el('h4', null, 'completion (no reasoning/answer split)')); d.appendChild(el('pre', 'answer', c.text)); }
  const placed = new Set();
  d.appendChild(el('h4', null, 'reasoning')); field(d, c, 'reasoning', c.reasoning, c.reasoning_parts, placed);
  d.appendChild(el('h4', null, 'answer')); field(d, c, 'answer', c.answer, c.answer_parts, placed);
  const rest = calls(c).map((t, k) => [t, k]).filter(([t, k]) => !placed.has(k));
  if (rest.length) {
    d.appendChild(el('h4', null, placed.size ? 'tool calls not found in the text' : 'tool calls'));
    for (const [t, k] of rest) d.appendChild(callBox(t, k));
  }
  d.appendChild(el('h4', null, 'verifiers'));
  for (const [name, v] of Object.entries(c.verifiers)) {
    const box = el('div', 'verifier');
    const applicable = v && v.reward !== null && v.reward !== undefined;
    const head = el('div'); head.appendChild(el('b', null, name + ' '));
    head.appendChild(el('span', applicable ? (v.passed ? 'ok' : 'bad') : 'na', applicable ? (v.passed ? 'passed' : 'failed') : 'not applicable'));
    head.appendChild(el('span', null, ' · reward ' + fmt(v ? v.reward : null))); box.appendChild(head);
    const det = (v && v.detail) || {};
    if (det.sandbox_status) box.appendChild(el('div', null, 'sandbox: ' + det.sandbox_status));
    const ff = det.first_failure;
    if (ff && typeof ff === 'object') {
      box.appendChild(el('div', 'bad', 'first failing test #' + fmt(ff.index) + ': ' + fmt(ff.status) + ' — ' + fmt(ff.why)));
      for (const k of ['input', 'expected', 'actual', 'stderr']) if (ff[k] !== undefined && ff[k] !== '') { box.appendChild(el('div', null, k)); box.appendChild(el('pre', 'json', ff[k])); }
    }
    const dd = el('details'); dd.appendChild(el('summary', null, 'detail')); dd.appendChild(el('pre', 'json', JSON.stringify(det, null, 2)));
    box.appendChild(dd); d.appendChild(box);
  }
  render();
}
for (const id of ['f-step-min','f-step-max','f-prompt','f-text']) $(id).addEventListener('input', () => { shown = 200; render(); });
for (const id of ['f-verdict','f-flag','f-tool','f-truncated','f-regex']) $(id).addEventListener('change', () => { shown = 200; render(); });
$('more').addEventListener('click', () => { shown += 200; render(); });
// A link can carry a search: report.html#search=TEXT opens with it and shows the first hit.
let h = location.hash || '';
try { h = decodeURIComponent(h); } catch (e) {}
if (h.indexOf('#search=') === 0) $('f-text').value = h.slice(8);
render();
const first = chains.findIndex(matches);
if (first >= 0) show(first);
if (h.indexOf('#search=') === 0) $('chains').scrollIntoView();
})();
