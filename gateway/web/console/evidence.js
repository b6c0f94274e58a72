// 材料, 身份核验, 电子签名: what the session gathers for the case.

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { fileName, fmtSize, fmtTime, html, uploadMaterial, useMaterial, who } from './common.js';

function MaterialViewer({ client, material, onClose }) {
  const got = useMaterial(client, material.sha256, material.media_type);
  return html`
    <div class="viewer-backdrop" onClick=${onClose}>
      <div class="viewer" data-testid="material-viewer" role="dialog" aria-label=${fileName(material)}
           onClick=${(e) => e.stopPropagation()}>
        <div class="viewer-head">
          <b>${fileName(material)}</b><span class="muted">${fmtSize(material.size)} · ${material.sha256.slice(0, 12)}</span>
          <button class="x" aria-label="关闭" data-testid="material-viewer-close" onClick=${onClose}>×</button>
        </div>
        <div class="viewer-body">
          ${!got && html`<p class="muted">正在读取…</p>`}
          ${got?.error && html`<p class="bad-text">无法读取：${got.error}</p>`}
          ${got?.kind === 'image' && html`<img src=${got.url} alt=${fileName(material)} />`}
          ${got?.kind === 'pdf' && html`<iframe src=${got.url} title=${fileName(material)}></iframe>`}
          ${got?.kind === 'file' && html`<p>此类文件不在此预览。</p>`}
        </div>
        ${got?.url && html`<div class="viewer-foot"><a class="btn small" href=${got.url} download=${fileName(material)}
                                                      data-testid="material-download">下载</a></div>`}
      </div>
    </div>`;
}

export function MaterialsPanel({ client, s }) {
  const [uploads, setUploads] = useState([]);
  const [open, setOpen] = useState(null);
  const shared = useMemo(() => s.events.filter((e) => e.type === 'material'), [s.events]);
  const pick = async (e) => {
    const files = [...e.currentTarget.files];
    e.currentTarget.value = '';
    for (const file of files) {
      const id = `${file.name}-${Date.now()}`;
      setUploads((u) => [...u, { id, name: file.name, state: '上传中…' }]);
      try {
        const got = await uploadMaterial(client, file, file.name);
        client.send('material', { sha256: got.sha256, name: file.name.slice(0, 200), size: got.size, media_type: got.media_type });
        setUploads((u) => u.filter((x) => x.id !== id));
      } catch (err) {
        setUploads((u) => u.map((x) => (x.id === id ? { ...x, state: `失败：${err.message}`, failed: true } : x)));
      }
    }
  };
  const waiting = s.pending.filter((m) => m.type === 'material');
  return html`
    <section class="panel materials" aria-label="材料">
      <h2>材料 <small>${shared.length} 份</small></h2>
      <label class=${`btn upload ${s.closed ? 'disabled' : ''}`}>
        上传材料
        <input type="file" id="material-input" data-testid="material-input" multiple disabled=${Boolean(s.closed)} onChange=${pick} />
      </label>
      <span class="muted small">单个文件不超过 10 MB</span>
      <ul class="uploads">
        ${uploads.map((u) => html`<li key=${u.id} class=${u.failed ? 'bad-text' : 'muted'}>${u.name}：${u.state}
          ${u.failed && html`<button class="x" onClick=${() => setUploads((l) => l.filter((x) => x.id !== u.id))}>×</button>`}</li>`)}
        ${waiting.map((m) => html`<li key=${m.cid} class="muted">${m.name}：共享中…</li>`)}
      </ul>
      <ul id="material-list" data-testid="material-list" class="files">
        ${shared.length === 0 && html`<li class="empty">尚无共享材料</li>`}
        ${shared.map((m) => html`
          <li key=${m.seq} data-testid="material-item" data-sha256=${m.sha256}>
            <div class="file-main">
              <b class="file-name">${fileName(m)}</b>
              <span class="muted small">${fmtSize(m.size)} · <code title=${m.sha256}>${m.sha256.slice(0, 12)}</code></span>
              <span class="muted small">${who(m)} · ${fmtTime(m.at)}</span>
            </div>
            <button class="btn small" data-testid="material-open" data-sha256=${m.sha256} onClick=${() => setOpen(m)}>打开</button>
          </li>`)}
      </ul>
      ${open && html`<${MaterialViewer} client=${client} material=${open} onClose=${() => setOpen(null)} />`}
    </section>`;
}

export function IdentityPanel({ client, s }) {
  const [note, setNote] = useState('');
  const list = useMemo(() => s.events.filter((e) => e.type === 'identity'), [s.events]);
  const latest = [...list].reverse().find((e) => e.action === 'result');
  const asked = list.length > 0 && list[list.length - 1].action === 'request';
  const send = (members) => { client.send('identity', { ...members, note: note.trim() }); setNote(''); };
  return html`
    <section class="panel identity" aria-label="身份核验">
      <h2>身份核验
        ${latest && html`<span class=${`tag ${latest.result === 'match' ? 'good' : 'bad'}`} id="identity-latest"
                               data-testid="identity-latest" data-result=${latest.result}>
          ${latest.result === 'match' ? '一致' : '不一致'}</span>`}
      </h2>
      ${asked && html`<div class="banner info small">${who(list[list.length - 1])} 请求核验群众身份</div>`}
      <input id="identity-note" data-testid="identity-note" placeholder="备注（可选）" maxlength="500" value=${note}
             disabled=${Boolean(s.closed)} onInput=${(e) => setNote(e.currentTarget.value)} />
      <div class="button-row">
        <button id="identity-request" data-testid="identity-request" class="btn small" disabled=${Boolean(s.closed)}
                onClick=${() => send({ action: 'request' })}>请求核验</button>
        <button id="identity-match" data-testid="identity-match" class="btn small good" disabled=${Boolean(s.closed)}
                onClick=${() => send({ action: 'result', result: 'match' })}>核验一致</button>
        <button id="identity-no-match" data-testid="identity-no-match" class="btn small danger" disabled=${Boolean(s.closed)}
                onClick=${() => send({ action: 'result', result: 'no_match' })}>核验不一致</button>
      </div>
      <ul class="log" id="identity-list" data-testid="identity-list">
        ${list.map((ev) => html`<li key=${ev.seq} data-action=${ev.action} data-result=${ev.result || ''}>
          <time>${fmtTime(ev.at)}</time> ${who(ev)}
          ${ev.action === 'request' ? ' 请求核验' : html` 结果：<b class=${ev.result === 'match' ? 'good-text' : 'bad-text'}>${ev.result === 'match' ? '一致' : '不一致'}</b>`}
          ${ev.note && html`<span class="muted">（${ev.note}）</span>`}</li>`)}
      </ul>
    </section>`;
}

