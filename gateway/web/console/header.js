// The session's header: who is where, the links' state, delegation and close; and the
// banners above the panels (reconnecting, closed, refusals).

import { useState } from 'preact/hooks';
import { CONN_LABEL, SIDE, fmtTime, html, otherSide, useTicks, who } from './common.js';

export function Header({ client, s, delegation, delegated }) {
  const peerSide = otherSide(s.side);
  const peerClerks = s.presence[peerSide]?.clerks || [];
  const online = s.presence[peerSide] ? peerClerks.length > 0 : s.peer === 'online';
  const link = s.link || 'unknown';
  return html`
    <header class="top">
      <div class="brand">
        <span class="logo">屏</span>
        <div>
          <div class="title">屏对屏帮办工作台</div>
          <div class="ids">
            会话 <code id="session-id" data-testid="session-id" title=${s.session}>${s.session || '—'}</code>
            <span class="sep">·</span>
            办件 <code id="case-id" data-testid="case-id">${s.case || '尚未建件'}</code>
          </div>
        </div>
      </div>
      <div class="chips">
        <span id="my-side" data-testid="my-side" data-side=${s.side} class=${`chip side-${s.side}`}>
          我方 ${SIDE[s.side] || '—'} · ${s.name || s.clerk}
        </span>
        <span id="peer-presence" data-testid="peer-presence" data-state=${online ? 'online' : 'offline'}
              class=${`chip ${online ? 'ok' : 'off'}`}>
          <i class="dot"></i>${SIDE[peerSide] || '对方'} ${online ? '在线' : '离线'}${online && peerClerks.length ? `：${peerClerks.join('、')}` : ''}
        </span>
        <span id="link-state" data-testid="link-state" data-state=${link}
              class=${`chip ${link === 'up' ? 'ok' : link === 'down' ? 'bad' : 'off'}`}>
          <i class="dot"></i>跨域链路 ${link === 'up' ? '正常' : link === 'down' ? '中断' : '—'}
        </span>
        <span id="conn-state" data-testid="conn-state" data-state=${s.conn}
              class=${`chip ${s.conn === 'open' ? 'ok' : s.conn === 'connecting' ? 'off' : 'bad'}`}>
          <i class="dot"></i>本机连接 ${CONN_LABEL[s.conn]}
        </span>
      </div>
      <div class="actions">
        ${s.side === 'origin' && delegation && html`
          <button id="delegate-button" data-testid="delegate-button" class="btn"
                  disabled=${Boolean(delegated) || s.closed || s.conn !== 'open'}
                  onClick=${() => client.send('delegate', { token: delegation })}>
            ${delegated ? '已授权异地帮办' : '授权异地帮办'}
          </button>`}
        <${CloseControl} client=${client} s=${s} />
      </div>
    </header>`;
}

export function ReconnectBanner({ client, s }) {
  useTicks(s.conn === 'reconnecting');
  if (s.conn !== 'reconnecting') return null;
  const secs = s.retryAt ? Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000)) : 0;
  const unsent = s.pending.length;
  return html`
    <div id="reconnect-banner" data-testid="reconnect-banner" class="banner warn" role="status">
      连接中断，正在重连…
      <span class="muted">第 ${s.attempt} 次${secs ? `，${secs} 秒后重试` : ''}${unsent ? `；${unsent} 条消息待重发` : ''}</span>
      <button class="btn small" onClick=${() => { clearTimeout(client.timer); client.connect(); }}>立即重连</button>
    </div>`;
}

function CloseControl({ client, s }) {
  const [asking, setAsking] = useState(false);
  if (s.closed) return html`<span class="chip off" data-testid="closed-chip">会话已结束</span>`;
  if (!asking) {
    return html`<button id="close-button" data-testid="close-button" class="btn danger"
                        disabled=${s.conn !== 'open'} onClick=${() => setAsking(true)}>结束会话</button>`;
  }
  return html`
    <span class="confirm">
      结束后双方都不能再修改，确定？
      <button id="close-confirm" data-testid="close-confirm" class="btn danger small"
              onClick=${() => { client.send('close'); setAsking(false); }}>确定结束</button>
      <button data-testid="close-cancel" class="btn small" onClick=${() => setAsking(false)}>取消</button>
    </span>`;
}

export function ClosedBanner({ s }) {
  if (!s.closed) return null;
  const ev = s.closed;
  return html`
    <div id="closed-banner" data-testid="closed-banner" class="banner closed">
      <strong>会话已结束</strong>
      ${ev.name && html`<span>由 ${who(ev)} 于 ${fmtTime(ev.at)} 结束</span>`}
      <span>存证摘要${ev.n ? `（共 ${ev.n} 条）` : ''}：<code id="transcript-head" data-testid="transcript-head">${ev.head || '—'}</code></span>
    </div>`;
}

export function Notices({ client, s }) {
  if (!s.notices.length) return null;
  return html`
    <div class="notices" data-testid="notices">
      ${s.notices.map((n) => html`
        <div class="notice" key=${n.id} data-testid="notice" data-reason=${n.reason}>
          <span>${n.message}</span>
          <button class="x" aria-label="关闭" onClick=${() => client.dismiss(n.id)}>×</button>
        </div>`)}
    </div>`;
}
