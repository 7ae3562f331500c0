// syncledger back office: plain JavaScript, no build step, no third-party code. The token is kept in this tab's
// sessionStorage (a reload keeps the session; logging out, a 401 or closing the tab ends it), never in the URL or
// a cookie. Money stays exact decimal text: it is formatted as text and never becomes a JS number.
"use strict";
(() => {
  const TAIL_ROWS = 200;      // events kept in the tail
  const TAIL_PRELOAD = 50;    // events replayed into the tail at login
  const PAGE = 100;           // accounts per page
  const ROUNDS_PAGE = 50;     // rounds per page
  const HISTORY_PAGE = 25;    // finance records per page
  const ROUND_PAGE = 20;      // accounts' rounds of one game id per page
  const TOKEN_KEY = "syncledger.token";
  const COMMANDS = {6: "BalanceIn", 7: "CreditIn", 8: "BalanceOut", 9: "CreditOut"};
  const KINDS = {0: "", 1: " (update)", 2: " (delete)"};
  const STATES = {3: "closed", 6: "deleted"};
  // ISO 4217 currencies whose minor unit is not 2 decimals; any other code is shown with 2.
  const DECIMALS = {BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0,
                    UYI: 0, VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0, BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3,
                    OMR: 3, TND: 3, CLF: 4, UYW: 4};
  // Money fields arrive as JSON numbers: quoted before parsing, so their digits are kept as they are.
  const MONEY = /"(amount|balance|credit|profit|delta|ggr|bets|wins|cancelled)":(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  const MINUTE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/;  // a datetime-local value, read as UTC

  const state = {
    token: null, cfg: null, ws: null, lastSeq: null, backoff: 250, reconnects: 0, resumedFrom: null, gaps: 0,
    accounts: new Map(), query: "", nextFromLogin: null, paused: false, held: [], timers: [], retry: null,
    detail: null, verifyRunning: false, rounds: null, currency: new Map(), looking: new Set(),
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

  // ---- money: the server's decimal text with the currency's decimals, by moving digits (never arithmetic)

  // "6331.0" EUR -> "6331.00"; "5.0" JPY -> "5"; "100.000001" EUR -> "100.000001" (digits beyond the currency's
  // are shown, never rounded away: the ledger keeps 6).
  function money(text, currency) {
    if (text === null || text === undefined) return "";
    const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(String(text));
    if (!m) return String(text);
    const places = Object.hasOwn(DECIMALS, currency || "") ? DECIMALS[currency] : 2;
    const fraction = (m[3] || "").replace(/0+$/, "").padEnd(places, "0");
    return m[1] + m[2] + (fraction ? "." + fraction : "");
  }
  function learn(login, currency) { if (currency) state.currency.set(Number(login), currency); }

  // ---- small DOM helpers

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    return td;
  }
  function moneyCell(text, currency, className) {
    const td = cell(money(text, currency), className ? "num " + className : "num");
    td.dataset.money = text;
    return td;
  }
  // A link to a view. A row's first link is its one Tab stop (``stop``); the others are reached with the arrows.
  function linkCell(text, label, target, stop = true) {
    const td = document.createElement("td");
    const a = document.createElement("a");
    a.href = target;
    a.textContent = String(text);
    a.setAttribute("aria-label", label);
    if (!stop) a.tabIndex = -1;
    td.append(a);
    return td;
  }
  function row(...cells) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }
  function utc(seconds) {
    return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
  }
  function command(cmd, type) { return (COMMANDS[cmd] || `cmd ${cmd}`) + (KINDS[type] || ""); }
  function say(text) { $("message").textContent = text; }
  function options(select, pairs) {
    select.replaceChildren(...pairs.map(([value, text]) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = text;
      return option;
    }));
  }

  // ---- links: each view is a URL hash (#history?login=…), so a reload, a shared link and Back show it again

  function href(view, params = {}) {
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
    const text = query.toString();
    return "#" + view + (text ? "?" + text : "");
  }
  function go(view, params) {
    const hash = href(view, params);
    if (location.hash === hash) route(); else location.hash = hash;  // (a new history entry: Back returns here)
  }
  const accountLink = (login) => href("history", {login});
  const orderLink = (order) => href("order", {order});
  const roundLink = (provider, gameId, login) => href("round", {provider, game_id: gameId, login});

  function route() {
    if (!state.token) return;
    const hash = location.hash.slice(1);
    const cut = hash.indexOf("?");
    const view = cut < 0 ? hash : hash.slice(0, cut);
    const show = {history: showHistory, records: showRecords, order: showOrder, round: showRound, rounds: showRounds,
                  day: showDay}[view];
    if (show) show(Object.fromEntries(new URLSearchParams(cut < 0 ? "" : hash.slice(cut + 1))));
  }
  window.addEventListener("hashchange", route);

  // The section links and the skip link move the focus there (the hash stays the view's); a link to the view
  // shown shows it again (from its first page).
  document.addEventListener("click", (event) => {
    const a = event.target.closest("a[href^='#']");
    if (!a || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (a.dataset.section) {
      event.preventDefault();
      const target = $(a.dataset.section);
      if (!target.hidden) target.focus();
    } else if (a.getAttribute("href") === location.hash) {
      event.preventDefault();
      route();
    }
  });

  // In a table, ↑ ↓ move to the next or previous shown row's link, ← → between the links of a row.
  function arrowKeys(table) {
    table.addEventListener("keydown", (event) => {
      const link = event.target.closest("a");
      if (!link || !["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight"].includes(event.key)) return;
      const tr = link.closest("tr");
      const links = [...tr.querySelectorAll("a")];
      const at = links.indexOf(link);
      let target = null;
      if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
        target = links[at + (event.key === "ArrowRight" ? 1 : -1)];
      } else {
        let next = tr;
        do { next = event.key === "ArrowDown" ? next.nextElementSibling : next.previousElementSibling; }
        while (next && (next.hidden || !next.querySelector("a")));
        if (next) { const theirs = next.querySelectorAll("a"); target = theirs[Math.min(at, theirs.length - 1)]; }
      }
      if (target) { event.preventDefault(); target.focus(); }
    });
  }
  for (const id of ["accounts", "tail", "detail", "rounds", "day-totals"]) arrowKeys($(id));

  // ---- CSV of what a table shows: its header and its rows not filtered out, each cell as shown (money exact)

  function csvField(text) {
    let value = String(text);
    // a text a spreadsheet would run as a formula is kept as text; a signed amount stays a number
    if (/^[=+\-@\t\r]/.test(value) && !/^-?\d+(\.\d+)?$/.test(value)) value = "'" + value;
    return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
  }
  function downloadCsv(table, name) {
    const lines = [[...table.tHead.rows[0].cells].map((th) => th.textContent)];
    for (const tr of table.tBodies[0].rows) if (!tr.hidden) lines.push([...tr.cells].map((td) => td.textContent));
    const text = lines.map((line) => line.map(csvField).join(",")).join("\r\n") + "\r\n";
    const url = URL.createObjectURL(new Blob([text], {type: "text/csv;charset=utf-8"}));
    const a = document.createElement("a");
    a.href = url;
    a.download = name.replace(/[^\w.-]+/g, "_");
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
  $("accounts-csv").addEventListener("click", () => downloadCsv($("accounts"), "accounts.csv"));
  $("tail-csv").addEventListener("click", () => downloadCsv($("tail"), "live-events.csv"));
  $("detail-csv").addEventListener("click", () => downloadCsv($("detail"), state.detail ? state.detail.csv : "view.csv"));
  $("day-csv").addEventListener("click", () => downloadCsv($("day-totals"), `day-totals-${$("day-input").value}.csv`));
  $("rounds-csv").addEventListener("click", () =>
    downloadCsv($("rounds"), `rounds-${state.rounds ? state.rounds.query.provider : "none"}.csv`));

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
    sessionStorage.setItem(TOKEN_KEY, token);
    say("");
    for (const id of ["main", "logout", "whoami", "sections"]) $(id).hidden = false;
    $("login").hidden = true;
    $("whoami").textContent = `Manager ${state.cfg.login} (${state.cfg.session})`;
    const admin = state.cfg.session === "ADMIN";
    $("verify").disabled = !admin;
    $("verify-note").textContent = admin ? "" : "Running a verify needs an ADMIN session.";
    const head = await refreshHead();
    await loadAccounts(true);
    await loadDayTotals().catch((e) => say(`Day totals: ${e.message}`));
    state.lastSeq = Math.max(0, head.seq - TAIL_PRELOAD);
    connect();
    refreshChart();
    state.timers.push(setInterval(() => refreshHead().catch(() => {}), 5000), setInterval(refreshChart, 2000));
    $("main").focus();
    route();
  }

  function stop() {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    state.timers.forEach(clearInterval);
    state.timers = [];
    clearTimeout(state.retry);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "logged out");
    Object.assign(state, {cfg: null, lastSeq: null, reconnects: 0, resumedFrom: null, gaps: 0, held: [],
                          detail: null, rounds: null, backoff: 250});
    state.accounts.clear();
    state.currency.clear();
    state.looking.clear();
    for (const id of ["accounts", "tail", "detail", "day-totals", "rounds"]) $(id).tBodies[0].replaceChildren();
    for (const id of ["rounds-more", "detail", "detail-csv", "older", "newer", "main", "logout", "whoami", "sections"]) {
      $(id).hidden = true;
    }
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
    const tr = row(linkCell(account.login, `History of account ${account.login}`, accountLink(account.login)),
                   cell(account.name), cell(account.currency), moneyCell(account.balance, account.currency, "balance"),
                   moneyCell(account.credit, account.currency, "credit"));
    tr.dataset.login = account.login;
    return tr;
  }

  async function loadAccounts(fresh) {
    const from = fresh ? 0 : state.nextFromLogin;
    const params = new URLSearchParams({q: state.query, from_login: from, limit: PAGE});
    const data = await api("/api/accounts?" + params);
    const body = $("accounts").tBodies[0];
    if (fresh) { body.replaceChildren(); state.accounts.clear(); }
    for (const account of data.accounts) {
      account.seq = data.seq;  // events up to this seq are already in these totals
      state.accounts.set(account.login, account);
      learn(account.login, account.currency);
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

  // An account an event names that the page has not read (once a session): its currency, for the tail's
  // amounts, and its row in the list if it matches the search and falls in the loaded pages.
  async function lookUp(login) {
    if (state.looking.has(login)) return;
    state.looking.add(login);
    const data = await api("/api/accounts?" + new URLSearchParams({from_login: login, limit: 1}));
    const account = data.accounts[0];
    if (!account || account.login !== login) return;
    learn(login, account.currency);
    for (const td of $("tail").querySelectorAll(`tr[data-login="${login}"] td.amount`)) {
      td.textContent = money(td.dataset.money, account.currency);
    }
    if (state.accounts.has(login) || !matches(account)) return;
    if (state.nextFromLogin !== null && login >= state.nextFromLogin) return;
    account.seq = data.seq;
    state.accounts.set(login, account);
    const body = $("accounts").tBodies[0];
    const after = [...body.rows].find((tr) => Number(tr.dataset.login) > login);
    body.insertBefore(accountRow(account), after || null);
    $("accounts-note").textContent = "";
  }

  function applyToAccount(seq, data) {
    const account = state.accounts.get(data.login);
    if (!account) {
      lookUp(data.login).catch(() => state.looking.delete(data.login));
      return;
    }
    if (seq <= account.seq || data.balance === undefined) return;
    account.seq = seq;
    account.balance = data.balance;
    account.credit = data.credit;
    const tr = $("accounts").querySelector(`tr[data-login="${data.login}"]`);
    if (!tr) return;
    for (const name of ["balance", "credit"]) {
      const td = tr.querySelector("." + name);
      td.dataset.money = data[name];
      td.textContent = money(data[name], account.currency);
    }
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
    const tr = row(cell(message.seq, "num seq"), cell(utc(d.close_time || d.open_time)),
                   linkCell(d.order, `Versions of order ${d.order}`, orderLink(d.order)),
                   linkCell(d.login, `History of account ${d.login}`, accountLink(d.login), false),
                   cell(command(d.cmd, message.type)), moneyCell(d.profit, state.currency.get(d.login), "amount"),
                   cell(d.comment, "comment"));
    tr.dataset.seq = message.seq;
    tr.dataset.login = d.login;
    tr.event = d;
    tr.hidden = !tailShows(d);
    const body = $("tail").tBodies[0];
    body.prepend(tr);
    while (body.rows.length > TAIL_ROWS) body.lastChild.remove();
    countTail();
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

  // The tail's filter works on the events shown (and those that come): a command, a login, a comment's text.
  options($("tail-cmd"), [["", "any"], ...Object.entries(COMMANDS)]);
  function tailShows(d) {
    const cmd = $("tail-cmd").value, login = $("tail-login").value.trim();
    const text = $("tail-text").value.trim().toLowerCase();
    return (!cmd || String(d.cmd) === cmd) && (!login || String(d.login) === login) &&
      (!text || String(d.comment || "").toLowerCase().includes(text));
  }
  function countTail() {
    const rows = [...$("tail").tBodies[0].rows];
    const shown = rows.filter((tr) => !tr.hidden).length;
    $("tail-shown").textContent = shown === rows.length ? "" : `Showing ${shown} of the ${rows.length} newest events.`;
  }
  function filterTail() {
    for (const tr of $("tail").tBodies[0].rows) tr.hidden = !tailShows(tr.event);
    countTail();
  }
  $("tail-filter").addEventListener("input", filterTail);
  $("tail-filter").addEventListener("submit", (event) => event.preventDefault());

  // ---- the detail table: records (an account's or the ledger's, filtered), an order's versions, a round

  function showTable(caption, columns, rows, csv) {
    $("detail-caption").textContent = caption;
    const head = document.createElement("tr");
    for (const [title, className] of columns) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = title;
      if (className) th.className = className;
      head.append(th);
    }
    $("detail").tHead.replaceChildren(head);
    $("detail").tBodies[0].replaceChildren(...rows);
    $("detail").hidden = false;
    $("detail-csv").hidden = false;
    state.detail.csv = csv;
    $("detail-title").focus();
  }

  // Paging: ``page(cursor)`` shows a page; Older goes on from its ``next``, Newer back to the one before.
  function paged(page, labels) {
    state.detail = {page, cursor: null, next: null, stack: [], labels};
    return page(null);
  }
  function pagingShown(cursor, next) {
    const d = state.detail;
    d.cursor = cursor;
    d.next = next;
    [$("older").textContent, $("newer").textContent] = d.labels;
    $("older").hidden = next === null;
    $("newer").hidden = d.stack.length === 0;
  }
  $("older").addEventListener("click", () => {
    const d = state.detail;
    d.stack.push(d.cursor);
    d.page(d.next);
  });
  $("newer").addEventListener("click", () => {
    const d = state.detail;
    d.page(d.stack.pop() ?? null);
  });

  options($("records-cmd"), [["", "any"], ...Object.values(COMMANDS).map((name) => [name, name])]);
  const FILTERS = [["login", "records-login"], ["cmd", "records-cmd"], ["from", "records-from"], ["to", "records-to"],
                   ["ext_id", "records-ext"], ["txid", "records-txid"]];

  // The API's query of a view's filters (from and to: a datetime-local text, read as UTC), or why it is wrong.
  function recordQuery(p) {
    const query = {};
    if (p.login && !/^\d{1,18}$/.test(p.login)) throw new Error("a login is a number");
    if (p.login) query.login = p.login;
    if (p.cmd) query.cmd = p.cmd;
    for (const name of ["from", "to"]) {
      if (!p[name]) continue;
      if (!MINUTE.test(p[name])) throw new Error(`${name} must be a date and time (YYYY-MM-DDTHH:MM, UTC)`);
      const seconds = Date.parse(p[name] + (p[name].length === 16 ? ":00" : "") + "Z") / 1000;
      if (!Number.isInteger(seconds) || seconds < 0) throw new Error(`${name} is not a time this ledger has`);
      query[name] = String(seconds);
    }
    if (query.from && query.to && Number(query.to) <= Number(query.from)) throw new Error("Until must be after From");
    for (const name of ["ext_id", "txid"]) if (p[name]) query[name] = p[name];
    return query;
  }
  function filterText(p) {
    const parts = [];
    if (p.cmd) parts.push(p.cmd);
    if (p.from) parts.push(`from ${p.from.replace("T", " ")} UTC`);
    if (p.to) parts.push(`until ${p.to.replace("T", " ")} UTC`);
    if (p.ext_id) parts.push(`extID ${JSON.stringify(p.ext_id)}`);
    if (p.txid) parts.push(`wallet transaction ${JSON.stringify(p.txid)}`);
    return parts.length ? " · " + parts.join(", ") : "";
  }

  function showHistory(p) { return showRecords(p, true); }

  async function showRecords(p, history = false) {
    for (const [name, id] of FILTERS) $(id).value = p[name] || "";
    let query;
    try {
      if (history && !p.login) throw new Error("an account's history needs its login");
      query = recordQuery(p);
    } catch (e) { say(`Records: ${e.message}.`); return; }
    say("");
    await paged((before) => recordsPage(p, query, history, before), ["Older records", "Newer records"]);
  }

  async function recordsPage(p, query, history, before) {
    let data;
    try {
      data = await api((history ? "/api/history?" : "/api/records?") +
        new URLSearchParams({...query, limit: HISTORY_PAGE, ...(before ? {before} : {})}));
    } catch (e) { say(`Records: ${e.message}`); return; }
    for (const r of data.records) learn(r.login, r.currency);
    const rows = data.records.map((r) => row(
      cell(r.id, "num"), linkCell(r.order, `Versions of order ${r.order}`, orderLink(r.order)), cell(r.version, "num"),
      ...(history ? [] : [linkCell(r.login, `History of account ${r.login}`, accountLink(r.login), false)]),
      cell(COMMANDS[r.cmd] || r.cmd), cell(STATES[r.state] || r.state), moneyCell(r.delta, r.currency),
      moneyCell(r.balance, r.currency), moneyCell(r.credit, r.currency), cell(r.currency), cell(utc(r.created)),
      cell(r.ext_id, "mono"), roundCell(r), cell(r.comment, "comment")));
    let caption, csv;
    if (history) {
      const a = data.account;
      caption = `History of account ${a.login} (${a.name}): balance ${money(a.balance, a.currency)}, credit ` +
        `${money(a.credit, a.currency)} ${a.currency}${filterText(p)}`;
      csv = `history-${a.login}.csv`;
    } else {
      caption = (p.login ? `Records of account ${p.login}` : "Records of the ledger") + `, newest first${filterText(p)}`;
      csv = "records.csv";
    }
    showTable(caption, [["Row", "num"], ["Order"], ["Version", "num"], ...(history ? [] : [["Login"]]), ["Command"],
                        ["State"], ["Change", "num"], ["Balance after", "num"], ["Credit after", "num"], ["Currency"],
                        ["Recorded (UTC)"], ["extID / transaction"], ["Round"], ["Comment"]], rows, csv);
    pagingShown(before, data.older);
    $("detail-note").textContent = rows.length ? "" : (data.older === null ? "No record matches." :
      "None in the records looked at so far: look further with Older records.");
  }

  function roundCell(r) {
    if (!r.round) return cell("");
    return linkCell(r.round, `Round ${r.round} of ${r.provider}`, roundLink(r.provider, r.round, r.login), false);
  }

  async function showOrder(p) {
    const order = String(p.order || "");
    if (!/^\d{1,18}$/.test(order)) { say("An order is a number."); return; }
    $("order-input").value = order;
    let data;
    try {
      data = await api("/api/order?" + new URLSearchParams({order}));
    } catch (e) { say(`Order ${order}: ${e.message}`); return; }
    say("");
    state.detail = {stack: [], labels: ["", ""]};
    pagingShown(null, null);
    const rows = data.versions.map((v) => row(
      cell(v.version, "num"), linkCell(v.login, `History of account ${v.login}`, accountLink(v.login)),
      cell(COMMANDS[v.cmd] || v.cmd), cell(STATES[v.state] || v.state), moneyCell(v.amount, v.currency),
      moneyCell(v.delta, v.currency), moneyCell(v.balance, v.currency), moneyCell(v.credit, v.currency),
      cell(v.currency), cell(utc(v.created)), cell(v.ext_id, "mono"), roundCell(v), cell(v.comment, "comment"),
      cell(v.hash.slice(0, 16) + "…", "mono")));
    showTable(`Versions of order ${order}`, [["Version", "num"], ["Login"], ["Command"], ["State"], ["Amount", "num"],
              ["Change", "num"], ["Balance after", "num"], ["Credit after", "num"], ["Currency"], ["Recorded (UTC)"],
              ["extID / transaction"], ["Round"], ["Comment"], ["Hash"]], rows, `order-${order}.csv`);
    $("detail-note").textContent = "";
  }

  $("records-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const p = {};
    for (const [name, id] of FILTERS) p[name] = name === "ext_id" || name === "txid" ? $(id).value : $(id).value.trim();
    try { recordQuery(p); } catch (e) { say(`Records: ${e.message}.`); return; }
    say("");
    go(p.login ? "history" : "records", p);
  });

  $("order-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const order = $("order-input").value.trim();
    if (!/^\d{1,18}$/.test(order)) { say("An order is a number."); return; }
    say("");
    go("order", {order});
  });

  // ---- a round by its game id: every call of it (accepted or refused), one account's or each account's

  async function showRound(p) {
    if (!p.provider || !p.game_id) { say("A round needs its provider and its game id."); return; }
    if (p.login && !/^\d{1,18}$/.test(p.login)) { say("A login is a number."); return; }
    $("round-provider").value = p.provider;
    $("round-game").value = p.game_id;
    $("round-login").value = p.login || "";
    say("");
    await paged((after) => roundPage(p, after), ["More accounts' rounds", "The accounts before"]);
  }

  async function roundPage(p, after) {
    let data;
    try {
      data = await api("/api/round?" + new URLSearchParams({provider: p.provider, game_id: p.game_id,
        ...(p.login ? {login: p.login} : {}), ...(after !== null ? {after} : {}), limit: ROUND_PAGE}));
    } catch (e) { say(`Round ${p.game_id}: ${e.message}`); return; }
    const rows = [], sums = [];
    for (const r of data.rounds) {
      learn(r.login, r.currency);
      const stateText = r.state || "no debit accepted";
      sums.push(`account ${r.login}: ${stateText}, bets ${money(r.bets, r.currency)}, wins ${money(r.wins, r.currency)}, ` +
                `cancelled ${money(r.cancelled, r.currency)} ${r.currency}`);
      for (const c of r.calls) {
        rows.push(row(linkCell(r.login, `History of account ${r.login}`, accountLink(r.login)), cell(stateText, "state"),
                      cell(c.type), cell(c.txid, "mono"), cell(c.ref_id, "mono"), moneyCell(c.amount, r.currency),
                      cell(r.currency), cell(c.status, c.status === "OK" ? "" : "failed"), cell(utc(c.time)),
                      c.order ? linkCell(c.order, `Versions of order ${c.order}`, orderLink(c.order), false) : cell("")));
      }
    }
    showTable(`Round ${data.game_id} of provider ${data.provider}${p.login ? `, account ${p.login}` : ""}`,
              [["Login"], ["Round state"], ["Call"], ["Transaction id"], ["Ref id"], ["Amount", "num"], ["Currency"],
               ["Status"], ["Time (UTC)"], ["Order"]], rows, `round-${data.provider}-${data.game_id}.csv`);
    pagingShown(after, data.next);
    $("detail-note").textContent = sums.length ? sums.join("; ") + "." : (data.next === null ?
      "No call of this round was recorded." : "None in the accounts looked at so far: look further.");
  }

  $("round-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const p = {provider: $("round-provider").value, game_id: $("round-game").value, login: $("round-login").value.trim()};
    if (!p.provider || !p.game_id) { say("A round needs its provider and its game id."); return; }
    if (p.login && !/^\d{1,18}$/.test(p.login)) { say("A login is a number."); return; }
    say("");
    go("round", p);
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
    const count = (x, currency) => `${money(x.amount, currency)} (${x.count})`;
    // (a count named "cancelled" arrives quoted, as money does: added as the small whole number it is)
    const closed = (r) => Number(r.settled) + Number(r.cancelled);
    for (const p of data.providers) {
      const name = () => linkCell(p.provider, `Rounds of ${p.provider}`, href("rounds", {provider: p.provider}));
      if (!p.currencies.length) rows.push(row(name(), cell("—"), ...Array.from({length: 8}, () => cell("", "num"))));
      for (const t of p.currencies) {
        const c = t.currency;
        const tr = row(name(), cell(c), cell(count(t.bets, c), "num bets"), cell(count(t.wins, c), "num wins"),
                       cell(count(t.cancels, c), "num"), moneyCell(t.ggr, c, "ggr"),
                       cell(count(t.promo_payouts, c), "num"), cell(t.rounds.opened, "num"),
                       cell(closed(t.rounds), "num"), cell(t.rounds.open_now, "num open-now"));
        tr.dataset.provider = p.provider;
        rows.push(tr);
      }
    }
    $("day-totals").tBodies[0].replaceChildren(...rows);
    $("day-input").value = data.day;
    $("day-caption").textContent = `${data.day} (UTC): each provider's totals per currency, amount (count)`;
    $("day-note").textContent = `GGR = bets − cancelled bets − wins; promo payouts are shown apart and are not in it. ` +
      "Rounds: opened that day, closed (settled or cancelled) by a move of that day, and open now, as they stand now.";
    for (const id of ["rounds-provider", "round-provider"]) {
      const select = $(id), chosen = select.value;
      options(select, data.providers.map((p) => [p.provider, p.provider]));
      if (chosen && data.providers.some((p) => p.provider === chosen)) select.value = chosen;
    }
  }

  function showDay(p) {
    if (p.day && !/^\d{4}-\d{2}-\d{2}$/.test(p.day)) { say("A day is YYYY-MM-DD."); return; }
    $("day-input").value = p.day || "";
    say("");
    loadDayTotals().then(() => $("providers-panel").focus(), (e) => say(`Day totals: ${e.message}`));
  }

  $("day-form").addEventListener("submit", (event) => {
    event.preventDefault();
    go("day", {day: $("day-input").value});
  });

  function movesText(moves, currency) {
    return moves.map((m) => `${m.type} ${m.txid} ${money(m.amount, currency)}`).join("; ");
  }

  function showRounds(p) {
    if (p.older && !/^\d{1,9}$/.test(p.older)) { say("Opened at least so many minutes ago: a whole number."); return; }
    $("rounds-provider").value = p.provider || "";
    $("rounds-open").checked = p.open === "1";
    $("rounds-game").value = p.game_id || "";
    $("rounds-older").value = p.older || "";
    if (!$("rounds-provider").value) { say(`No provider ${p.provider || ""}.`); return; }
    say("");
    loadRounds(true).then(() => $("rounds-panel").focus(), (e) => say(`Rounds: ${e.message}`));
  }

  async function loadRounds(fresh) {
    if (fresh) {
      const query = {provider: $("rounds-provider").value, limit: ROUNDS_PAGE};
      const older = $("rounds-older").value.trim();
      if ($("rounds-open").checked) query.open = "1";
      if ($("rounds-game").value.trim()) query.game_id = $("rounds-game").value.trim();
      if (older) query.older_than = String(Number(older) * 60);
      state.rounds = {query, after: null, shown: 0};
    }
    const r = state.rounds;
    const data = await api("/api/rounds?" + new URLSearchParams({...r.query, ...(r.after ? {after: r.after} : {})}));
    const body = $("rounds").tBodies[0];
    if (fresh) body.replaceChildren();
    for (const round of data.rounds) {
      learn(round.login, round.currency);
      const tr = row(linkCell(round.game_id, `Round ${round.game_id} of account ${round.login}`,
                              roundLink(data.provider, round.game_id, round.login)),
                     linkCell(round.login, `History of account ${round.login}`, accountLink(round.login), false),
                     cell(round.state, "state"), cell(utc(round.opened)), cell(utc(round.updated)),
                     moneyCell(round.bets, round.currency), moneyCell(round.wins, round.currency),
                     moneyCell(round.cancelled, round.currency), cell(movesText(round.moves, round.currency), "comment"));
      tr.dataset.round = round.game_id;
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
    const older = $("rounds-older").value.trim();
    if (!$("rounds-provider").value) { say("Choose a provider (show a day's totals first)."); return; }
    if (older && !/^\d{1,9}$/.test(older)) { say("Opened at least so many minutes ago: a whole number."); return; }
    say("");
    go("rounds", {provider: $("rounds-provider").value, open: $("rounds-open").checked ? "1" : "",
                  game_id: $("rounds-game").value.trim(), older});
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

  // ---- a reload of this tab: its session goes on where it was (the view in the URL)

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    $("login-error").textContent = "Resuming this tab's session…";
    start(saved).then(() => { $("login-error").textContent = ""; }, (e) => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("login-error").textContent = `Your session ended (${e.code || "ERROR"}): ${e.message}. Log in again.`;
    });
  }
})();
