/*
 * The installer's live view: log in, pick a camera, watch it over WebRTC (WHEP), switch the
 * outputs the site allows over the `actions` data channel.
 *
 * The password is kept in this page's memory only (as the Basic header), never stored. Every
 * request sends it explicitly with `credentials: 'omit'`, so the browser neither caches it nor
 * pops up its own login box on a 401.
 *
 * For automated tests: window.edgeLogin(user, pass), window.edgeWatch(cameraId),
 * window.edgeAction(obj), window.edgeStop() - each returns a Promise.
 */
(function () {
  'use strict';

  const GATHER_TIMEOUT_MS = 5000; // ICE gathering on a LAN is immediate; do not wait forever
  const CONNECT_TIMEOUT_MS = 20000;
  const ACTION_TIMEOUT_MS = 10000;
  const REFRESH_MS = 10000;
  const MAX_PENDING = 32; // actions waiting for their reply
  const PULSE_S = 3;

  const $ = (id) => document.getElementById(id);
  const state = {
    auth: null, // "Basic ..." while logged in
    site: null, // the last /api/site answer
    pc: null,
    dc: null,
    camera: null,
    location: null, // the WHEP session resource, for DELETE
    nextId: 0,
    pending: new Map(), // action id -> {resolve, reject, timer, label}
    timer: null,
  };

  // -- small helpers -----------------------------------------------------------------------
  function say(text, isError) {
    $('status').textContent = text;
    $('status').className = isError ? 'error' : '';
  }

  function basic(user, pass) {
    const bytes = new TextEncoder().encode(user + ':' + pass);
    let binary = '';
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    return 'Basic ' + btoa(binary);
  }

  function request(method, path, body, contentType) {
    const headers = { Authorization: state.auth };
    if (contentType) headers['Content-Type'] = contentType;
    return fetch(path, { method, headers, body, credentials: 'omit', cache: 'no-store' });
  }

  async function failure(res) {
    let text = '';
    try { text = (await res.text()).trim(); } catch (e) { /* no body */ }
    const err = new Error(text || res.status + ' ' + res.statusText);
    err.status = res.status;
    return err;
  }

  function cameraName(id) {
    const cams = (state.site && state.site.cameras) || [];
    const cam = cams.find((c) => c.id === id);
    return cam ? cam.name || cam.id : id;
  }

  // -- login and the camera list -----------------------------------------------------------
  async function login(user, pass) {
    state.auth = basic(user, pass);
    let res;
    try {
      res = await request('GET', '/api/site');
    } catch (e) {
      state.auth = null;
      throw reportError(new Error('the box does not answer: ' + e.message));
    }
    if (!res.ok) {
      state.auth = null;
      throw reportError(await failure(res));
    }
    showSite(await res.json());
    $('password').value = '';
    $('login').hidden = true;
    $('cameras').hidden = false;
    $('logout').hidden = false;
    say('Logged in as ' + user + '. Tap a camera.');
    clearInterval(state.timer);
    state.timer = setInterval(refresh, REFRESH_MS);
    return state.site;
  }

  async function refresh() {
    if (!state.auth) return;
    try {
      const res = await request('GET', '/api/site');
      if (res.status === 401) { logout('Your password changed: log in again.'); return; }
      if (res.ok) showSite(await res.json());
    } catch (e) { /* the next refresh tries again */ }
  }

  function logout(message) {
    stop();
    clearInterval(state.timer);
    state.auth = null;
    state.site = null;
    $('login').hidden = false;
    $('cameras').hidden = true;
    $('logout').hidden = true;
    say(message || 'Logged out.');
  }

  function showSite(site) {
    state.site = site;
    const name = typeof site.site === 'object' && site.site ? site.site.name || site.site.id : site.site;
    $('title').textContent = name ? 'Live view - ' + name : 'Live view';
    const list = $('camera-list');
    list.replaceChildren();
    for (const cam of site.cameras || []) {
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.camera = cam.id;
      const label = document.createElement('span');
      label.textContent = cam.name || cam.id;
      const info = document.createElement('span');
      info.className = 'state ' + (cam.up ? 'up' : 'down');
      info.textContent = (cam.up ? 'up' : 'down') + ' · ' + (cam.viewers || 0) + '/' + (cam.cap || '?') + ' viewers';
      button.append(label, info);
      button.addEventListener('click', () => watch(cam.id).catch(() => {}));
      const item = document.createElement('li');
      item.append(button);
      list.append(item);
    }
    if (!(site.cameras || []).length) list.textContent = 'No camera on this box.';
  }

  function reportError(err) {
    say(err.message, true);
    return err;
  }

  // -- watching (WHEP) ---------------------------------------------------------------------
  function gathered(pc) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') { resolve(); return; }
      const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(timer); resolve(); }
      });
    });
  }

  function connected(pc) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the video did not connect in time')), CONNECT_TIMEOUT_MS);
      const check = () => {
        if (pc.connectionState === 'connected') { clearTimeout(timer); resolve(); }
        if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
          clearTimeout(timer);
          reject(new Error('the video connection ' + pc.connectionState));
        }
      };
      pc.addEventListener('connectionstatechange', check);
      check();
    });
  }

  async function watch(cameraId) {
    if (!state.auth) throw reportError(new Error('log in first'));
    await stop();
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    state.camera = cameraId;
    const stillCurrent = () => {
      if (state.pc !== pc) throw new Error('replaced by another camera');
    };
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const dc = pc.createDataChannel('actions');
    state.dc = dc;
    dc.addEventListener('message', (e) => onReply(e.data));
    const stream = new MediaStream();
    pc.addEventListener('track', (e) => {
      stream.addTrack(e.track);
      $('video').srcObject = stream;
    });
    pc.addEventListener('connectionstatechange', () => {
      if (state.pc === pc && ['failed', 'disconnected'].includes(pc.connectionState)) {
        say('Video link ' + pc.connectionState + ': tap the camera again.', true);
      }
    });
    say('Connecting to ' + cameraName(cameraId) + '…');
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      stillCurrent();
      const path = '/whep/' + encodeURIComponent(cameraId);
      const res = await request('POST', path, pc.localDescription.sdp, 'application/sdp');
      if (res.status !== 201) throw await failure(res);
      const location = res.headers.get('Location');
      const answer = await res.text();
      if (state.pc !== pc) { // tapped elsewhere meanwhile: give the session back
        request('DELETE', location).catch(() => {});
        stillCurrent();
      }
      state.location = location;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      await connected(pc);
      stillCurrent();
    } catch (err) {
      if (state.pc === pc) {
        await stop();
        reportError(err);
      }
      throw err;
    }
    $('viewer').hidden = false;
    $('watching').textContent = cameraName(cameraId);
    showOutputs();
    say('Watching ' + cameraName(cameraId) + '.');
    return { camera: cameraId, location: state.location };
  }

  async function stop() {
    const pc = state.pc;
    const location = state.location;
    state.pc = null;
    state.dc = null;
    state.location = null;
    state.camera = null;
    for (const [id, p] of state.pending) {
      clearTimeout(p.timer);
      p.reject(new Error('session stopped before the reply to action ' + id));
    }
    state.pending.clear();
    if (pc) pc.close();
    $('video').srcObject = null;
    $('viewer').hidden = true;
    $('outputs').replaceChildren();
    if (!location || !state.auth) return false;
    try {
      const res = await request('DELETE', location);
      return res.ok;
    } catch (e) {
      return false; // the box ends idle sessions by itself
    }
  }

  // -- tele-actions on the data channel ----------------------------------------------------
  function channelOpen(dc) {
    if (dc.readyState === 'open') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the actions channel did not open')), CONNECT_TIMEOUT_MS);
      dc.addEventListener('open', () => { clearTimeout(timer); resolve(); });
      dc.addEventListener('close', () => { clearTimeout(timer); reject(new Error('the actions channel closed')); });
    });
  }

  async function action(obj) {
    const dc = state.dc;
    if (!dc) throw new Error('not watching a camera');
    if (state.pending.size >= MAX_PENDING) throw new Error('too many actions wait for a reply');
    const msg = Object.assign({}, obj);
    if (msg.id === undefined) msg.id = ++state.nextId;
    await channelOpen(dc);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        state.pending.delete(msg.id);
        reject(reportError(new Error('no reply to action ' + msg.id)));
      }, ACTION_TIMEOUT_MS);
      state.pending.set(msg.id, { resolve, reject, timer, label: describeAction(msg) });
      dc.send(JSON.stringify(msg));
    });
  }

  function describeAction(msg) {
    if (msg.do === 'output') return msg.output + ' ' + msg.op;
    return msg.do || 'action';
  }

  function onReply(data) {
    let reply;
    try { reply = JSON.parse(data); } catch (e) { return; }
    if (!reply || typeof reply !== 'object') return;
    const pending = state.pending.get(reply.id);
    const label = pending ? pending.label : 'action ' + reply.id;
    if (reply.ok) say(label + ': done');
    else say(label + ': refused: ' + (reply.reason || 'no reason given'), true);
    if (pending) {
      clearTimeout(pending.timer);
      state.pending.delete(reply.id);
      pending.resolve(reply);
    }
  }

  function showOutputs() {
    const box = $('outputs');
    box.replaceChildren();
    for (const out of (state.site && state.site.outputs) || []) {
      const id = typeof out === 'string' ? out : out.id;
      const row = document.createElement('div');
      row.className = 'output';
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = (typeof out === 'object' && out.name) || id;
      row.append(name);
      for (const [op, text] of [['on', 'On'], ['off', 'Off'], ['pulse', 'Pulse ' + PULSE_S + ' s']]) {
        const button = document.createElement('button');
        button.type = 'button';
        button.textContent = text;
        button.addEventListener('click', () => {
          const body = op === 'pulse' ? { do: 'output', output: id, op, seconds: PULSE_S } : { do: 'output', output: id, op };
          action(body).catch((e) => reportError(e));
        });
        row.append(button);
      }
      box.append(row);
    }
  }

  // -- wiring --------------------------------------------------------------------------------
  document.addEventListener('DOMContentLoaded', () => {
    $('login').addEventListener('submit', (e) => {
      e.preventDefault();
      login($('user').value.trim(), $('password').value).catch(() => {});
    });
    $('refresh').addEventListener('click', refresh);
    $('logout').addEventListener('click', () => logout());
    $('stop').addEventListener('click', () => { stop().then(refresh); say('Stopped.'); });
    $('sound').addEventListener('click', () => {
      const video = $('video');
      video.muted = !video.muted;
      $('sound').textContent = video.muted ? 'Sound on' : 'Sound off';
    });
  });

  // Leaving the page frees the viewer slot at once rather than after the idle timeout.
  window.addEventListener('pagehide', () => {
    if (state.location && state.auth) {
      fetch(state.location, {
        method: 'DELETE', headers: { Authorization: state.auth }, credentials: 'omit', keepalive: true,
      }).catch(() => {});
    }
  });

  window.edgeLogin = login;
  window.edgeWatch = watch;
  window.edgeAction = action;
  window.edgeStop = stop;
})();
