// 表单 and 智能帮办: the case form's fields with versions, conflicts and the delegation a
// remote edit needs (docs/sessions.md §3, §4 form conflicts), and the pushed checklist.

import { useEffect, useMemo, useState } from 'preact/hooks';
import { fmtTime, html, who } from './common.js';

function guidanceOf(events) {
  for (let i = events.length - 1; i >= 0; i -= 1) if (events[i].type === 'guidance') return events[i];
  return null;
}

function normaliseHints(hints) {
  // The catalogue's hints: a list of strings or {field, label, hint}, or a field → text map.
  if (!hints) return [];
  if (!Array.isArray(hints)) return Object.entries(hints).map(([field, hint]) => ({ field, hint: String(hint) }));
  return hints.map((x) => (typeof x === 'string' ? { hint: x } : { field: x.field, label: x.label, hint: x.hint ?? x.text ?? '' }));
}

function normaliseMaterials(list) {
  if (!Array.isArray(list)) return [];
  return list.map((x) => (typeof x === 'string' ? { name: x } : { name: x.name ?? x.title ?? x.code ?? '', required: x.required, note: x.note }));
}

function FormField({ client, s, field, cur, hint, last, conflict }) {
  const [draft, setDraft] = useState(null);
  const [base, setBase] = useState(0);
  const returned = s.returned[field];
  useEffect(() => {
    if (!returned) return;
    setDraft(returned.value);
    setBase(returned.base);
    client.takeReturned(field);
  }, [returned]);
  const pending = s.pending.filter((m) => m.type === 'form' && m.field === field).pop();
  const shown = draft ?? pending?.value ?? cur.value;
  const dirty = draft !== null && draft !== cur.value;
  const moved = draft !== null && cur.version !== base;
  const save = () => {
    if (!dirty) { setDraft(null); return; }
    client.send('form', { field, value: draft.slice(0, 4096), base });
    setDraft(null);
  };
  const latest = conflict && (cur.version >= conflict.version ? cur : conflict);
  return html`
    <div class=${`field ${conflict ? 'has-conflict' : ''}`} data-testid="form-row" data-field=${field}>
      <label>
        <span class="label">${hint?.label || field}</span>
        ${hint?.label && hint.label !== field && html`<span class="key">${field}</span>`}
        <span class="version" data-testid="form-version" data-field=${field}>v${cur.version}</span>
      </label>
      <div class="row">
        <input data-testid="form-field" data-field=${field} value=${shown} maxlength="4096"
               placeholder=${hint?.hint || ''} disabled=${Boolean(s.closed)}
               onInput=${(e) => { if (draft === null) setBase(cur.version); setDraft(e.currentTarget.value); }}
               onKeyDown=${(e) => { if (e.key === 'Enter' && !e.isComposing) save(); if (e.key === 'Escape') setDraft(null); }} />
        ${dirty && html`
          <button class="btn primary small" data-testid="form-save" data-field=${field} onClick=${save}>保存</button>
          <button class="btn small" data-testid="form-cancel" data-field=${field} onClick=${() => setDraft(null)}>撤销</button>`}
      </div>
      <div class="meta">
        ${hint?.hint && html`<span class="hint">提示：${hint.hint}</span>`}
        ${last && html`<span>最后修改：${who(last)} ${fmtTime(last.at)}</span>`}
        ${pending && html`<span class="muted" data-testid="form-pending">保存中…</span>`}
        ${moved && html`<span class="warn-text">对方已改为「${cur.value}」</span>`}
      </div>
      ${conflict && html`
        <div class="conflict" data-testid="form-conflict" data-field=${field}>
          <div class="conflict-title">修改冲突：保存前此字段已被修改，请选择保留哪个值</div>
          <div class="choice">
            <span class="which">我的值</span><span class="val" data-testid="conflict-mine">${conflict.mine || '（空）'}</span>
            <button class="btn small primary" data-testid="conflict-take-mine" data-field=${field}
                    onClick=${() => { client.send('form', { field, value: conflict.mine, base: latest.version }); client.resolveConflict(field); }}>采用我的</button>
          </div>
          <div class="choice">
            <span class="which">当前值 v${latest.version}</span><span class="val" data-testid="conflict-current">${latest.value || '（空）'}</span>
            <button class="btn small" data-testid="conflict-take-current" data-field=${field}
                    onClick=${() => client.resolveConflict(field)}>采用当前</button>
          </div>
        </div>`}
    </div>`;
}

function NewField({ client, s, onAdd }) {
  const [name, setName] = useState('');
  const [value, setValue] = useState('');
  const add = (e) => {
    e.preventDefault();
    const field = name.trim();
    if (!field) return;
    client.send('form', { field: field.slice(0, 64), value: value.slice(0, 4096), base: s.form[field]?.version ?? 0 });
    onAdd(field.slice(0, 64));
    setName('');
    setValue('');
  };
  return html`
    <form class="new-field" onSubmit=${add}>
      <input data-testid="form-new-name" id="form-new-name" placeholder="新字段名" maxlength="64" value=${name}
             disabled=${Boolean(s.closed)} onInput=${(e) => setName(e.currentTarget.value)} />
      <input data-testid="form-new-value" id="form-new-value" placeholder="值" maxlength="4096" value=${value}
             disabled=${Boolean(s.closed)} onInput=${(e) => setValue(e.currentTarget.value)} />
      <button class="btn small" data-testid="form-new-add" id="form-new-add" type="submit"
              disabled=${Boolean(s.closed) || !name.trim()}>添加字段</button>
    </form>`;
}

