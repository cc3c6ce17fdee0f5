-- Headless Neovim driver for tests/e2e/test_nvim_plugin.py: the editors/nvim plugin against
-- the real server and the tiny model, with real insert-mode typing.
--
-- Run as: nvim --headless --clean -u tests/e2e/nvim/plugin_init.lua FILE.py
-- Environment (set by the test):
--   SLM_NVIM_OUT         where the JSON report is written
--   SLM_NVIM_SERVER_CMD  the server command, a JSON array
--   SLM_NVIM_PLUGIN_DIR  editors/nvim (prepended to 'runtimepath')
--   SLM_NVIM_LINE        1-based line to type at (the end of `    return `)
--   SLM_NVIM_SCENARIO    main (default): everything above, in one session;
--                        crash: the server is killed (SIGKILL) and the plugin restarts it;
--                        crash_loop: the server command exits at once, again and again: the
--                        plugin backs off, gives up with a message, and :SlmRestart tries again
--
-- Keys go in with nvim_input() and the driver waits in a coroutine (timers, not vim.wait), so
-- Neovim's own insert-mode loop handles them: mappings, TextChangedI/CursorMovedI, redraws.
-- The driver wraps require("slm.client").request to record every inlineCompletion answer the
-- plugin receives (the asserts compare the ghost text with the server's insertText) and, for
-- the cancellation step, to hand one answer to the plugin late.
-- Every failure writes {"ok": false, "error": ...} and exits with :cquit 1.

local driver = dofile(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)) .. "/driver.lua")
local SCENARIO = os.getenv("SLM_NVIM_SCENARIO") or "main"
local api = vim.api
local report = { ok = false, notifications = {}, all_notifications = {} }

-- Long enough that the driver's own steps never straddle it by accident on a busy machine.
local DEBOUNCE_MS = 200
-- How long "nothing happens" is watched for: the debounce twice, plus slack.
local QUIET_MS = 2 * DEBOUNCE_MS + 200

local d = driver.new(report, "slm nvim plugin e2e")
-- sleep: only for "nothing happens during this time" checks; everything else waits for a condition.
local write_report, fail, sleep, wait_for = d.write_report, d.fail, d.sleep, d.wait_for
local getenv = driver.getenv
-- Capture what the plugin tells the user (report.notifications is emptied between steps).
d.capture_notifications({ "notifications", "all_notifications" })

---------------------------------------------------------------------------------------------
-- A spy on the plugin's requests

---@type {id: integer|nil, params: table, err: any, result: any, answered: boolean, held: boolean}[]
local inline_log = {}
local accepted_log = {} -- the slm/accepted notifications the plugin sent
local cancelled_ids = {}
local hold_next = false -- hold the next inlineCompletion answer until release_held()
local held = {}

