// Video between the two windows: WebRTC whose signalling rides the session's `rtc`
// messages (docs/sessions.md §4). The origin side offers once its camera is on and the
// other side is present; the remote side answers. A `bye` from the remote side means
// "drop what you have and offer again if your camera is on" (sent when the remote clerk
// turns the camera on, hangs up, or reloads); a `bye` from the origin ends the call.
// `data` is a JSON string: {call, sdp} or {call, candidate}, `call` naming one offer so
// late candidates of an older call are ignored.

const ICE_SERVERS = []; // loopback and one LAN need none; a deployment adds TURN here

export class VideoCall {
  constructor({ side, sendRtc }) {
    this.side = side;
    this.sendRtc = sendRtc;
    this.listeners = new Set();
    this.pc = null;
    this.call = null;
    this.queued = [];
    this.peerPresent = false;
    this.state = { on: false, starting: false, local: null, remote: null, rtc: 'idle', incoming: false, error: null };
    this.offerTimer = null;
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  set(patch) {
    this.state = { ...this.state, ...patch };
    for (const fn of this.listeners) fn(this.state);
  }

  async start() {
    if (this.state.on || this.state.starting) return;
    this.set({ starting: true, error: null });
    let local = null;
    try {
      local = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    } catch {
      try {
        local = await navigator.mediaDevices.getUserMedia({ video: true });
      } catch (err) {
        this.set({ error: `无法打开摄像头：${err.name || err}` });
      }
    }
    this.set({ on: true, starting: false, local, incoming: false });
    if (this.side === 'origin') {
      this.offerIfReady();
    } else if (this.pendingOffer) {
      const offer = this.pendingOffer;
      this.pendingOffer = null;
      await this.answer(offer);
    } else {
      this.sendRtc('bye', JSON.stringify({ ready: true }));
    }
  }

  stop() {
    this.sendRtc('bye', JSON.stringify({ call: this.call }));
    this.teardown();
    for (const track of this.state.local?.getTracks() || []) track.stop();
    this.pendingOffer = null;
    this.set({ on: false, local: null, incoming: false });
  }

  setPeerPresent(present) {
    // A blip of the other side's WebSocket leaves a working call alone: media does not
    // ride the socket. Coming back without a live call gets a fresh offer.
    const was = this.peerPresent;
    this.peerPresent = present;
    const live = this.pc && !['failed', 'closed'].includes(this.pc.connectionState);
    if (present && !was && !live) this.offerIfReady();
  }

  teardown() {
    clearTimeout(this.offerTimer);
    if (this.pc) {
      this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    this.pc = null;
    this.call = null;
    this.queued = [];
    this.set({ remote: null, rtc: 'idle' });
  }

  newPeer(call) {
    this.teardown();
    const pc = new RTCPeerConnection({ iceServers: ICE_SERVERS });
    this.pc = pc;
    this.call = call;
    const remote = new MediaStream();
    pc.ontrack = (e) => {
      remote.addTrack(e.track);
      this.set({ remote });
    };
    pc.onicecandidate = (e) => {
      if (e.candidate) this.sendRtc('candidate', JSON.stringify({ call, candidate: e.candidate.toJSON() }));
    };
    pc.onconnectionstatechange = () => {
      this.set({ rtc: pc.connectionState });
      if (pc.connectionState === 'failed' && this.side === 'origin') this.offerSoon(2000);
    };
    this.set({ rtc: pc.connectionState });
    return pc;
  }

  addLocal(pc) {
    const tracks = this.state.local?.getTracks() || [];
    for (const kind of ['audio', 'video']) {
      const track = tracks.find((t) => t.kind === kind);
      if (track) pc.addTrack(track, this.state.local);
      else if (this.side === 'origin') pc.addTransceiver(kind, { direction: 'recvonly' });
    }
  }

  offerSoon(ms) {
    clearTimeout(this.offerTimer);
    this.offerTimer = setTimeout(() => this.offerIfReady(), ms);
  }

  async offerIfReady() {
    if (this.side !== 'origin' || !this.state.on || !this.peerPresent) return;
    const call = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
    const pc = this.newPeer(call);
    this.addLocal(pc);
    await pc.setLocalDescription(await pc.createOffer());
    if (this.pc === pc) this.sendRtc('offer', JSON.stringify({ call, sdp: pc.localDescription.sdp }));
  }

  async answer({ call, sdp, candidates = [] }) {
    const pc = this.newPeer(call);
    this.queued = candidates; // trickled while the clerk had not yet accepted
    await pc.setRemoteDescription({ type: 'offer', sdp });
    this.addLocal(pc);
    await pc.setLocalDescription(await pc.createAnswer());
    if (this.pc !== pc) return;
    this.sendRtc('answer', JSON.stringify({ call, sdp: pc.localDescription.sdp }));
    await this.flush();
  }

  async flush() {
    const queued = this.queued;
    this.queued = [];
    for (const candidate of queued) await this.pc?.addIceCandidate(candidate).catch(() => {});
  }

  async handle(msg) {
    if (msg.side === this.side) return; // only the other side's browsers signal us
    let data = {};
    try { data = JSON.parse(msg.data || '{}'); } catch { return; }
    const handlers = {
      offer: async () => {
        if (this.side !== 'remote') return;
        if (this.state.on) await this.answer(data);
        else {
          this.pendingOffer = { ...data, candidates: [] };
          this.set({ incoming: true });
        }
      },
      answer: async () => {
        if (this.side !== 'origin' || !this.pc || data.call !== this.call) return;
        if (this.pc.signalingState !== 'have-local-offer') return; // another clerk answered first
        await this.pc.setRemoteDescription({ type: 'answer', sdp: data.sdp });
        await this.flush();
      },
      candidate: async () => {
        if (this.pendingOffer?.call === data.call && data.candidate) this.pendingOffer.candidates.push(data.candidate);
        if (!this.pc || data.call !== this.call || !data.candidate) return;
        if (this.pc.remoteDescription) await this.pc.addIceCandidate(data.candidate).catch(() => {});
        else this.queued.push(data.candidate);
      },
      bye: async () => {
        if (this.side === 'origin') {
          this.teardown();
          this.offerSoon(300);
        } else if (!data.call || data.call === this.call) {
          this.teardown();
          this.pendingOffer = null;
          this.set({ incoming: false });
        }
      },
    };
    const handler = handlers[msg.kind];
    if (handler) await handler().catch((err) => this.set({ error: `视频连接出错：${err.message || err}` }));
  }
}
