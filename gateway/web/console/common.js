// What every panel of the console shares: the htm binding, Chinese labels, formatting,
// the store hook, and material bytes fetched with the join token (docs/sessions.md §5).

import { h } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';
import { authorisedFetch } from './connection.js';

export const html = htm.bind(h);

export const SIDE = { origin: '受理地', remote: '办理地' };
export const otherSide = (side) => (side === 'origin' ? 'remote' : 'origin');
export const MAX_MATERIAL = 10 * 1024 * 1024; // §5
export const CONN_LABEL = {
  connecting: '连接中…', open: '已连接', reconnecting: '重连中…', refused: '已拒绝', ended: '已断开',
};
export const RTC_LABEL = {
  idle: '未接通', new: '准备中', connecting: '接通中…', connected: '已接通',
  disconnected: '信号中断', failed: '连接失败', closed: '已挂断',
};
const SAFE_TYPES = { 'image/png': 'image', 'image/jpeg': 'image', 'image/gif': 'image', 'image/webp': 'image', 'application/pdf': 'pdf' };

export function fmtTime(at) {
  if (!at) return '';
  return new Date(at * 1000).toLocaleTimeString('zh-CN', { hour12: false });
}

export function fmtSize(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// A `material` event names the file `file_name`; its `name` is the clerk's, as in every
// event (docs/sessions.md §4). scripts/console_mock.py still puts the file's name in
// `name`: then the clerk is named from the clerk's other events.
export const fileName = (ev) => ev.file_name ?? ev.name ?? '';
const fileInName = (ev) => ev.type === 'material' && ev.file_name === undefined;
const clerkNames = new Map();
export function learnNames(events) {
  for (const ev of events) if (!fileInName(ev) && ev.name) clerkNames.set(`${ev.side}/${ev.clerk}`, ev.name);
}
const clerkName = (ev) => (fileInName(ev) ? clerkNames.get(`${ev.side}/${ev.clerk}`) || ev.clerk : ev.name || ev.clerk);
export const who = (ev) => `${clerkName(ev)}（${SIDE[ev.side] || ev.side}）`;

export function useStore(store) {
  const [state, setState] = useState(store.state);
  useEffect(() => store.subscribe(setState), [store]);
  return state;
}

export function useTicks(active, every = 1000) {
  // Re-renders now and then while active; the caller reads Date.now() itself.
  const [, setTick] = useState(0);
  useEffect(() => {
    if (!active) return undefined;
    const t = setInterval(() => setTick((n) => n + 1), every);
    return () => clearInterval(t);
  }, [active, every]);
}

// Material bytes, fetched once per hash with the bearer header (§5). The blob keeps a type
// only when it is one we show inline (images, PDF); anything else is a download, so a
// shared HTML file never runs as this page's origin.
const blobs = new Map();
export function materialBlob(client, sha256, mediaType) {
  if (!blobs.has(sha256)) {
    const url = new URL(`../${encodeURIComponent(client.state.session)}/materials/${sha256}`, location.href);
    const p = authorisedFetch(client, url).then(async (res) => {
      const kind = SAFE_TYPES[mediaType || res.headers.get('Content-Type')] || 'file';
      const type = kind === 'file' ? 'application/octet-stream' : (mediaType || res.headers.get('Content-Type'));
      return { url: URL.createObjectURL(new Blob([await res.arrayBuffer()], { type })), kind };
    });
    p.catch(() => blobs.delete(sha256));
    blobs.set(sha256, p);
  }
  return blobs.get(sha256);
}

export function useMaterial(client, sha256, mediaType) {
  const [got, setGot] = useState(null);
  useEffect(() => {
    let live = true;
    if (sha256) materialBlob(client, sha256, mediaType).then((m) => live && setGot(m), (e) => live && setGot({ error: e.message }));
    return () => { live = false; };
  }, [sha256]);
  return got;
}

export async function uploadMaterial(client, blob, name) {
  if (blob.size > MAX_MATERIAL) throw new Error(`「${name}」超过 10 MB，无法上传`);
  const url = new URL(`../${encodeURIComponent(client.state.session)}/materials`, location.href);
  const res = await authorisedFetch(client, url, {
    method: 'POST', body: blob, headers: { 'Content-Type': blob.type || 'application/octet-stream' },
  });
  return res.json(); // {sha256, size, media_type}
}
