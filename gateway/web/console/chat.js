// 聊天: chat lines and, muted between them, what else happened in the session.

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { SIDE, fileName, fmtTime, html, who } from './common.js';

function systemLine(ev) {
  const note = ev.note ? `：${ev.note}` : '';
  switch (ev.type) {
    case 'joined': return '进入会话';
    case 'left': return '离开会话';
    case 'material': return `共享了材料「${fileName(ev)}」`;
    case 'identity':
      return ev.action === 'request' ? `请求身份核验${note}` : `身份核验结果：${ev.result === 'match' ? '一致' : '不一致'}${note}`;
    case 'signature': return ev.action === 'request' ? '请求群众电子签名' : '提交了群众电子签名';
    case 'guidance': return `推送了事项指引 ${ev.item}`;
    case 'delegate': return '提交了群众的异地帮办授权';
    case 'closed': return '结束了会话';
    case 'refused':
      return ev.reason === 'NO_DELEGATION'
        ? `的表单修改${ev.field ? `（${ev.field}）` : ''}未生效：需要群众授权异地帮办`
        : `的操作被拒绝：${ev.message || ev.reason}`;
    default: return null;
  }
}

export function ChatPanel({ client, s }) {
  const [text, setText] = useState('');
  const list = useRef(null);
  const items = useMemo(() => s.events.filter((e) => e.type === 'chat' || systemLine(e)), [s.events]);
  const pending = s.pending.filter((m) => m.type === 'chat');
  useEffect(() => {
    const el = list.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [items.length, pending.length]);
  const submit = (e) => {
    e.preventDefault();
    const t = text.trim();
    if (!t) return;
    client.send('chat', { text: t.slice(0, 2000) });
    setText('');
  };
  return html`
    <section class="panel chat" aria-label="聊天">
      <h2>聊天</h2>
      <ol id="chat-list" data-testid="chat-list" class="timeline" ref=${list}>
        ${items.map((ev) => {
          const mine = ev.side === s.side && ev.clerk === s.clerk;
          if (ev.type !== 'chat') {
            return html`<li key=${ev.seq} class="sys" data-seq=${ev.seq} data-type=${ev.type}>
              <span>${who(ev)} ${systemLine(ev)}</span><time>${fmtTime(ev.at)}</time></li>`;
          }
          return html`
            <li key=${ev.seq} class=${`msg ${mine ? 'mine' : 'theirs'} side-${ev.side}`} data-testid="chat-message"
                data-seq=${ev.seq} data-side=${ev.side}>
              <div class="by"><b>${ev.name || ev.clerk}</b><span class=${`tag side-${ev.side}`}>${SIDE[ev.side]}</span><time>${fmtTime(ev.at)}</time></div>
              <div class="text">${ev.text}</div>
            </li>`;
        })}
        ${pending.map((m) => html`
          <li key=${m.cid} class="msg mine pending" data-testid="chat-pending">
            <div class="by"><b>${s.name}</b><span class="muted">发送中…</span></div>
            <div class="text">${m.text}</div>
          </li>`)}
      </ol>
      <form class="composer" onSubmit=${submit}>
        <textarea id="chat-input" data-testid="chat-input" rows="2" maxlength="2000" value=${text}
                  placeholder=${s.closed ? '会话已结束' : '输入消息，Enter 发送，Shift+Enter 换行'}
                  disabled=${Boolean(s.closed)} onInput=${(e) => setText(e.currentTarget.value)}
                  onKeyDown=${(e) => { if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) submit(e); }}></textarea>
        <button id="chat-send" data-testid="chat-send" class="btn primary" type="submit"
                disabled=${Boolean(s.closed) || !text.trim()}>发送</button>
      </form>
    </section>`;
}
