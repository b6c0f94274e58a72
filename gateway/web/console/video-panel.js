// 视频: the two <video> elements and the call's state (#rtc-state) over video.js.

import { useEffect, useRef } from 'preact/hooks';
import { RTC_LABEL, SIDE, html, otherSide, useStore } from './common.js';

function VideoEl({ stream, ...props }) {
  const ref = useRef(null);
  useEffect(() => {
    if (ref.current && ref.current.srcObject !== stream) ref.current.srcObject = stream;
  }, [stream]);
  return html`<video ref=${ref} autoplay playsinline ...${props}></video>`;
}

export function VideoPanel({ video, s }) {
  const v = useStore(video);
  const peerSide = SIDE[otherSide(s.side)];
  return html`
    <section class="panel video" aria-label="视频">
      <h2>视频
        <span id="rtc-state" data-testid="rtc-state" data-state=${v.rtc}
              class=${`tag ${v.rtc === 'connected' ? 'good' : ['failed', 'disconnected'].includes(v.rtc) ? 'bad' : ''}`}>
          ${RTC_LABEL[v.rtc] || v.rtc}</span>
      </h2>
      <div class="stage">
        <${VideoEl} id="video-remote" data-testid="video-remote" stream=${v.remote} />
        ${!v.remote && html`<div class="stage-empty">${v.incoming ? `${peerSide}正在发起视频` : v.on ? `等待${peerSide}…` : '视频未开启'}</div>`}
        <${VideoEl} id="video-local" data-testid="video-local" class="pip" muted stream=${v.local} />
      </div>
      <div class="button-row">
        ${v.on
          ? html`<button id="video-stop" data-testid="video-stop" class="btn small danger" onClick=${() => video.stop()}>挂断</button>`
          : html`<button id="video-start" data-testid="video-start" class=${`btn small ${v.incoming ? 'primary pulse' : ''}`}
                         disabled=${v.starting || Boolean(s.closed)} onClick=${() => video.start()}>
              ${v.incoming ? '接听视频' : '开启视频'}</button>`}
        ${v.error && html`<span class="bad-text small">${v.error}</span>`}
      </div>
    </section>`;
}
