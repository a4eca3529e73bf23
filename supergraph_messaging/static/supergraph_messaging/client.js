// supergraph_messaging browser client: a dependency-free ES module for /subscribe.
//
//   import { SubscriptionClient } from "/static/supergraph_messaging/client.js";
//   const client = new SubscriptionClient("wss://example.com/subscribe", { init: { token } });
//   const stop = client.subscribe("CameraEvents", { filters: { camera_id__in: [1, 2] } },
//                                 (data, frame) => console.log(data), { onSubscribed, onGap, onError });
//   stop();            // unsubscribe
//   client.close();    // for good
//
// Why a client at all: the protocol is small, but the parts people get wrong are
// the ones that matter in production. The connection comes back by itself with
// jittered backoff (so a restarted server is not hit by every browser at once),
// every subscription is sent again after a reconnect, with `since` positions
// when the server sent them (durable delivery replays what was missed;
// otherwise a `gap` says events may be missing), a subscription refused as
// `unavailable` (through a gateway: its service is down) is asked again with the
// same backoff until it is granted (onError(errors, true) says it is retrying),
// and pings are answered (the server closes a client that stops answering).

const CLOSED_FOR_GOOD = new Set([4400, 4401, 4403, 4409, 4429]); // protocol errors: retrying repeats them

export class SubscriptionClient {
  constructor(url, { init = {}, minDelay = 250, maxDelay = 10000, onStatus = () => {} } = {}) {
    this.url = url;
    this.init = init;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.onStatus = onStatus;
    this.subs = new Map(); // id -> {entity, filters, fields, onEvent, onGap, onError, since}
    this.nextId = 1;
    this.attempt = 0;
    this.closed = false;
    this.acked = false;
    this.socket = null;
    this.timer = null;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const socket = new WebSocket(this.url);
    this.socket = socket;
    this.acked = false;
    this.onStatus("connecting");
    socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init", payload: this.init }));
    socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.acked = false;
      if (this.closed) return;
      if (CLOSED_FOR_GOOD.has(event.code)) {
        this.onStatus("refused", event.code);
        for (const sub of this.subs.values()) sub.onError?.([{ code: `closed_${event.code}`, message: event.reason }]);
        return;
      }
      this.onStatus("disconnected", event.code);
      this.reconnectLater();
    };
  }

  reconnectLater() {
    // Full jitter: a uniformly random wait up to an exponentially growing cap.
    const cap = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), Math.random() * cap);
  }

  receive(frame) {
    const sub = frame.id !== undefined ? this.subs.get(frame.id) : undefined;
    switch (frame.type) {
      case "connection_ack":
        this.acked = true;
        this.attempt = 0;
        this.onStatus("connected", frame.payload);
        for (const [id, s] of this.subs) {
          clearTimeout(s.timer); // a new connection: every subscription is sent once, now
          this.sendSubscribe(id, s);
        }
        break;
      case "ping":
        this.send({ type: "pong", payload: frame.payload });
        break;
      case "next":
        if (!sub) break;
        if (frame.payload.offset !== undefined) {
          // The largest offset per channel and epoch: a replayed or reordered frame never moves it back.
          const held = sub.since[frame.payload.channel];
          if (!held || held.epoch !== frame.payload.epoch || held.offset < frame.payload.offset) {
            sub.since[frame.payload.channel] = { offset: frame.payload.offset, epoch: frame.payload.epoch };
          }
        }
        sub.onEvent(frame.payload.data, frame.payload);
        break;
      case "subscribed":
        if (!sub) break;
        sub.waiting = false;
        sub.attempt = 0;
        // Durable delivery: a position for every channel of the subscription, also those with no
        // event yet, so that a resume fills them all (the frames that follow move them on).
        if (frame.payload.positions) sub.since = { ...frame.payload.positions };
        sub.onSubscribed?.(frame.payload);
        if (frame.payload.recovered === false) sub.onGap?.("unrecoverable");
        break;
      case "gap":
        sub?.onGap?.(frame.payload.reason);
        break;
      case "error":
        if (sub) {
          sub.waiting = false;
          // "unavailable" (Redis, or through a gateway the owning service, is away) is retried with
          // the same jittered backoff; any other error ends the subscription.
          const retrying = Array.isArray(frame.payload) && frame.payload.length > 0 &&
            frame.payload.every((e) => e.code === "unavailable");
          if (retrying) this.retryLater(frame.id, sub);
          else this.subs.delete(frame.id);
          sub.onError?.(frame.payload, retrying);
        }
        break;
      case "complete":
        this.subs.delete(frame.id);
        break;
      default:
        break;
    }
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  retryLater(id, sub) {
    const cap = Math.min(this.maxDelay, this.minDelay * 2 ** sub.attempt);
    sub.attempt += 1;
    sub.timer = setTimeout(() => {
      if (this.subs.get(id) === sub && this.acked && !sub.waiting) this.sendSubscribe(id, sub);
    }, Math.random() * cap);
  }

  sendSubscribe(id, sub) {
    sub.waiting = true;
    const payload = { entity: sub.entity };
    if (sub.filters) payload.filters = sub.filters;
    if (sub.fields) payload.fields = sub.fields;
    if (Object.keys(sub.since).length) payload.since = sub.since;
    this.send({ id, type: "subscribe", payload });
  }

  subscribe(entity, { filters, fields } = {}, onEvent, { onSubscribed, onGap, onError } = {}) {
    const id = String(this.nextId++);
    const sub = { entity, filters, fields, onEvent, onSubscribed, onGap, onError, since: {}, attempt: 0,
                  timer: null, waiting: false };
    this.subs.set(id, sub);
    if (this.acked) this.sendSubscribe(id, sub);
    return () => {
      clearTimeout(sub.timer);
      if (this.subs.delete(id)) this.send({ id, type: "complete" });
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
    this.socket = null;
  }
}
