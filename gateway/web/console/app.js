// The clerk console of a 屏对屏 session (docs/sessions.md; issue #14 §1). Preact + htm,
// vendored under vendor/ (see vendor/README.md); no build step. The protocol lives in
// connection.js, the video call in video.js; the panels only draw state and turn clicks
// into messages. Test hooks (ids, data-testid) are listed in README.md.

import { render } from 'preact';
import { useEffect, useMemo } from 'preact/hooks';
import { SessionClient } from './connection.js';
import { VideoCall } from './video.js';
import { html, learnNames, otherSide, useStore, useTicks } from './common.js';
import { ClosedBanner, Header, Notices, ReconnectBanner } from './header.js';
import { ChatPanel } from './chat.js';
import { FormPanel, GuidancePanel } from './form.js';
import { IdentityPanel, MaterialsPanel, SignaturePanel } from './evidence.js';
import { VideoPanel } from './video-panel.js';

function delegationInForce(events) {
  let last = null;
  for (const ev of events) if (ev.type === 'delegate') last = ev;
  if (!last) return null;
  return !last.exp || last.exp * 1000 > Date.now() ? last : null;
}

function App({ client, video, delegation }) {
  const s = useStore(client);
  useMemo(() => learnNames(s.events), [s.events]);
  useTicks(true, 30000); // re-check a delegation's expiry now and then
  const delegated = delegationInForce(s.events);
  useEffect(() => client.onRtc((m) => video.handle(m)), []);
  const peerSide = otherSide(s.side);
  const peerOnline = s.presence[peerSide] ? (s.presence[peerSide].clerks || []).length > 0 : s.peer === 'online';
  useEffect(() => video.setPeerPresent(peerOnline), [peerOnline]);
  useEffect(() => { if (s.closed && video.state.on) video.stop(); }, [s.closed]);
  if (s.fatal || s.conn === 'refused') {
    return html`<div class="fatal" id="fatal" data-testid="fatal" data-reason=${s.fatal?.reason}>
      <h1>无法进入会话</h1><p>${s.fatal?.message || '登录凭证无效'}</p></div>`;
  }
  return html`
    <div class=${`shell ${s.closed ? 'is-closed' : ''}`} data-side=${s.side}>
      <${Header} client=${client} s=${s} delegation=${delegation} delegated=${delegated} />
      <${ReconnectBanner} client=${client} s=${s} />
      <${ClosedBanner} s=${s} />
      <${Notices} client=${client} s=${s} />
      <main class="grid">
        <div class="col">
          <${VideoPanel} video=${video} s=${s} />
          <${ChatPanel} client=${client} s=${s} />
        </div>
        <div class="col">
          <${FormPanel} client=${client} s=${s} delegation=${delegation} delegated=${delegated} />
          <${GuidancePanel} client=${client} s=${s} />
        </div>
        <div class="col">
          <${MaterialsPanel} client=${client} s=${s} />
          <${IdentityPanel} client=${client} s=${s} />
          <${SignaturePanel} client=${client} s=${s} />
        </div>
      </main>
    </div>`;
}

function main() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  const root = document.getElementById('app');
  root.textContent = ''; // the "正在载入…" placeholder: render() diffs, it does not clear
  if (!token) {
    render(html`<div class="fatal" id="fatal" data-testid="fatal" data-reason="TOKEN">
      <h1>无法进入会话</h1><p>地址中缺少登录凭证（token），请从业务系统重新进入。</p></div>`, root);
    return;
  }
  const wsUrl = new URL('../ws', location.href);
  wsUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  wsUrl.search = '';
  const client = new SessionClient({ token, wsUrl: wsUrl.href });
  const video = new VideoCall({ side: client.state.side, sendRtc: (kind, data) => client.sendRtc(kind, data) });
  render(html`<${App} client=${client} video=${video} delegation=${params.get('delegation')} />`, root);
  client.start();
  window.tongbanConsole = { client, video }; // for debugging in the browser's console
}

main();