function SignaturePad({ client, s }) {
  const canvas = useRef(null);
  const [inked, setInked] = useState(false);
  const [busy, setBusy] = useState(null);
  useEffect(() => {
    const c = canvas.current;
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, c.width, c.height);
    let drawing = false;
    const at = (e) => {
      const r = c.getBoundingClientRect();
      return [(e.clientX - r.left) * (c.width / r.width), (e.clientY - r.top) * (c.height / r.height)];
    };
    const down = (e) => {
      drawing = true;
      c.setPointerCapture(e.pointerId);
      ctx.lineWidth = 3; ctx.lineCap = 'round'; ctx.lineJoin = 'round'; ctx.strokeStyle = '#111';
      ctx.beginPath(); ctx.moveTo(...at(e));
    };
    const move = (e) => {
      if (!drawing) return;
      ctx.lineTo(...at(e)); ctx.stroke();
      setInked(true);
    };
    const up = () => { drawing = false; };
    c.addEventListener('pointerdown', down);
    c.addEventListener('pointermove', move);
    c.addEventListener('pointerup', up);
    c.addEventListener('pointercancel', up);
    return () => {
      c.removeEventListener('pointerdown', down);
      c.removeEventListener('pointermove', move);
      c.removeEventListener('pointerup', up);
      c.removeEventListener('pointercancel', up);
    };
  }, []);
  const clear = () => {
    const c = canvas.current;
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, c.width, c.height);
    setInked(false);
  };
  const submit = async () => {
    setBusy('上传中…');
    try {
      const png = await new Promise((ok) => canvas.current.toBlob(ok, 'image/png'));
      const got = await uploadMaterial(client, png, '群众签名.png');
      client.send('signature', { action: 'result', sha256: got.sha256 });
      clear();
      setBusy(null);
    } catch (err) {
      setBusy(`失败：${err.message}`);
    }
  };
  return html`
    <div class="pad">
      <div class="pad-hint">请群众在下方框内签名</div>
      <canvas ref=${canvas} id="signature-canvas" data-testid="signature-canvas" width="560" height="200"></canvas>
      <div class="button-row">
        <button id="signature-clear" data-testid="signature-clear" class="btn small" onClick=${clear} disabled=${!inked}>清除</button>
        <button id="signature-submit" data-testid="signature-submit" class="btn small primary"
                disabled=${!inked || Boolean(busy && busy.endsWith('…')) || Boolean(s.closed)} onClick=${submit}>提交签名</button>
        ${busy && html`<span class="muted small">${busy}</span>`}
      </div>
    </div>`;
}

function SignatureImage({ client, ev }) {
  const got = useMaterial(client, ev.sha256, 'image/png');
  return html`
    <figure class="sig" data-testid="signature-result" data-sha256=${ev.sha256}>
      ${got?.url ? html`<img data-testid="signature-image" src=${got.url} alt="群众签名" />` : html`<div class="sig-wait muted">${got?.error ? `无法读取：${got.error}` : '读取中…'}</div>`}
      <figcaption>${who(ev)} ${fmtTime(ev.at)} · SHA-256 <code title=${ev.sha256}>${ev.sha256.slice(0, 16)}…</code></figcaption>
    </figure>`;
}

export function SignaturePanel({ client, s }) {
  const list = useMemo(() => s.events.filter((e) => e.type === 'signature'), [s.events]);
  const results = list.filter((e) => e.action === 'result');
  const last = list[list.length - 1];
  const open = last && last.action === 'request';
  return html`
    <section class="panel signature" aria-label="电子签名">
      <h2>电子签名 ${results.length > 0 && html`<small>${results.length} 份</small>`}</h2>
      ${open && html`<div class="banner info small" data-testid="signature-requested">${who(last)} 于 ${fmtTime(last.at)} 请求群众签名</div>`}
      <button id="signature-request" data-testid="signature-request" class="btn small" disabled=${Boolean(s.closed)}
              onClick=${() => client.send('signature', { action: 'request' })}>请求签名</button>
      ${s.side === 'origin' && !s.closed && html`<${SignaturePad} client=${client} s=${s} />`}
      ${s.side === 'remote' && results.length === 0 && html`<p class="empty">签名在受理地窗口由群众当面书写</p>`}
      <div class="sigs" id="signature-list" data-testid="signature-list">
        ${results.map((ev) => html`<${SignatureImage} key=${ev.seq} client=${client} ev=${ev} />`)}
      </div>
    </section>`;
}
