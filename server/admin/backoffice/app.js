// syncledger back office: plain JavaScript, no build step, no third-party code. The token lives in this
// closure only (never in storage or a cookie). Money stays exact decimal text: it never becomes a JS number.
"use strict";
(() => {
  const TAIL_ROWS = 200;      // events kept in the tail
  const TAIL_PRELOAD = 50;    // events replayed into the tail at login
  const PAGE = 100;           // accounts per page
  const ROUNDS_PAGE = 50;     // rounds per page
  const HISTORY_PAGE = 25;    // finance records per page
  const COMMANDS = {6: "BalanceIn", 7: "CreditIn", 8: "BalanceOut", 9: "CreditOut"};
  const KINDS = {0: "", 1: " (update)", 2: " (delete)"};
  const STATES = {3: "closed", 6: "deleted"};
  // Money fields arrive as JSON numbers: quoted before parsing, so their digits are kept as they are.
  const MONEY = /"(amount|balance|credit|profit|delta|ggr|bets|wins|cancelled)":(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;

  const state = {
    token: null, cfg: null, ws: null, lastSeq: null, backoff: 250, reconnects: 0, resumedFrom: null, gaps: 0,
    accounts: new Map(), query: "", nextFromLogin: null, paused: false, held: [], timers: [], retry: null,
    history: null, verifyRunning: false, rounds: null,
  };
  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  function parseExact(text) { return JSON.parse(text.replace(MONEY, '"$1":"$2"')); }

  async function api(path, {method = "GET", body, auth = true} = {}) {
    const headers = {"Accept": "application/json"};
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {method, headers, body, cache: "no-store"});
    } catch (e) {
      throw new ApiError(0, "NETWORK", "the server cannot be reached");
    }
    let reply;
    try { reply = parseExact(await response.text()); } catch (e) { reply = null; }
    if (!reply || typeof reply.status !== "number") {
      throw new ApiError(response.status, "BAD_ANSWER", `unexpected answer (HTTP ${response.status})`);
    }
    if (reply.status !== 200) {
      const error = new ApiError(reply.status, reply.error, reply.message);
      if (reply.status === 401 && auth && state.token) sessionLost(error);
      throw error;
    }
    return reply.data;
  }

  // ---- small DOM helpers

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    return td;
  }
  function linkCell(text, label, action) {
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button"; button.className = "link"; button.textContent = String(text);
    button.setAttribute("aria-label", label);
    button.addEventListener("click", action);
    td.append(button);
    return td;
  }
  function utc(seconds) {
    return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
  }
  function command(cmd, type) { return (COMMANDS[cmd] || `cmd ${cmd}`) + (KINDS[type] || ""); }
  function say(text) { $("message").textContent = text; }

  // ---- logging in and out

  function loginMessage(e) {
    if (e.code === "INVALID_CREDENTIALS") return "Wrong login or password.";
    if (["INVALID_TOKEN", "TOKEN_EXPIRED", "TOKEN_REVOKED", "UNAUTHORIZED"].includes(e.code)) {
      return `This token is not accepted (${e.code}): ${e.message}.`;
    }
    if (e.code === "FORBIDDEN") return "This page is for manager, dealer and admin sessions: " + e.message + ".";
    return `Login failed (${e.code || e.status}): ${e.message}`;
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    const login = $("login-id").value.trim();
    const password = $("login-password").value;
    if (!/^\d{1,18}$/.test(login)) { $("login-error").textContent = "The login is a number."; return; }
    if (!password) { $("login-error").textContent = "Enter the password."; return; }
    try {
      const data = await api("/api/login", {method: "POST", auth: false,
        body: `{"login":${login},"password":${JSON.stringify(password)}}`});
      $("login-password").value = "";
      await start(data.token);
    } catch (e) {
      $("login-error").textContent = loginMessage(e);
    }
  });

  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    const token = $("token-input").value.trim();
    if (!token) { $("login-error").textContent = "Paste a token first."; return; }
    try {
      await start(token);
      $("token-input").value = "";
    } catch (e) {
      $("login-error").textContent = loginMessage(e);
    }
  });

  async function start(token) {
    state.token = token;
    try {
      state.cfg = await api("/api/config", {auth: false});
    } catch (e) {
      state.token = null;
      throw e;
    }
    say("");
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = false;
    $("whoami").hidden = false;
    $("whoami").textContent = `Manager ${state.cfg.login} (${state.cfg.session})`;
    const admin = state.cfg.session === "ADMIN";
    $("verify").disabled = !admin;
    $("verify-note").textContent = admin ? "" : "Running a verify needs an ADMIN session.";
    const head = await refreshHead();
    await loadAccounts(true);
    loadDayTotals().catch((e) => say(`Day totals: ${e.message}`));
    state.lastSeq = Math.max(0, head.seq - TAIL_PRELOAD);
    connect();
    refreshChart();
    state.timers.push(setInterval(() => refreshHead().catch(() => {}), 5000), setInterval(refreshChart, 2000));
    $("main").focus();
  }

  function stop() {
    state.token = null;
    state.timers.forEach(clearInterval);
    state.timers = [];
    clearTimeout(state.retry);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "logged out");
    Object.assign(state, {cfg: null, lastSeq: null, reconnects: 0, resumedFrom: null, gaps: 0, held: [],
                          history: null, backoff: 250});
    state.accounts.clear();
    for (const id of ["accounts", "tail", "detail", "day-totals", "rounds"]) $(id).querySelector("tbody").replaceChildren();
    state.rounds = null;
    $("rounds-more").hidden = true;
    $("detail").hidden = true;
    $("main").hidden = true;
    $("logout").hidden = true;
    $("whoami").hidden = true;
    $("login").hidden = false;
    setStatus("not connected");
  }

  function sessionLost(error) {
    stop();
    $("login-error").textContent = `Your session ended (${error.code}): ${error.message}. Log in again.`;
    $("login-id").focus();
  }

  $("logout").addEventListener("click", () => { stop(); $("login-id").focus(); });

  // ---- accounts

  // As the server searches: a login or a name that starts with the text, ASCII letters in any case.
  const asciiLower = (text) => text.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
  function matches(account) {
    const q = asciiLower(state.query);
    return !q || String(account.login).startsWith(q) || asciiLower(account.name).startsWith(q);
  }

  function accountRow(account) {
    const tr = document.createElement("tr");
    tr.dataset.login = account.login;
    tr.append(cell(account.login), cell(account.name), cell(account.currency),
              cell(account.balance, "num balance"), cell(account.credit, "num credit"),
              linkCell("History", `History of account ${account.login}`, () => showHistory(account.login, null)));
    return tr;
  }

  async function loadAccounts(fresh) {
    const from = fresh ? 0 : state.nextFromLogin;
    const params = new URLSearchParams({q: state.query, from_login: from, limit: PAGE});
    const data = await api("/api/accounts?" + params);
    const body = $("accounts").querySelector("tbody");
    if (fresh) { body.replaceChildren(); state.accounts.clear(); }
    for (const account of data.accounts) {
      account.seq = data.seq;  // events up to this seq are already in these totals
      state.accounts.set(account.login, account);
      body.append(accountRow(account));
    }
    state.nextFromLogin = data.next_from_login;
    $("accounts-more").hidden = data.next_from_login === null;
    $("accounts-note").textContent = state.accounts.size ? "" : "No account matches.";
  }

  $("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.query = $("search").value.trim();
    try { await loadAccounts(true); } catch (e) { say(`Search failed: ${e.message}`); }
  });
  $("accounts-more").addEventListener("click", () => loadAccounts(false).catch((e) => say(e.message)));

  async function addAccount(login) {
    // An account the list does not show yet: shown if it matches the search and falls in the loaded pages.
    const data = await api("/api/accounts?" + new URLSearchParams({from_login: login, limit: 1}));
    const account = data.accounts[0];
    if (!account || account.login !== login || state.accounts.has(login) || !matches(account)) return;
    if (state.nextFromLogin !== null && login >= state.nextFromLogin) return;
    account.seq = data.seq;
    state.accounts.set(login, account);
    const body = $("accounts").querySelector("tbody");
    const after = [...body.children].find((tr) => Number(tr.dataset.login) > login);
    body.insertBefore(accountRow(account), after || null);
    $("accounts-note").textContent = "";
  }

  function applyToAccount(seq, data) {
    const account = state.accounts.get(data.login);
    if (!account) {
      addAccount(data.login).catch(() => {});
      return;
    }
    if (seq <= account.seq || data.balance === undefined) return;
    account.seq = seq;
    account.balance = data.balance;
    account.credit = data.credit;
    const tr = $("accounts").querySelector(`tr[data-login="${data.login}"]`);
    if (!tr) return;
    tr.querySelector(".balance").textContent = data.balance;
    tr.querySelector(".credit").textContent = data.credit;
    tr.classList.add("changed");
    setTimeout(() => tr.classList.remove("changed"), 1500);
  }

  // ---- the live stream (the server's WebSocket, resumed with from_seq so that nothing is missed)

  function setStatus(text) { $("stream-status").textContent = text; }

  function connect() {
    if (!state.token) return;
    const cfg = state.cfg;
    const host = cfg.ws_host || location.hostname;
    const from = state.lastSeq;
    const url = `${cfg.tls ? "wss" : "ws"}://${host.includes(":") ? `[${host}]` : host}:${cfg.ws_port}/events?` +
      new URLSearchParams({token: state.token, from_seq: from});
    const ws = new WebSocket(url);
    state.ws = ws;
    setStatus(state.reconnects ? `reconnecting from seq ${from}…` : "connecting…");
    ws.addEventListener("open", () => {
      if (state.ws !== ws) return;
      state.backoff = 250;
      if (state.reconnects) state.resumedFrom = from;
      showLive();
    });
    ws.addEventListener("message", (message) => {
      if (state.ws === ws) onEvent(parseExact(message.data));
    });
    ws.addEventListener("close", (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.reconnects += 1;
      setStatus(`stream closed (code ${event.code}); resuming from seq ${state.lastSeq}…`);
      state.retry = setTimeout(connect, state.backoff);
      state.backoff = Math.min(state.backoff * 2, 5000);
      api("/api/head").catch(() => {});  // a token no longer valid logs out (401) instead of retrying for ever
    });
  }

  function showLive() {
    let text = "live";
    if (state.reconnects) text += ` · resumed ${state.reconnects}× (last from seq ${state.resumedFrom})`;
    if (state.gaps) text += ` · ${state.gaps} gap(s) refilled`;
    setStatus(text);
  }

  function onEvent(message) {
    if (message.event !== "trade:event") return;
    const seq = message.seq;
    if (seq <= state.lastSeq) return;  // already shown
    if (seq !== state.lastSeq + 1) {   // never expected: fetch what is missing by resuming from the last seen
      state.gaps += 1;
      if (state.ws) state.ws.close(4000, "gap");
      return;
    }
    state.lastSeq = seq;
    applyToAccount(seq, message.data);
    if (state.paused) {
      state.held.push(message);
      if (state.held.length > TAIL_ROWS) state.held.shift();
      $("tail-note").textContent = `Paused: ${state.held.length} new event(s) waiting.`;
    } else {
      addTailRow(message);
    }
  }

  function addTailRow(message) {
    const d = message.data;
    const tr = document.createElement("tr");
    tr.dataset.seq = message.seq;
    tr.append(cell(message.seq, "num seq"), cell(utc(d.close_time || d.open_time)),
              linkCell(d.order, `Versions of order ${d.order}`, () => showOrder(d.order)),
              linkCell(d.login, `History of account ${d.login}`, () => showHistory(d.login, null)),
              cell(command(d.cmd, message.type)), cell(d.profit, "num"), cell(d.comment, "comment"));
    const body = $("tail").querySelector("tbody");
    body.prepend(tr);
    while (body.children.length > TAIL_ROWS) body.lastChild.remove();
  }

  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").setAttribute("aria-pressed", String(state.paused));
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    if (!state.paused) {
      state.held.forEach(addTailRow);
      state.held = [];
      $("tail-note").textContent = "";
    } else {
      $("tail-note").textContent = "Paused: the tail stands still; balances still update.";
    }
  });

  // ---- history and order versions

  function showTable(caption, columns, rows) {
    $("detail-caption").textContent = caption;
    const head = document.createElement("tr");
    for (const [title, className] of columns) {
      const th = document.createElement("th");
      th.scope = "col"; th.textContent = title;
      if (className) th.className = className;
      head.append(th);
    }
    $("detail").querySelector("thead").replaceChildren(head);
    $("detail").querySelector("tbody").replaceChildren(...rows);
    $("detail").hidden = false;
    $("detail-note").textContent = rows.length ? "" : "Nothing recorded yet.";
    $("detail-title").focus();
  }

  async function showHistory(login, before) {
    let data;
    try {
      data = await api("/api/history?" + new URLSearchParams({login, limit: HISTORY_PAGE, ...(before ? {before} : {})}));
    } catch (e) { say(`History of ${login}: ${e.message}`); return; }
    if (!state.history || state.history.login !== login) state.history = {login, stack: []};
    state.history.before = before;
    state.history.older = data.older;
    const rows = data.records.map((r) => {
      const tr = document.createElement("tr");
      tr.append(cell(r.id, "num"), linkCell(r.order, `Versions of order ${r.order}`, () => showOrder(r.order)),
                cell(r.version, "num"), cell(COMMANDS[r.cmd] || r.cmd), cell(STATES[r.state] || r.state),
                cell(r.delta, "num"), cell(r.balance, "num"), cell(r.credit, "num"), cell(utc(r.created)),
                cell(r.comment, "comment"));
      return tr;
    });
    const a = data.account;
    showTable(`History of account ${a.login} (${a.name}): balance ${a.balance}, credit ${a.credit} ${a.currency}`,
              [["Row", "num"], ["Order"], ["Version", "num"], ["Command"], ["State"], ["Change", "num"],
               ["Balance after", "num"], ["Credit after", "num"], ["Recorded (UTC)"], ["Comment"]], rows);
    $("older").hidden = data.older === null;
    $("newer").hidden = state.history.stack.length === 0;
  }

  $("older").addEventListener("click", () => {
    const h = state.history;
    h.stack.push(h.before);
    showHistory(h.login, h.older);
  });
  $("newer").addEventListener("click", () => {
    const h = state.history;
    showHistory(h.login, h.stack.pop() ?? null);
  });

  async function showOrder(order) {
    let data;
    try {
      data = await api("/api/order?" + new URLSearchParams({order}));
    } catch (e) { say(`Order ${order}: ${e.message}`); return; }
    state.history = null;
    $("older").hidden = true;
    $("newer").hidden = true;
    const rows = data.versions.map((v) => {
      const tr = document.createElement("tr");
      tr.append(cell(v.version, "num"), linkCell(v.login, `History of account ${v.login}`, () => showHistory(v.login, null)),
                cell(COMMANDS[v.cmd] || v.cmd), cell(STATES[v.state] || v.state), cell(v.amount, "num"),
                cell(v.delta, "num"), cell(v.balance, "num"), cell(v.credit, "num"), cell(utc(v.created)),
                cell(v.comment, "comment"), cell(v.hash.slice(0, 16) + "…", "mono"));
      return tr;
    });
    showTable(`Versions of order ${order}`, [["Version", "num"], ["Login"], ["Command"], ["State"], ["Amount", "num"],
              ["Change", "num"], ["Balance after", "num"], ["Credit after", "num"], ["Recorded (UTC)"],
              ["Comment"], ["Hash"]], rows);
  }

  $("order-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const order = $("order-input").value.trim();
    if (!/^\d{1,18}$/.test(order)) { say("An order is a number."); return; }
    say("");
    showOrder(order);
  });

  // ---- the ledger's head and verify

  function showVerify(result, running) {
    const out = $("verify-result");
    if (running) { out.className = ""; out.textContent = "running…"; return; }
    if (!result) return;
    out.className = result.ok ? "ok" : "failed";
    out.textContent = `${result.text} (at ${utc(result.at)} UTC by ${result.by}, ${result.seconds} s)`;
  }

  async function refreshHead() {
    const data = await api("/api/head");
    $("head").textContent = data.head;
    if (!state.verifyRunning) showVerify(data.verify, data.verifying);
    return data;
  }

  $("verify").addEventListener("click", async () => {
    state.verifyRunning = true;
    $("verify").disabled = true;
    showVerify(null, true);
    try {
      showVerify(await api("/api/verify", {method: "POST", body: "{}"}), false);
      await refreshHead();
    } catch (e) {
      $("verify-result").className = "failed";
      $("verify-result").textContent = `verify could not run (${e.code}): ${e.message}`;
    } finally {
      state.verifyRunning = false;
      $("verify").disabled = !state.cfg || state.cfg.session !== "ADMIN";
    }
  });

  // ---- reconciliation: each provider's day totals, and a provider's rounds with their moves

  async function loadDayTotals() {
    const day = $("day-input").value;
    const data = await api("/api/report?" + new URLSearchParams(day ? {day} : {}));
    const rows = [];
    for (const p of data.providers) {
      if (!p.currencies.length) {
        const tr = document.createElement("tr");
        tr.append(cell(p.provider), cell("—"), ...Array.from({length: 8}, () => cell("", "num")));
        rows.push(tr);
      }
      for (const t of p.currencies) {
        const tr = document.createElement("tr");
        tr.dataset.provider = p.provider;
        tr.append(cell(p.provider), cell(t.currency), cell(`${t.bets.amount} (${t.bets.count})`, "num bets"),
                  cell(`${t.wins.amount} (${t.wins.count})`, "num wins"),
                  cell(`${t.cancels.amount} (${t.cancels.count})`, "num"), cell(t.ggr, "num ggr"),
                  cell(`${t.promo_payouts.amount} (${t.promo_payouts.count})`, "num"),
                  cell(t.rounds.opened, "num"), cell(t.rounds.settled + t.rounds.cancelled, "num"),
                  cell(t.rounds.open_now, "num open-now"));
        rows.push(tr);
      }
    }
    $("day-totals").querySelector("tbody").replaceChildren(...rows);
    $("day-input").value = data.day;
    $("day-caption").textContent = `${data.day} (UTC): each provider's totals per currency, amount (count)`;
    $("day-note").textContent = `GGR = bets − cancelled bets − wins; promo payouts are shown apart and are not in it. ` +
      "Rounds: opened that day, closed (settled or cancelled) by a move of that day, and open now, as they stand now.";
    const select = $("rounds-provider");
    const chosen = select.value;
    select.replaceChildren(...data.providers.map((p) => {
      const option = document.createElement("option");
      option.value = option.textContent = p.provider;
      return option;
    }));
    if (chosen && data.providers.some((p) => p.provider === chosen)) select.value = chosen;
  }

  $("day-form").addEventListener("submit", (event) => {
    event.preventDefault();
    say("");
    loadDayTotals().catch((e) => say(`Day totals: ${e.message}`));
  });

  function movesText(moves) {
    return moves.map((m) => `${m.type} ${m.txid} ${m.amount}`).join("; ");
  }

  async function loadRounds(fresh) {
    if (fresh) {
      const older = $("rounds-older").value.trim();
      if (older && !/^\d{1,9}$/.test(older)) { say("Opened at least so many minutes ago: a whole number."); return; }
      const query = {provider: $("rounds-provider").value, limit: ROUNDS_PAGE};
      if ($("rounds-open").checked) query.open = "1";
      if ($("rounds-game").value.trim()) query.game_id = $("rounds-game").value.trim();
      if (older) query.older_than = String(Number(older) * 60);
      state.rounds = {query, after: null, shown: 0};
    }
    const r = state.rounds;
    const data = await api("/api/rounds?" + new URLSearchParams({...r.query, ...(r.after ? {after: r.after} : {})}));
    const body = $("rounds").querySelector("tbody");
    if (fresh) body.replaceChildren();
    for (const round of data.rounds) {
      const tr = document.createElement("tr");
      tr.dataset.round = round.game_id;
      tr.append(cell(round.game_id), linkCell(round.login, `History of account ${round.login}`,
                                               () => showHistory(round.login, null)),
                cell(round.state, "state"), cell(utc(round.opened)), cell(utc(round.updated)),
                cell(round.bets, "num"), cell(round.wins, "num"), cell(round.cancelled, "num"),
                cell(movesText(round.moves), "comment"));
      body.append(tr);
    }
    r.shown += data.rounds.length;
    r.after = data.next;
    $("rounds-more").hidden = data.next === null;
    $("rounds-note").textContent = r.shown ? "" : (data.next === null ? "No round matches." :
      "None in the rounds looked at so far: look further with More rounds.");
  }

  $("rounds-form").addEventListener("submit", (event) => {
    event.preventDefault();
    say("");
    if (!$("rounds-provider").value) { say("Choose a provider (show a day's totals first)."); return; }
    loadRounds(true).catch((e) => say(`Rounds: ${e.message}`));
  });
  $("rounds-more").addEventListener("click", () => loadRounds(false).catch((e) => say(`Rounds: ${e.message}`)));

  // ---- the chart (from the server's metrics, sampled each second while it works)

  const SVG = "http://www.w3.org/2000/svg";
  function svg(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function ago(seconds) { return seconds >= 120 ? `${Math.round(seconds / 60)} min ago` : `${Math.round(seconds)} s ago`; }

  function draw(id, points, value, now, window, unit) {
    const W = 600, H = 120, top = 16, bottom = 104;
    const shown = points.filter((p) => value(p) !== null);
    const peak = Math.max(1, ...shown.map(value));
    const x = (t) => Math.max(0, Math.min(W, W - (now - t) / window * W));
    const y = (v) => bottom - (v / peak) * (bottom - top);
    let d = "", end = null;
    for (const p of points) {  // one step per sampled interval: quiet stretches are drawn at zero
      const v = value(p), x0 = x(p.t - p.dt), x1 = x(p.t);
      if (v === null) { end = null; continue; }
      d += (end !== null && Math.abs(x0 - end) < 1 ? "V" : `M${x0.toFixed(1)},`) + `${y(v).toFixed(1)}H${x1.toFixed(1)}`;
      end = x1;
    }
    const chart = $(id);
    chart.replaceChildren(
      svg("line", {x1: 0, x2: W, y1: bottom, y2: bottom, class: "grid"}),
      svg("line", {x1: 0, x2: W, y1: top, y2: top, class: "grid"}),
      svg("text", {x: 4, y: top - 4, class: "axis"}, `${peak.toFixed(peak < 10 ? 2 : 0)} ${unit}`),
      svg("text", {x: 4, y: H - 2, class: "axis"}, ago(window)),
      svg("text", {x: W - 4, y: H - 2, class: "axis", "text-anchor": "end"}, "now"),
      svg("path", {d, class: "series"}));
    const last = shown.length ? value(shown[shown.length - 1]) : null;
    return {peak: shown.length ? Math.max(...shown.map(value)) : 0, last};
  }

  async function refreshChart() {
    let data;
    try { data = await api("/api/metrics"); } catch (e) { return; }
    const quiet = (p) => p.t < data.now - 2 * data.interval;
    // the last `window` seconds, or since the oldest sample of a server started more recently (a minute at least)
    const oldest = data.points.length ? data.now - (data.points[0].t - data.points[0].dt) : 0;
    const span = Math.min(data.window, Math.max(60, oldest));
    const credits = draw("chart-credits", data.points, (p) => p.credits_per_s, data.now, span, "/s");
    const commit = draw("chart-commit", data.points, (p) => p.commit_ms, data.now, span, "ms");
    const lastPoint = data.points[data.points.length - 1];
    const nowRate = lastPoint && !quiet(lastPoint) ? lastPoint.credits_per_s : 0;
    $("chart-credits-caption").textContent =
      `Credits per second since ${ago(span)}: now ${nowRate}, peak ${credits.peak}`;
    $("chart-commit-caption").textContent = commit.last === null
      ? `Mean commit time (ms): no commit since ${ago(span)}`
      : `Mean commit time (ms) since ${ago(span)}: latest ${commit.last}, peak ${commit.peak}`;
  }
})();
