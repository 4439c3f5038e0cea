/*
 * tether.js: the browser client of tether (documented in docs/browser-client.md).
 *
 * Plain modern JavaScript, no build step, no dependencies. Load it with
 *   <script src="{% static 'tether/tether.js' %}"></script>
 * and open a connection with
 *   const socket = Tether.connect("/ws/chat/lobby/");
 *
 * A Tether.Socket keeps one WebSocket open for as long as the page wants it:
 * - it resolves a relative path against the page's address, choosing ws: or wss: by the page's scheme;
 * - it reconnects after a drop, waiting a random time between 0 and an exponentially growing cap (full jitter),
 *   and resets the cap once a connection has stayed open for `stableAfter` milliseconds;
 * - it queues what is sent while disconnected (at most `maxQueue` items) and sends it, in order, on reconnection;
 * - it parses JSON frames for you (`event.json`) and sends JSON with `sendJson()`;
 * - it fires `open`, `close`, `message`, `reconnecting` and `drop` events, and tells its `state`:
 *   "connecting", "open", "reconnecting" or "closed";
 * - `close()` closes the connection and stops reconnecting;
 * - it drops the connection as soon as the browser reports that it went offline (a socket whose network is gone can
 *   stay "open" for minutes), and tries again as soon as it is back online.
 *
 * On top of that it speaks tether's stream protocol (tether.streams.consumer.StreamConsumer, docs/streams.md):
 * - `subscribe(stream, handler, options)` hands each message of a stream to `handler` exactly once, in order of
 *   offset: it resubscribes after every reconnection from the last offset it handed, drops what it has seen already,
 *   and resubscribes at once when it notices a gap;
 * - with `presence: true`, a subscription keeps the stream's member list up to date from a snapshot and its diffs;
 * - `request(method, params)` returns a Promise of the server's reply;
 * - with the `resume` option, the last position of each stream and the unsent queue live in sessionStorage, so a
 *   reload of the page carries on where it left off.
 */