local function spy_on(slm_client)
  local real_request, real_cancel, real_notify = slm_client.request, slm_client.cancel, slm_client.notify
  slm_client.notify = function(c, method, params)
    if method == "slm/accepted" then
      accepted_log[#accepted_log + 1] = vim.deepcopy(params)
    end
    return real_notify(c, method, params)
  end
  slm_client.request = function(c, method, params, handler, bufnr)
    if method ~= "textDocument/inlineCompletion" then
      return real_request(c, method, params, handler, bufnr)
    end
    local entry = { params = vim.deepcopy(params), answered = false, held = hold_next }
    hold_next = false
    entry.id = real_request(c, method, params, function(err, result, ctx, cfg)
      entry.answered, entry.err, entry.result = true, err or vim.NIL, result or vim.NIL
      if entry.held then
        held[#held + 1] = function()
          handler(err, result, ctx, cfg)
        end
      else
        handler(err, result, ctx, cfg)
      end
    end, bufnr)
    inline_log[#inline_log + 1] = entry
    return entry.id
  end
  slm_client.cancel = function(c, id)
    cancelled_ids[#cancelled_ids + 1] = id
    return real_cancel(c, id)
  end
end

local function release_held()
  local pending = held
  held = {}
  for _, deliver in ipairs(pending) do
    deliver()
  end
end

---------------------------------------------------------------------------------------------
-- Set-up, before VimEnter like a user's init.lua: the plugin on the runtimepath, filetype
-- detection (--clean leaves it off), then setup(): an invalid option is refused (and nothing
-- starts), then the real one, then a second call is ignored. An error here still ends the
-- session (a failing -u script would otherwise leave headless Neovim waiting forever).

local slm, suggestion, status, slm_client

local function configure()
  vim.opt.rtp:prepend(getenv("SLM_NVIM_PLUGIN_DIR"))
  vim.cmd("filetype on")
  local cmd = vim.json.decode(getenv("SLM_NVIM_SERVER_CMD"))
  slm = require("slm")
  slm_client = require("slm.client")
  spy_on(slm_client)
  suggestion = require("slm.suggestion")
  status = require("slm.status")
  -- Every state the status line went through, for the restart scenarios.
  report.states = {}
  api.nvim_create_autocmd("User", {
    pattern = "SlmStatus",
    callback = function(args)
      local data = args.data or {}
      table.insert(report.states, { state = data.state or vim.NIL, detail = data.detail or vim.NIL })
    end,
  })
  if SCENARIO == "crash" then
    report.setup = slm.setup({
      cmd = cmd,
      debounce_ms = DEBOUNCE_MS,
      settings = { completion = { maxTokens = 4, enabledLanguages = { "python" } } },
    })
    return
  elseif SCENARIO == "crash_loop" then
    -- Short delays so that the whole series runs in a second: 50, 100, 200 ms, then no restart.
    report.setup = slm.setup({
      cmd = cmd,
      restart = { initial_delay_ms = 50, max_crashes = 3 },
    })
    return
  end
  report.invalid_setups = d.invalid_setups({
    { debounce_ms = "soon" },
    { modle = "typo.gguf" },
    { keymaps = { accept = 3 } },
    { cmd = {} },
    { restart = { max_crashes = -1 } },
    { restart = { delay_ms = 100 } },
  })
  report.setup = slm.setup({
    cmd = cmd,
    debounce_ms = DEBOUNCE_MS,
    -- The tiny model writes a few identifier-like words: keep each answer short.
    settings = { completion = { maxTokens = 4, enabledLanguages = { "python" } } },
  })
  report.setup_again = slm.setup({})
  report.notifications = {}
end

d.configure(configure)

local function escape(keys)
  return (keys:gsub("<", "<lt>"))
end

local function mode()
  return api.nvim_get_mode().mode
end

local function cursor()
  local c = api.nvim_win_get_cursor(0)
  return { c[1], c[2] }
end

local function marks()
  local out = {}
  for _, m in ipairs(api.nvim_buf_get_extmarks(0, suggestion.ns, 0, -1, { details = true })) do
    local d = m[4]
    local virt_lines = {}
    for _, chunks in ipairs(d.virt_lines or {}) do
      virt_lines[#virt_lines + 1] = chunks[1] and chunks[1][1] or ""
    end
    out[#out + 1] = {
      row = m[2],
      col = m[3],
      text = d.virt_text and d.virt_text[1] and d.virt_text[1][1] or vim.NIL,
      hl = d.virt_text and d.virt_text[1] and d.virt_text[1][2] or vim.NIL,
      pos = d.virt_text_pos or vim.NIL,
      virt_lines = virt_lines,
    }
  end
  return out
end

local function stats()
  return vim.deepcopy(suggestion.stats)
end

--- What the user sees: the cursor line and position, the ghost text and its extmarks.
local function state()
  return {
    line = api.nvim_get_current_line(),
    cursor = cursor(),
    ghost = suggestion.get_text() or vim.NIL,
    marks = marks(),
    stats = stats(),
    mode = mode(),
  }
end

--- The last inlineCompletion answer the plugin received: its position and first insertText.
local function last_answer()
  for i = #inline_log, 1, -1 do
    local entry = inline_log[i]
    if entry.answered then
      local items = type(entry.result) == "table" and entry.result.items or {}
      return {
        index = i,
        position = entry.params.position,
        insert_text = items[1] and items[1].insertText or vim.NIL,
      }
    end
  end
  return vim.NIL
end

-- Types `keys` (nvim_input notation) and returns state() as it was right after the plugin
-- handled the change (this autocommand is defined after the plugin's, so it runs after it):
-- whatever the debounce timer does later cannot blur what typing itself did.
local function type_and_snapshot(keys)
  local snapshot
  api.nvim_create_autocmd("TextChangedI", {
    once = true,
    callback = function()
      snapshot = state()
    end,
  })
  api.nvim_input(keys)
  return wait_for("the change from typing " .. keys, 5000, function()
    return snapshot
  end, 2)
end

--- The server's slm.status answer (waited for in the coroutine).
local function server_status(c)
  local answer
  slm_client.request(c, "workspace/executeCommand", { command = "slm.status", arguments = {} }, function(err, result)
    answer = { err = err or vim.NIL, result = result or vim.NIL }
  end)
  wait_for("slm.status", 10000, function()
    return answer
  end, 5)
  return answer.result
end

local function wait_ghost(what)
  return wait_for(what or "ghost text", 20000, function()
    return suggestion.get_text()
  end)
end

local function dismiss()
  api.nvim_input("<C-]>")
  wait_for("the ghost text to go", 5000, function()
    return not suggestion.is_visible()
  end, 2)
end

---------------------------------------------------------------------------------------------

local function main()
  local bufnr = api.nvim_get_current_buf()
  report.filetype = vim.bo.filetype
  report.version = slm.version
  report.methods = require("slm.methods")
  local hl = api.nvim_get_hl(0, { name = "SlmGhostText" })
  report.hl_link = hl.link or vim.NIL

  local client = wait_for("the server to attach", 30000, function()
    return slm_client.get(bufnr)
  end)
  report.client_name = client.name
  report.clients = #vim.lsp.get_clients({ name = "slm-lsp" })
  report.offset_encoding = client.offset_encoding
  wait_for("slm/status ready", 30000, function()
    return status.last and status.last.state == "ready"
  end)
  report.status_ready = vim.deepcopy(status.last)

  -- 1. Typing in insert mode shows ghost text at the cursor: "A" and three letters in one go
  --    (as fast typing arrives), so every key lands inside the debounce.
  api.nvim_win_set_cursor(0, { tonumber(getenv("SLM_NVIM_LINE")), 0 })
  api.nvim_input("Arad")
  wait_ghost("the first ghost text")
  report.first = state()
  report.first.answer = last_answer()
  report.first.uri = inline_log[1] and inline_log[1].params.textDocument.uri or vim.NIL
  report.buffer_uri = vim.uri_from_bufnr(bufnr)

  -- 2. Typing the ghost text's next character keeps the rest, without a new request.
  local ghost = suggestion.get_text()
  local char = vim.fn.strcharpart(ghost, 0, 1)
  report.type_through = { before = state(), char = char, skipped = vim.fn.strchars(ghost) < 2 }
  if not report.type_through.skipped then
    report.type_through.after = type_and_snapshot(escape(char))
    sleep(QUIET_MS)
    report.type_through.later = state()
  end

  -- 3. <M-w> accepts the suggestion's next word, then <Tab> the rest: the text goes into the
  --    buffer, the cursor to its end, the ghost away.
  --    Each accept sends slm/accepted (the accepted text, the cursor after it).
  ghost = wait_ghost()
  report.accept = { before = state(), word_skipped = ghost:match("^%s*[%w_]+") == ghost }
  if not report.accept.word_skipped then
    report.accept.word = type_and_snapshot("<M-w>")
    report.accept.word_notes = vim.deepcopy(accepted_log)
  end
  report.accept.status_before = server_status(client)
  accepted_log = {}
  report.accept.after = type_and_snapshot("<Tab>")
  report.accept.tab_notes = vim.deepcopy(accepted_log)

  -- 4. A new suggestion follows, computed while the accepted one was shown: no model call for
  --    it (the server answers from its cache); a character that does not match it clears it at
  --    once, and another suggestion comes after the debounce.
  wait_ghost("a suggestion after accepting")
  report.accept.status_after = server_status(client)
  report.mismatch = { before = state(), answer = last_answer() }
  local other = report.mismatch.before.ghost:sub(1, 1) == "Q" and "Z" or "Q"
  report.mismatch.typed = other
  report.mismatch.after = type_and_snapshot(other)
  wait_for("a suggestion after the mismatch", 20000, function()
    return suggestion.stats.shown > report.mismatch.after.stats.shown and suggestion.get_text()
  end)
  report.mismatch.next = state()
  report.mismatch.next_answer = last_answer()

  -- 5. <C-]> dismisses; nothing is requested until the next edit. Without ghost text <Tab>
  --    is a plain <Tab> again.
  report.dismiss = { before = state() }
  dismiss()
  report.dismiss.after = state()
  sleep(QUIET_MS)
  report.dismiss.later = state()
  report.dismiss.tab = type_and_snapshot("<Tab>")
  wait_ghost("a suggestion after the tab")
  dismiss()

  -- 6. Multi-line ghost text (virtual lines), accepted by word, by line, then whole. The tiny
  --    model writes single lines, so this text goes in through suggestion.show(), the function
  --    the answer handler calls.
  local row = cursor()[1]
  suggestion.show("alpha beta\n        gamma()\n    delta")
  report.multi = { shown = state(), row = row }
  local steps = {}
  for _, key in ipairs({ "<M-w>", "<M-j>", "<M-j>", "<M-l>" }) do
    local step = type_and_snapshot(key)
    step.key = key
    step.lines = api.nvim_buf_get_lines(0, row - 1, row + 2, false)
    steps[#steps + 1] = step
  end
  report.multi.steps = steps

  -- 7. A request still in flight when the user types again is cancelled, and its answer is
  --    not shown. The spy holds that answer back until after the typing, so the order is fixed
  --    whatever the machine's speed.
  local last = wait_ghost("a suggestion after the multi-line accept")
  dismiss()
  local cancel = { before = state() }
  hold_next = true
  api.nvim_input(last:sub(1, 1) == "(" and " " or "(")
  wait_for("a request", 5000, function()
    return suggestion.stats.requests > cancel.before.stats.requests
  end, 2)
  local old = inline_log[#inline_log]
  wait_for("the server's answer (held back)", 20000, function()
    return #held > 0
  end, 2)
  cancel.old = { id = old.id, held = old.held }
  cancel.in_flight = state()
  cancel.after_typing = type_and_snapshot("x")
  release_held()
  cancel.after_release = state()
  cancel.cancelled_ids = vim.deepcopy(cancelled_ids)
  wait_for("the suggestion for the newer text", 20000, function()
    return suggestion.stats.shown > cancel.before.stats.shown and suggestion.get_text()
  end)
  cancel.after = state()
  cancel.answer = last_answer()
  cancel.requests_seen = #inline_log
  report.cancel = cancel

  -- 8. Leaving insert mode clears the ghost text.
  api.nvim_input("<Esc>")
  wait_for("normal mode", 5000, function()
    return mode() == "n"
  end)
  report.insert_leave = { marks = marks(), visible = suggestion.is_visible() }

  -- 9. :checkhealth slm
  local ok, err = pcall(vim.cmd, "checkhealth slm")
  report.health = { ok = ok, err = ok and vim.NIL or tostring(err) }
  report.health.lines = api.nvim_buf_get_lines(0, 0, -1, false)
  vim.cmd("tabclose")

  -- 10. :SlmStatus: the last slm/status notification, then the server's slm.status answer.
  report.notifications = {}
  vim.cmd("SlmStatus")
  wait_for(":SlmStatus server line", 10000, function()
    for _, n in ipairs(report.notifications) do
      if n.msg:find("[slm] server:", 1, true) then
        return true
      end
    end
  end)
  report.slm_status = vim.deepcopy(report.notifications)

  -- 11. :SlmToggle turns requests off (typing sends nothing), and on again.
  report.notifications = {}
  vim.cmd("SlmToggle")
  local toggle = { enabled_after_first = slm.is_enabled(), before = state() }
  api.nvim_input("opri")
  wait_for("the typing", 5000, function()
    return vim.endswith(api.nvim_get_current_line(), "pri") -- after any autoindent
  end, 2)
  sleep(QUIET_MS)
  toggle.off = state()
  vim.cmd("SlmToggle")
  toggle.enabled_after_second = slm.is_enabled()
  type_and_snapshot("n")
  wait_for("a suggestion after enabling", 20000, function()
    return suggestion.get_text()
  end)
  toggle.on = state()
  toggle.messages = vim.deepcopy(report.notifications)
  report.toggle = toggle
  api.nvim_input("<Esc>")
  wait_for("normal mode", 5000, function()
    return mode() == "n"
  end)

  -- 12. :SlmLoadAdapter with a missing file: an error for the user, and the server carries on
  --     (removing the adapter, which there is none of, works).
  report.notifications_before_adapter = #report.all_notifications
  report.notifications = {}
  vim.cmd("SlmLoadAdapter " .. vim.fn.fnameescape(vim.fn.getcwd() .. "/missing-adapter.gguf"))
  wait_for("the adapter error", 10000, function()
    for _, n in ipairs(report.notifications) do
      if n.msg:find("[slm] could not load the adapter", 1, true) then
        return true
      end
    end
  end)
  report.adapter_missing = vim.deepcopy(report.notifications)
  report.notifications = {}
  vim.cmd("SlmLoadAdapter")
  wait_for("the adapter removal", 10000, function()
    return #report.notifications > 0
  end)
  report.adapter_removed = vim.deepcopy(report.notifications)

  -- Shut down; the server must exit by itself.
  report.stats = stats()
  if vim.fn.has("nvim-0.11") == 1 then
    client:stop()
  else
    client.stop()
  end
  wait_for("the server to exit", 15000, function()
    return status.last and status.last.state == "stopped"
  end)
  report.final_status = vim.deepcopy(status.last)
  report.ok = true
  write_report()
  vim.cmd("qall!")
end

---------------------------------------------------------------------------------------------
-- The restart scenarios

--- The server processes Neovim runs (its children), pids sorted.
local function server_pids()
  local pids = {}
  for _, pid in ipairs(api.nvim_get_proc_children(vim.fn.getpid())) do
    pids[#pids + 1] = pid
  end
  table.sort(pids)
  return pids
end

local function slm_messages()
  local out = {}
  for _, n in ipairs(report.all_notifications) do
    if n.msg:find("[slm]", 1, true) == 1 then
      out[#out + 1] = n
    end
  end
  return out
end

local function stop_client(client)
  if vim.fn.has("nvim-0.11") == 1 then
    client:stop()
  else
    client.stop()
  end
end

-- crash: the server is killed with SIGKILL (as the kernel does to a segfault or the OOM
-- killer); the plugin says so, shows `restarting`, starts a new server, and the buffer it was
-- attached to gets completions again. A stop that was asked for is not restarted.
local function crash()
  local bufnr = api.nvim_get_current_buf()
  local first = wait_for("the server to attach", 30000, function()
    return slm_client.get(bufnr)
  end)
  wait_for("slm/status ready", 30000, function()
    return status.last and status.last.state == "ready"
  end)
  local before = { client_id = first.id, pids = server_pids() }
  report.before = before
  if #before.pids ~= 1 then
    error("expected one server process, found " .. vim.inspect(before.pids), 0)
  end
  report.all_notifications = {}
  vim.uv.kill(before.pids[1], "sigkill")
  wait_for("the restart message", 10000, function()
    return #slm_messages() > 0
  end, 2)
  report.restart_messages = slm_messages()
  report.status_after_kill = vim.deepcopy(status.last)
  report.statusline_after_kill = status.statusline()
  local second = wait_for("a new server attached to the buffer", 30000, function()
    local c = slm_client.get(bufnr)
    return c and c.id ~= first.id and c
  end)
  wait_for("slm/status ready after the restart", 30000, function()
    return status.last and status.last.state == "ready"
  end)
  report.after = {
    client_id = second.id,
    pids = server_pids(),
    attached = vim.lsp.buf_is_attached(bufnr, second.id),
    clients = #vim.lsp.get_clients({ name = "slm-lsp" }),
  }
  -- Completions work again: typing shows the new server's suggestion.
  api.nvim_win_set_cursor(0, { tonumber(getenv("SLM_NVIM_LINE")), 0 })
  local requests = suggestion.stats.requests
  api.nvim_input("Arad")
  wait_ghost("ghost text from the restarted server")
  report.after.ghost = suggestion.get_text()
  report.after.answer = last_answer()
  report.after.requests = suggestion.stats.requests - requests
  api.nvim_input("<Esc>")
  wait_for("normal mode", 5000, function()
    return mode() == "n"
  end)
  report.after.states = vim.deepcopy(report.states)
  -- :SlmRestart on a running server: it stops (asked for: no warning) and a new one starts.
  report.all_notifications = {}
  report.states = {}
  vim.cmd("SlmRestart")
  local third = wait_for("a new server after :SlmRestart", 30000, function()
    local c = slm_client.get(bufnr)
    return c and c.id ~= second.id and c
  end)
  wait_for("slm/status ready after :SlmRestart", 30000, function()
    return status.last and status.last.state == "ready"
  end)
  report.restart_command = {
    states = vim.deepcopy(report.states),
    messages = slm_messages(),
    attached = vim.lsp.buf_is_attached(bufnr, third.id),
    pids = server_pids(),
  }
  -- A stop that was asked for: "stopped", and no restart (watched past the first delay, 0.5 s, twice).
  report.all_notifications = {}
  stop_client(third)
  wait_for("the server to exit", 15000, function()
    return status.last and status.last.state == "stopped"
  end)
  sleep(1500)
  report.after_stop = {
    status = vim.deepcopy(status.last),
    clients = #vim.lsp.get_clients({ name = "slm-lsp" }),
    pids = server_pids(),
    messages = slm_messages(),
  }
  report.ok = true
  write_report()
  vim.cmd("qall!")
end

-- crash_loop: the "server" exits with code 3 as soon as it starts. The plugin restarts it
-- after 50, 100, 200 ms, then gives up with an error; :SlmRestart starts a new series.
local function crash_loop()
  wait_for("the plugin to give up", 20000, function()
    return status.last and status.last.state == "crashed"
  end, 5)
  -- Nothing restarts it any more.
  sleep(1000)
  report.gave_up = {
    messages = slm_messages(),
    states = vim.deepcopy(report.states),
    status = vim.deepcopy(status.last),
    statusline = status.statusline(),
    clients = #vim.lsp.get_clients({ name = "slm-lsp" }),
  }
  report.all_notifications = {}
  report.states = {}
  vim.cmd("SlmRestart")
  wait_for("a restart after :SlmRestart", 10000, function()
    return #slm_messages() > 0
  end, 5)
  report.after_restart_command = { messages = slm_messages() }
  report.ok = true
  write_report()
  vim.cmd("qall!")
end

local scenarios = { main = main, crash = crash, crash_loop = crash_loop }

-- Hard stop well inside the test's subprocess timeout.
d.start(assert(scenarios[SCENARIO], "unknown SLM_NVIM_SCENARIO " .. SCENARIO), 100000, "timed out after 100 s")