function DelegationLine({ client, s, delegation, delegated }) {
  const until = delegated?.exp ? `，有效至 ${fmtTime(delegated.exp)}` : '';
  const refused = s.noDelegation;
  return html`
    ${delegated
      ? html`<div class="banner ok" id="delegation-state" data-testid="delegation-state" data-state="granted">
          群众已授权异地帮办${until}：办理地可代为填写表单</div>`
      : html`<div class="banner info" id="delegation-state" data-testid="delegation-state" data-state="none">
          ${s.side === 'remote' ? '尚未获得群众的异地帮办授权：本方修改表单会被拒绝' : '未授权异地帮办：办理地不能修改表单'}
          ${s.side === 'origin' && delegation && html`
            <button class="btn small primary" data-testid="delegate-inline" disabled=${Boolean(s.closed) || s.conn !== 'open'}
                    onClick=${() => client.send('delegate', { token: delegation })}>授权异地帮办</button>`}
        </div>`}
    ${refused && !delegated && html`
      <div class="banner bad" id="no-delegation" data-testid="no-delegation">
        ${refused.mine ? '修改未生效' : '办理地的表单修改被拒绝'}${refused.field ? `（${refused.field}）` : ''}：需要群众授权异地帮办
        ${refused.message && html`<span class="muted">${refused.message}</span>`}
      </div>`}`;
}

export function FormPanel({ client, s, delegation, delegated }) {
  const guidance = useMemo(() => guidanceOf(s.events), [s.events]);
  const hints = useMemo(() => normaliseHints(guidance?.hints), [guidance]);
  const lastEdit = useMemo(() => {
    const out = {};
    for (const ev of s.events) if (ev.type === 'form') out[ev.field] = ev;
    return out;
  }, [s.events]);
  const hintByField = Object.fromEntries(hints.filter((x) => x.field).map((x) => [x.field, x]));
  const [added, setAdded] = useState([]); // fields this clerk added here, kept while unsaved
  const fields = [...new Set([...hints.filter((x) => x.field).map((x) => x.field), ...Object.keys(s.form),
    ...added, ...Object.keys(s.returned)])];
  return html`
    <section class="panel form" aria-label="表单">
      <h2>表单 <small>${fields.length} 项</small></h2>
      <${DelegationLine} client=${client} s=${s} delegation=${delegation} delegated=${delegated} />
      <div class="fields" id="form-fields" data-testid="form-fields">
        ${fields.length === 0 && html`<p class="empty">尚无字段。可由办理地推送事项指引，或在下方添加。</p>`}
        ${fields.map((f) => html`
          <${FormField} key=${f} client=${client} s=${s} field=${f} cur=${s.form[f] || { value: '', version: 0 }}
                        hint=${hintByField[f]} last=${lastEdit[f]} conflict=${s.conflicts[f]} />`)}
      </div>
      <${NewField} client=${client} s=${s} onAdd=${(f) => setAdded((a) => (a.includes(f) ? a : [...a, f]))} />
    </section>`;
}

// ---------------------------------------------------------------- guidance

export function GuidancePanel({ client, s }) {
  const [item, setItem] = useState('');
  const [ticked, setTicked] = useState({});
  const guidance = useMemo(() => guidanceOf(s.events), [s.events]);
  const materials = normaliseMaterials(guidance?.materials);
  const hints = normaliseHints(guidance?.hints);
  const push = (e) => {
    e.preventDefault();
    if (item.trim()) client.send('guidance', { item: item.trim() });
  };
  return html`
    <section class="panel guidance" aria-label="智能帮办">
      <h2>智能帮办 ${guidance && html`<small>事项 <code data-testid="guidance-current">${guidance.item}</code></small>`}</h2>
      ${s.side === 'remote'
        ? html`<form class="inline" onSubmit=${push}>
            <input id="guidance-item" data-testid="guidance-item" placeholder="事项编码，如 gjj-tq" value=${item}
                   maxlength="64" disabled=${Boolean(s.closed)} onInput=${(e) => setItem(e.currentTarget.value)} />
            <button id="guidance-push" data-testid="guidance-push" class="btn primary small" type="submit"
                    disabled=${Boolean(s.closed) || !item.trim()}>推送指引</button>
          </form>`
        : !guidance && html`<p class="empty">等待办理地推送事项指引</p>`}
      ${guidance && html`
        <p class="muted small">${who(guidance)} 于 ${fmtTime(guidance.at)} 推送</p>
        <h3>材料清单</h3>
        <ul class="checklist" data-testid="guidance-materials">
          ${materials.map((m, i) => html`
            <li key=${i}><label>
              <input type="checkbox" checked=${Boolean(ticked[m.name])}
                     onChange=${(e) => setTicked({ ...ticked, [m.name]: e.currentTarget.checked })} />
              <span>${m.name}</span>
              ${m.required !== undefined && html`<span class=${`tag ${m.required ? 'req' : 'opt'}`}>${m.required ? '必需' : '可选'}</span>`}
              ${m.note && html`<span class="muted">${m.note}</span>`}
            </label></li>`)}
        </ul>
        ${hints.length > 0 && html`
          <h3>填表提示</h3>
          <ul class="hints" data-testid="guidance-hints">
            ${hints.map((x, i) => html`<li key=${i}>${x.label || x.field ? html`<b>${x.label || x.field}</b>：` : ''}${x.hint}</li>`)}
          </ul>`}`}
    </section>`;
}