(function (global) {
  "use strict";

  /** The values of `socket.state`. */
  const STATES = Object.freeze({
    CONNECTING: "connecting", // the first attempt, not open yet
    OPEN: "open", // connected: sends go out at once
    RECONNECTING: "reconnecting", // dropped: waiting for, or making, another attempt
    CLOSED: "closed", // close() was called, or shouldReconnect() said no: nothing more happens
  });

  /** Defaults of the options of `new Tether.Socket(path, options)`; every one may be overridden. */
  const DEFAULTS = Object.freeze({
    /** Milliseconds: the cap of the wait before the first reconnection attempt; it doubles with each attempt. */
    initialDelay: 500,
    /** Milliseconds: the cap never grows past this. */
    maxDelay: 30000,
    /** Milliseconds a connection must stay open before the next drop starts again from `initialDelay`. */
    stableAfter: 5000,
    /** Milliseconds an attempt may take to open before it is abandoned (and counted as a failed attempt). */
    connectTimeout: 10000,
    /** How many sends are kept while disconnected; when full, send() returns false and fires `drop`. */
    maxQueue: 100,
    /** WebSocket subprotocols to offer, as for `new WebSocket(url, protocols)`. */
    protocols: undefined,
    /** How binary frames arrive: "arraybuffer" or "blob". */
    binaryType: "arraybuffer",
    /**
     * Called with the CloseEvent of each drop; return false to stop reconnecting. By default a normal close (1000)
     * and a close because the login ended (4401: reconnecting would only bring back a logged-out socket; reload the
     * page or log in again) end the socket; every other close, 1012 (server restart) included, reconnects.
     */
    shouldReconnect: (event) => event.code !== 1000 && event.code !== 4401,
    /** The source of randomness for the jitter (a function returning a number in [0, 1)). */
    random: Math.random,
    /** Milliseconds `request()` waits for its reply by default before it rejects with code "timeout". */
    requestTimeout: 10000,
    /**
     * A name (a non-empty string) to keep stream positions and the unsent queue in sessionStorage under, so that a
     * reload resumes; null keeps them in memory only. Two sockets of one page need two names.
     */
    resume: null,
  });

  const NUMBER_OPTIONS = ["initialDelay", "maxDelay", "stableAfter", "connectTimeout", "maxQueue", "requestTimeout"];

  function checkOptions(options) {
    const merged = Object.assign({}, DEFAULTS, options || {});
    for (const name of Object.keys(options || {})) {
      if (!(name in DEFAULTS)) {
        throw new TypeError(`tether: unknown option "${name}"; the options are ${Object.keys(DEFAULTS).join(", ")}.`);
      }
    }
    for (const name of NUMBER_OPTIONS) {
      const value = merged[name];
      if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
        throw new RangeError(`tether: option "${name}" must be a finite number >= 0, not ${String(value)}.`);
      }
    }
    if (merged.initialDelay <= 0 || merged.maxDelay < merged.initialDelay) {
      throw new RangeError("tether: options need 0 < initialDelay <= maxDelay.");
    }
    if (!Number.isInteger(merged.maxQueue)) {
      throw new RangeError(`tether: option "maxQueue" must be an integer, not ${merged.maxQueue}.`);
    }
    if (typeof merged.shouldReconnect !== "function" || typeof merged.random !== "function") {
      throw new TypeError('tether: options "shouldReconnect" and "random" must be functions.');
    }
    if (merged.binaryType !== "arraybuffer" && merged.binaryType !== "blob") {
      throw new TypeError('tether: option "binaryType" must be "arraybuffer" or "blob".');
    }
    if (merged.resume !== null && (typeof merged.resume !== "string" || merged.resume === "")) {
      throw new TypeError('tether: option "resume" must be a non-empty string (a sessionStorage key) or null.');
    }
    return merged;
  }

  /**
   * The WebSocket URL for `path`: a relative path is resolved against `base` (the page's address by default),
   * and http:/https: become ws:/wss:. Throws a TypeError for a URL that cannot be a WebSocket's.
   */
  function resolveUrl(path, base) {
    const against = base !== undefined ? base : global.location && global.location.href;
    let url;
    try {
      url = new URL(String(path), against);
    } catch (error) {
      throw new TypeError(`tether: cannot make a WebSocket URL of "${path}" (relative to ${against}).`);
    }
    if (url.protocol === "http:") url.protocol = "ws:";
    else if (url.protocol === "https:") url.protocol = "wss:";
    else if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      throw new TypeError(`tether: a WebSocket URL needs ws:, wss:, http: or https:, not ${url.protocol}`);
    }
    url.hash = "";
    return url.href;
  }

  /**
   * How long to wait before reconnection attempt number `attempt` (1 for the first), in milliseconds:
   * a random time between 0 and min(maxDelay, initialDelay * 2 ** (attempt - 1)) ("full jitter"), so that
   * many pages dropped at once by a server restart come back spread out, not all together.
   */
  function backoffDelay(attempt, options, random) {
    const settings = Object.assign({}, DEFAULTS, options || {});
    const draw = random || settings.random;
    const cap = Math.min(settings.maxDelay, settings.initialDelay * 2 ** Math.max(0, attempt - 1));
    return Math.floor(draw() * cap);
  }

  function makeEvent(type, fields) {
    const event = new Event(type);
    for (const [name, value] of Object.entries(fields)) {
      Object.defineProperty(event, name, { value, enumerable: true });
    }
    return event;
  }

  function makeMessageEvent(data) {
    const event = new Event("message");
    let parsed;
    let tried = false;
    Object.defineProperty(event, "data", { value: data, enumerable: true });
    // Parsed on first use: the JSON value of a text frame, or undefined for binary or non-JSON frames.
    Object.defineProperty(event, "json", {
      enumerable: true,
      get() {
        if (!tried) {
          tried = true;
          if (typeof data === "string") {
            try {
              parsed = JSON.parse(data);
            } catch (error) {
              parsed = undefined;
            }
          }
        }
        return parsed;
      },
    });
    return event;
  }

  /** Report an error thrown by the page's code (a handler, a callback) as a listener's would be, and carry on. */
  function report(error) {
    (typeof global.reportError === "function" ? global.reportError : console.error)(error);
  }

  function isPosition(value) {
    return (
      value !== null &&
      typeof value === "object" &&
      typeof value.epoch === "string" &&
      Number.isSafeInteger(value.offset) &&
      value.offset >= 0
    );
  }

  /** An Error for a failed request or subscription, with the protocol's error `code`. */
  function protocolError(code, message) {
    const error = new Error(`tether: ${message}`);
    error.code = code;
    return error;
  }

  /**
   * What a socket with the `resume` option keeps in sessionStorage under "tether:<resume>": the last position of each
   * stream, the unsent queue, and the next request id (so a request queued before a reload and one made after it do
   * not share an id). Storage that is missing, full or forbidden (some private modes) makes this a no-op: the page
   * works, it only does not resume. What is read back is checked, since anything may have written it.
   */
  class ResumeStore {
    constructor(name) {
      this.key = name === null ? null : `tether:${name}`;
    }

    read() {
      const empty = { positions: new Map(), queue: [], nextId: 1 };
      if (this.key === null) return empty;
      let saved;
      try {
        saved = JSON.parse(global.sessionStorage.getItem(this.key));
      } catch (error) {
        return empty;
      }
      if (saved === null || typeof saved !== "object") return empty;
      const positions = new Map();
      if (saved.positions !== null && typeof saved.positions === "object") {
        for (const [stream, position] of Object.entries(saved.positions)) {
          if (isPosition(position)) positions.set(stream, { epoch: position.epoch, offset: position.offset });
        }
      }
      return {
        positions,
        queue: Array.isArray(saved.queue) ? saved.queue.filter((item) => typeof item === "string") : [],
        nextId: Number.isSafeInteger(saved.nextId) && saved.nextId > 0 ? saved.nextId : 1,
      };
    }

    write(positions, queue, nextId) {
      if (this.key === null) return;
      const state = {
        positions: Object.fromEntries(positions),
        queue: queue.filter((item) => typeof item === "string"), // binary frames cannot be kept: they are not resumed
        nextId,
      };
      try {
        global.sessionStorage.setItem(this.key, JSON.stringify(state));
      } catch (error) {
        // Full or forbidden: this page does not resume, and says nothing more about it than the browser does.
      }
    }
  }

  /**
   * Who is present in a stream, kept from the server's snapshot and diffs: one entry per user, with the `meta` of the
   * user's newest connection and how many `connections` they have (three tabs are one member). A diff's `joins` are
   * users who arrived or changed, in their new state; its `leaves` are users whose last connection went.
   */
  class PresenceList {
    constructor() {
      this._members = new Map();
    }

    /** The members, in the order they arrived: [{user, meta, connections}, ...] (copies: change them at will). */
    get members() {
      return Array.from(this._members.values(), (member) => Object.assign({}, member));
    }

    snapshot(members) {
      this._members = new Map();
      this.diff(members, []);
    }

    diff(joins, leaves) {
      for (const member of Array.isArray(joins) ? joins : []) {
        if (member === null || typeof member !== "object") continue;
        const connections = Number.isSafeInteger(member.connections) ? member.connections : 1;
        const meta = member.meta !== undefined ? member.meta : {};
        this._members.set(String(member.user), { user: member.user, meta, connections });
      }
      for (const member of Array.isArray(leaves) ? leaves : []) {
        if (member !== null && typeof member === "object") this._members.delete(String(member.user));
      }
    }
  }

  /** The options of `socket.subscribe(stream, handler, options)`. */
  const SUBSCRIBE_OPTIONS = Object.freeze({
    /** Join the stream's presence and keep `subscription.members` up to date. */
    presence: false,
    /** Called with (members, subscription) after each presence snapshot and diff. */
    onPresence: null,
    /**
     * Called with ({stream, reason, epoch, offset}, subscription) when the server cannot recover what was missed
     * (reason "epoch", "trimmed" or "future"): reload the state (over HTTP, say); messages after `offset` follow.
     */
    onReload: null,
    /** Called with (error, subscription) when the server refuses the subscription (error.code: "forbidden"...). */
    onError: null,
    /** Called with (result, subscription) each time the server confirms the subscription, after every reconnection. */
    onSubscribe: null,
    /** Where to start when nothing was resumed: {epoch, offset} (the state the page was rendered with, say). */
    position: null,
    /**
     * false: after a reconnection, start again "from now on" instead of recovering what was missed; for streams
     * whose old messages are worthless (who is typing, cursor moves).
     */
    recover: true,
  });

  function checkSubscribeOptions(options) {
    const merged = Object.assign({}, SUBSCRIBE_OPTIONS, options || {});
    for (const name of Object.keys(options || {})) {
      if (!(name in SUBSCRIBE_OPTIONS)) {
        const known = Object.keys(SUBSCRIBE_OPTIONS).join(", ");
        throw new TypeError(`tether: unknown subscribe option "${name}"; the options are ${known}.`);
      }
    }
    for (const name of ["onPresence", "onReload", "onError", "onSubscribe"]) {
      if (merged[name] !== null && typeof merged[name] !== "function") {
        throw new TypeError(`tether: subscribe option "${name}" must be a function.`);
      }
    }
    if (merged.position !== null && !isPosition(merged.position)) {
      throw new TypeError('tether: subscribe option "position" must be {epoch: string, offset: integer >= 0}.');
    }
    merged.presence = Boolean(merged.presence);
    merged.recover = Boolean(merged.recover);
    if (!merged.recover && merged.position !== null) {
      throw new TypeError('tether: subscribe options "position" and "recover: false" contradict each other.');
    }
    return merged;
  }

  /**
   * One stream's subscription on a socket: hands each message to the handler once, in order of offset.
   *
   * `state` is "subscribing" (a subscribe is on its way, after each reconnection too), "active" (the server
   * confirmed it) or "closed" (unsubscribed, or refused). `epoch` and `offset` are the position of the last message
   * handed over (epoch null until the first message or confirmation of a subscription that started "from now on").
   */
  class Subscription {
    constructor(socket, stream, handler, options, position) {
      this.socket = socket;
      this.stream = stream;
      this.handler = handler;
      this.options = options;
      this.state = "subscribing";
      this.epoch = position ? position.epoch : null;
      this.offset = position ? position.offset : 0;
      this._presence = new PresenceList();
      this._waitingFor = null; // the id of the subscribe whose reply is awaited
      this._fromNow = false; // whether that subscribe asked for no recovery
    }

    /** The stream's members ([{user, meta, connections}, ...]) when subscribed with `presence: true`. */
    get members() {
      return this._presence.members;
    }

    /** Stop receiving the stream's messages (and leave its presence). */
    unsubscribe() {
      this.socket._unsubscribe(this);
    }

    _frame(id) {
      if (!this.options.recover) this.epoch = null;
      const frame = { type: "subscribe", id, stream: this.stream };
      if (this.epoch !== null) {
        frame.epoch = this.epoch;
        frame.offset = this.offset;
      }
      if (this.options.presence) frame.presence = true;
      this.state = "subscribing";
      this._waitingFor = id;
      this._fromNow = this.epoch === null;
      return frame;
    }

    /** A `message` frame for this stream. Returns true when it shows a gap: resubscribe to recover what is missing. */
    _message(frame) {
      if (this.epoch === null) {
        // Subscribed "from now on": the first message sets the position.
      } else if (frame.epoch === this.epoch && frame.offset <= this.offset) {
        return false; // seen already (sent again after a reconnection)
      } else if (frame.epoch !== this.epoch || frame.offset !== this.offset + 1) {
        // Something is missing, or the stream lost its history: while confirmed, resubscribe from what was handed
        // over to get the rest (or the verdict to reload); while a subscribe is on its way, its reply will tell.
        return this.state === "active";
      }
      this.epoch = frame.epoch;
      this.offset = frame.offset;
      this.socket._saveResume();
      try {
        this.handler(frame.data, { stream: this.stream, epoch: frame.epoch, offset: frame.offset }, this);
      } catch (error) {
        report(error);
      }
      return false;
    }

    /** The reply to this subscription's latest subscribe. Returns true when a resubscribe is needed. */
    _reply(frame) {
      this._waitingFor = null;
      if (frame.error !== undefined) {
        this.state = "closed";
        const refusal = frame.error || {};
        const error = protocolError(String(refusal.code), `cannot subscribe to "${this.stream}": ${refusal.message}`);
        this._call("onError", error);
        if (this.options.onError === null) report(error);
        return false;
      }
      const result = frame.result || {};
      if (!isPosition(result)) return false; // not a reply of protocol v1: nothing to learn from it
      this.state = "active";
      let resubscribe = false;
      if (typeof result.reload === "string") {
        this._reload(result.reload, result);
      } else if (this.epoch === null || (this._fromNow && result.epoch !== this.epoch)) {
        this.epoch = result.epoch;
        this.offset = result.offset;
        this.socket._saveResume();
      } else if (!this._fromNow && (result.epoch !== this.epoch || result.offset > this.offset)) {
        resubscribe = true; // the server had more than it sent us (a message lost on the way): ask again
      }
      this._call("onSubscribe", result);
      return resubscribe;
    }

    /** The server cannot recover what this subscription missed: carry on from `position`, tell the page. */
    _reload(reason, position) {
      this.epoch = position.epoch;
      this.offset = position.offset;
      this.socket._saveResume();
      this._call("onReload", { stream: this.stream, reason, epoch: position.epoch, offset: position.offset });
    }

    _presenceFrame(frame) {
      if (!this.options.presence) return;
      if (frame.type === "presence") this._presence.snapshot(frame.members);
      else this._presence.diff(frame.joins, frame.leaves);
      this._call("onPresence", this._presence.members);
    }

    _call(name, value) {
      if (this.options[name] === null) return;
      try {
        this.options[name](value, this);
      } catch (error) {
        report(error);
      }
    }
  }

  /**
   * A WebSocket connection that reconnects by itself. See the file's header and docs/browser-client.md.
   *
   * Events (listen with `addEventListener(type, fn)` or `on(type, fn)`):
   * - `open`: connected; `event.reconnected` is true after a drop. Listeners run before the queue is flushed,
   *   so what they send (joining rooms again, say) goes out ahead of the queued sends.
   * - `message`: a frame; `event.data` as received, `event.json` its parsed JSON (undefined if not JSON).
   * - `close`: the connection ended; `event.code`, `event.reason`, `event.wasClean`, `event.willReconnect`.
   * - `reconnecting`: an attempt is scheduled; `event.attempt` (1, 2, ...) and `event.delay` (milliseconds).
   * - `drop`: a send was refused because the queue was full; `event.data` is what was not sent.
   *
   * Frames of the stream protocol (`message`, `reply`, `presence`, `presence.diff`) go to the subscriptions and
   * requests they belong to, and are `message` events too.
   */
  class TetherSocket extends EventTarget {
    constructor(path, options) {
      super();
      this.options = checkOptions(options);
      this.url = resolveUrl(path);
      this._state = STATES.CONNECTING;
      this._store = new ResumeStore(this.options.resume);
      const saved = this._store.read();
      this._queue = saved.queue.slice(0, this.options.maxQueue);
      this._nextId = saved.nextId;
      this._resumed = saved.positions; // stream -> {epoch, offset} saved by the page before a reload, not subscribed yet
      this._subscriptions = new Map(); // stream -> Subscription
      this._requests = new Map(); // id -> {resolve, reject, timer, frame, ws: the connection it went out on, or null}
      this._attempt = 0;
      this._ws = null;
      this._everOpened = false;
      this._retryTimer = null;
      this._connectTimer = null;
      this._stableTimer = null;
      this._onOnline = () => this._retryNow();
      this._onOffline = () => this._wentOffline();
      this._connect();
      if (typeof global.addEventListener === "function") {
        global.addEventListener("online", this._onOnline);
        global.addEventListener("offline", this._onOffline);
      }
    }

    /** "connecting", "open", "reconnecting" or "closed" (see Tether.STATES). */
    get state() {
      return this._state;
    }

    /** How many sends wait in the queue for the connection to open. */
    get queued() {
      return this._queue.length;
    }

    /** The number of the current reconnection attempt (0 while the connection is stable or never dropped). */
    get attempt() {
      return this._attempt;
    }

    /**
     * Send a frame (a string, ArrayBuffer, typed array or Blob). Sent at once when open; otherwise queued.
     * Returns true when sent or queued, false when the queue was full (the data is dropped and a `drop`
     * event fires). Throws an Error after close().
     */
    send(data) {
      if (this._state === STATES.CLOSED) {
        throw new Error("tether: send() on a closed socket; open a new one with Tether.connect().");
      }
      if (this._state === STATES.OPEN) {
        this._ws.send(data);
        return true;
      }
      if (this._queue.length >= this.options.maxQueue) {
        this.dispatchEvent(makeEvent("drop", { data }));
        return false;
      }
      this._queue.push(data);
      this._saveResume();
      return true;
    }

    /** Send `value` as a JSON text frame; same return value and queueing as send(). */
    sendJson(value) {
      return this.send(JSON.stringify(value));
    }

    /**
     * Receive the messages of `stream`: `handler(data, {stream, epoch, offset}, subscription)` is called once per
     * message, in order of offset, across reconnections (and reloads, with the `resume` option). Options: see
     * SUBSCRIBE_OPTIONS (presence, onPresence, onReload, onError, onSubscribe, position). Returns the Subscription;
     * `subscription.unsubscribe()` ends it. One subscription per stream and socket.
     */
    subscribe(stream, handler, options) {
      if (typeof stream !== "string" || stream === "") {
        throw new TypeError("tether: subscribe() needs a stream name (a non-empty string).");
      }
      if (typeof handler !== "function") {
        throw new TypeError("tether: subscribe() needs a handler function, called with each message.");
      }
      const settings = checkSubscribeOptions(options);
      if (this._state === STATES.CLOSED) {
        throw new Error("tether: subscribe() on a closed socket; open a new one with Tether.connect().");
      }
      if (this._subscriptions.has(stream)) {
        throw new Error(`tether: already subscribed to "${stream}"; unsubscribe first.`);
      }
      const position = settings.recover ? this._resumed.get(stream) || settings.position : null;
      this._resumed.delete(stream);
      const subscription = new Subscription(this, stream, handler, settings, position);
      this._subscriptions.set(stream, subscription);
      if (this._state === STATES.OPEN) this._sendSubscribe(subscription);
      return subscription;
    }

    /**
     * Call `method` on the server (its consumer's `request_<method>(params)`); resolves with the reply's result,
     * rejects with an Error whose `code` is the server's error code, or "timeout" (no reply within `timeout`
     * milliseconds; `error.sent` is false when it was still waiting in the queue, and is taken out of it),
     * "disconnected" (the connection dropped after the request went out: it may or may not have run), "queue_full"
     * or "closed".
     */
    request(method, params = {}, options = {}) {
      if (typeof method !== "string" || method === "") {
        throw new TypeError("tether: request() needs a method name (a non-empty string).");
      }
      const timeout = options.timeout !== undefined ? options.timeout : this.options.requestTimeout;
      if (typeof timeout !== "number" || !(timeout > 0)) {
        throw new RangeError(`tether: a request's timeout must be a number of milliseconds > 0, not ${timeout}.`);
      }
      if (this._state === STATES.CLOSED) {
        return Promise.reject(protocolError("closed", `request "${method}" on a closed socket.`));
      }
      const id = this._nextId++;
      const frame = JSON.stringify({ type: "request", id, method, params });
      return new Promise((resolve, reject) => {
        if (!this.send(frame)) {
          reject(protocolError("queue_full", `request "${method}" not sent: the queue is full.`));
          return;
        }
        const entry = { resolve, reject, frame, ws: this._state === STATES.OPEN ? this._ws : null, timer: null };
        if (Number.isFinite(timeout)) {
          entry.timer = setTimeout(() => {
            this._requests.delete(id);
            const queued = this._queue.indexOf(frame);
            if (queued !== -1) {
              this._queue.splice(queued, 1);
              this._saveResume();
            }
            const where = queued !== -1 ? "it was never sent, the connection did not come back" : "no reply";
            const error = protocolError("timeout", `request "${method}" timed out after ${timeout} ms (${where}).`);
            error.sent = queued === -1;
            reject(error);
          }, timeout);
        }
        this._requests.set(id, entry);
      });
    }

    /** Listen to `type`; returns a function that stops listening. */
    on(type, listener) {
      this.addEventListener(type, listener);
      return () => this.removeEventListener(type, listener);
    }

    /**
     * Close the connection for good: no more reconnection attempts, queued sends are discarded, and the state
     * becomes "closed". `code` is 1000 or 3000-4999. A `close` event follows (with willReconnect false).
     */
    close(code = 1000, reason = "") {
      if (code !== 1000 && (code < 3000 || code > 4999)) {
        throw new RangeError(`tether: close() takes code 1000 or 3000-4999, not ${code}.`);
      }
      if (this._state === STATES.CLOSED) return;
      this._state = STATES.CLOSED;
      this._queue = [];
      this._saveResume();
      this._clearTimers();
      this._endAll("closed", "the socket was closed");
      if (typeof global.removeEventListener === "function") {
        global.removeEventListener("online", this._onOnline);
        global.removeEventListener("offline", this._onOffline);
      }
      const ws = this._ws;
      if (ws && ws.readyState !== WebSocket.CLOSED) {
        ws.close(code, reason); // the WebSocket's close event fires our `close` event
      } else {
        this._ws = null;
        this.dispatchEvent(makeEvent("close", { code, reason, wasClean: true, willReconnect: false }));
      }
    }

    _connect() {
      let ws;
      try {
        ws = new WebSocket(this.url, this.options.protocols);
      } catch (error) {
        if (!this._everOpened && this._attempt === 0) throw error; // a bad URL or protocol: tell the caller now
        this._scheduleReconnect();
        return;
      }
      ws.binaryType = this.options.binaryType;
      this._ws = ws;
      this._connectTimer = setTimeout(() => {
        if (ws.readyState === WebSocket.CONNECTING) ws.close(); // counts as a drop: the close event follows
      }, this.options.connectTimeout);
      ws.onopen = () => this._opened(ws);
      ws.onmessage = (event) => {
        if (this._ws !== ws) return;
        const message = makeMessageEvent(event.data);
        this._route(message.json);
        if (this._ws === ws) this.dispatchEvent(message);
      };
      ws.onclose = (event) => this._closed(ws, event);
    }

    _opened(ws) {
      if (this._ws !== ws || this._state === STATES.CLOSED) return;
      clearTimeout(this._connectTimer);
      this._state = STATES.OPEN;
      const reconnected = this._everOpened;
      this._everOpened = true;
      this._stableTimer = setTimeout(() => {
        this._attempt = 0;
      }, this.options.stableAfter);
      // Subscriptions first, each from the last offset it handed over, so that what the page sends next finds them.
      for (const subscription of this._subscriptions.values()) this._sendSubscribe(subscription);
      this.dispatchEvent(makeEvent("open", { reconnected }));
      if (this._state !== STATES.OPEN || this._ws !== ws) return;
      while (this._queue.length) ws.send(this._queue.shift());
      for (const entry of this._requests.values()) {
        if (entry.ws === null) entry.ws = ws;
      }
      this._saveResume();
    }

    _closed(ws, event) {
      if (this._ws !== ws) return;
      this._ws = null;
      this._clearTimers();
      const fields = { code: event.code, reason: event.reason, wasClean: event.wasClean };
      if (this._state === STATES.CLOSED) {
        this.dispatchEvent(makeEvent("close", Object.assign(fields, { willReconnect: false })));
        return;
      }
      let willReconnect = true;
      try {
        willReconnect = this.options.shouldReconnect(event) !== false;
      } catch (error) {
        report(error); // reconnecting goes on
      }
      this._failRequests(ws);
      if (!willReconnect) {
        this._state = STATES.CLOSED;
        this._queue = [];
        this._saveResume();
        this._endAll("closed", `the server closed the connection for good (${event.code})`);
      } else {
        this._state = STATES.RECONNECTING;
        for (const subscription of this._subscriptions.values()) subscription.state = "subscribing";
      }
      this.dispatchEvent(makeEvent("close", Object.assign(fields, { willReconnect })));
      if (willReconnect && this._state === STATES.RECONNECTING) this._scheduleReconnect();
    }

    _scheduleReconnect() {
      this._state = STATES.RECONNECTING;
      this._attempt += 1;
      const delay = backoffDelay(this._attempt, this.options, this.options.random);
      this._retryTimer = setTimeout(() => {
        this._retryTimer = null;
        this._connect();
      }, delay);
      this.dispatchEvent(makeEvent("reconnecting", { attempt: this._attempt, delay }));
    }

    _retryNow() {
      // The browser is back online: do not sit out the rest of the wait.
      if (this._state === STATES.RECONNECTING && this._retryTimer !== null) {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._connect();
      }
    }

    _wentOffline() {
      // The browser has no network. Chromium keeps a WebSocket "open" until the operating system gives up on it,
      // which takes minutes, while what is sent on it goes nowhere: drop it now, and reconnect when back online.
      const ws = this._ws;
      if (ws === null || this._state === STATES.CLOSED) return;
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.close();
      this._closed(ws, { code: 1006, reason: "the browser went offline", wasClean: false });
    }

    _sendSubscribe(subscription) {
      this._ws.send(JSON.stringify(subscription._frame(this._nextId++)));
    }

    _resubscribe(subscription) {
      // A gap in one connection's messages (the layer dropped one): subscribe again from the last offset handed
      // over; the server sends what is missing, or the verdict to reload.
      if (this._state !== STATES.OPEN) return;
      this._ws.send(JSON.stringify({ type: "unsubscribe", id: this._nextId++, stream: subscription.stream }));
      this._sendSubscribe(subscription);
    }

    _unsubscribe(subscription) {
      if (subscription.state === "closed" || this._subscriptions.get(subscription.stream) !== subscription) return;
      subscription.state = "closed";
      this._subscriptions.delete(subscription.stream);
      this._saveResume();
      if (this._state === STATES.OPEN) {
        this._ws.send(JSON.stringify({ type: "unsubscribe", id: this._nextId++, stream: subscription.stream }));
      }
    }

    /** A frame of the stream protocol goes to its subscription or request; anything else is left to listeners. */
    _route(frame) {
      if (frame === null || typeof frame !== "object") return;
      if (frame.type === "reply") {
        this._settle(frame);
        return;
      }
      const subscription = this._subscriptions.get(frame.stream);
      if (subscription === undefined) return;
      if (frame.type === "message") {
        if (typeof frame.epoch !== "string" || !Number.isSafeInteger(frame.offset)) return;
        if (subscription._message(frame)) this._resubscribe(subscription);
      } else if (frame.type === "presence" || frame.type === "presence.diff") {
        subscription._presenceFrame(frame);
      } else if (frame.type === "reload" && typeof frame.reason === "string" && isPosition(frame)) {
        subscription._reload(frame.reason, frame); // a gap the server could not fill from history
      }
    }

    _settle(frame) {
      const entry = this._requests.get(frame.id);
      if (entry !== undefined) {
        this._requests.delete(frame.id);
        clearTimeout(entry.timer);
        if (frame.error !== undefined) {
          const error = frame.error || {};
          entry.reject(protocolError(String(error.code), String(error.message)));
        } else {
          entry.resolve(frame.result);
        }
        return;
      }
      for (const subscription of this._subscriptions.values()) {
        if (subscription._waitingFor !== frame.id) continue;
        const resubscribe = subscription._reply(frame);
        if (subscription.state === "closed") {
          this._subscriptions.delete(subscription.stream);
          this._saveResume();
        } else if (resubscribe) {
          this._resubscribe(subscription);
        }
        return;
      }
      // A reply to a request sent before a reload, or to an unsubscribe: nobody waits for it.
    }

    /** Reject the requests that went out on the connection `ws`, which dropped: their replies cannot come. */
    _failRequests(ws) {
      for (const [id, entry] of this._requests) {
        if (entry.ws !== ws) continue;
        this._requests.delete(id);
        clearTimeout(entry.timer);
        entry.reject(protocolError("disconnected", "the connection dropped before the reply came; it may have run."));
      }
    }

    /** The socket is closed for good: every request fails with `code`, every subscription ends. */
    _endAll(code, why) {
      for (const entry of this._requests.values()) {
        clearTimeout(entry.timer);
        entry.reject(protocolError(code, `no reply: ${why}.`));
      }
      this._requests.clear();
      for (const subscription of this._subscriptions.values()) subscription.state = "closed";
      this._subscriptions.clear();
    }

    /** With the `resume` option: keep the positions, the queue and the next id in sessionStorage. */
    _saveResume() {
      if (this._store.key === null) return;
      const positions = new Map(this._resumed);
      for (const subscription of this._subscriptions.values()) {
        if (subscription.epoch !== null && subscription.options.recover) {
          positions.set(subscription.stream, { epoch: subscription.epoch, offset: subscription.offset });
        }
      }
      this._store.write(positions, this._queue, this._nextId);
    }

    _clearTimers() {
      clearTimeout(this._retryTimer);
      clearTimeout(this._connectTimer);
      clearTimeout(this._stableTimer);
      this._retryTimer = this._connectTimer = this._stableTimer = null;
    }
  }

  global.Tether = Object.freeze({
    Socket: TetherSocket,
    Subscription,
    PresenceList,
    connect: (path, options) => new TetherSocket(path, options),
    backoffDelay,
    resolveUrl,
    STATES,
    DEFAULTS,
    SUBSCRIBE_OPTIONS,
  });
})(typeof globalThis !== "undefined" ? globalThis : window);
